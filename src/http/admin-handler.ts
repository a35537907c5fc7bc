// The admin API: key management over HTTP, shaped like KMS's JSON protocol so AWS SDKs and curl --aws-sigv4 can call
// it. POST / with X-Amz-Target: XksAdmin.<Operation> and a JSON body with KMS's field names; SigV4 with service
// xks-admin and credentials of its own (never a key store's). The admin side of the request cycle (request-cycle.ts);
// checks, in order, each refusing before anything changes: path (404) -> method (405) -> body size (413) -> SigV4 (403)
// -> operation (400) -> JSON and body shape (400) -> the key lifecycle, whose own refusals (unknown key, wrong state)
// also come before any write to the token.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuditEntry } from '../audit/audit-record.js';
import { EXTERNAL_KEY_ID } from '../keys/key-objects.js';
import type { Logger } from '../obs/logger.js';
import { AdminError, toAdminError } from './admin-errors.js';
import { ADMIN_OPERATIONS, versionIn, type AdminServices } from './admin-operations.js';
import { ADMIN_SERVICE, ADMIN_TARGET_PREFIX, isAdminOperation } from './admin-schemas.js';
import { serve, type CycleLog, type Surface } from './request-cycle.js';
import { parseAuthorization, verifySigV4 } from './sigv4.js';

/** Admin bodies are a few fields; anything larger is not a request of this API. */
export const ADMIN_BODY_LIMIT = 16 * 1024;

const JSON_TYPES = new Set(['application/x-amz-json-1.1', 'application/x-amz-json-1.0', 'application/json']);

export interface AdminAuth {
  region: string;
  credentials: ReadonlyMap<string, string>; // access key id -> secret
}

export interface AdminHandlerOptions extends AdminAuth, AdminServices {
  logger: Logger;
  /** Appends one line per admin request to the audit trail (absent: no trail). */
  audit?: ((entry: AuditEntry) => void) | undefined;
  /** Why operations are refused for now (audit.onFailure refuse while the trail cannot be sealed), or undefined. */
  refusal?: (() => string | undefined) | undefined;
  bodyLimit?: number;
  now?: () => number;
}

/** The request's log line: one fixed shape, logged once. No field can hold a body, a secret or key material. */
interface AdminLog extends CycleLog {
  requestId: string;
  operation: string | undefined;
  keyId: string | undefined;
  accessKeyId: string | undefined;
  /** The access key id verified by the signature (accessKeyId alone may be only claimed). */
  authenticated: boolean;
  /** The key version the operation made or left current (a rotation's new version, an import's version). */
  keyVersion: number | undefined;
}

function send(res: ServerResponse, status: number, requestId: string, body: unknown, close = false): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/x-amz-json-1.1',
    'content-length': Buffer.byteLength(text),
    'x-amzn-requestid': requestId,
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(text);
}

/** One header's values (Node joins repeated ones for most names, but not for every name: count them raw). */
function headerValues(rawHeaders: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) out.push(rawHeaders[i + 1]!.trim());
  return out;
}

export function createAdminHandler(opts: AdminHandlerOptions) {
  const now = opts.now ?? Date.now;
  const bodyLimit = opts.bodyLimit ?? ADMIN_BODY_LIMIT;
  let auth: AdminAuth = { region: opts.region, credentials: opts.credentials };
  const services: AdminServices = { lifecycle: opts.lifecycle, imports: opts.imports };

  const surface: Surface<AdminAuth, AdminServices, object, AdminLog, AdminError> = {
    newLog: (req) => ({
      requestId: randomUUID(),
      operation: undefined,
      keyId: undefined,
      accessKeyId: undefined,
      authenticated: false,
      from: req.socket.remoteAddress,
      outcome: undefined,
      status: undefined,
      errorName: undefined,
      reason: undefined,
      hsmError: undefined,
      keyVersion: undefined,
      ms: undefined,
    }),
    route(req, res, path) {
      if (path !== '/') throw new AdminError('InvalidUriPathException', 'the admin API is POST / with X-Amz-Target: XksAdmin.<Operation>');
      if (req.method !== 'POST') {
        res.setHeader('allow', 'POST');
        throw new AdminError('MethodNotAllowedException', 'the admin API takes POST only');
      }
      return auth; // one set of credentials per request, even across a reload
    },
    bodyLimit,
    tooLarge: () => new AdminError('RequestEntityTooLargeException', `the request body is larger than ${bodyLimit} bytes`),
    admit({ region, credentials }, req, path, query, body, log) {
      // Authentication. The caller is told what to fix when it is not secret (unsigned, malformed, wrong scope); a
      // wrong or unknown key, an expired or mismatched signature all read the same, with the detail in the log.
      const authorization = headerValues(req.rawHeaders, 'authorization');
      if (authorization.length === 0) {
        throw new AdminError('MissingAuthenticationTokenException', `the request is not signed: sign it with SigV4, region ${region}, service ${ADMIN_SERVICE}`);
      }
      const claimed = authorization.length === 1 ? parseAuthorization(authorization[0]!) : undefined;
      if (authorization.length === 1 && !claimed) {
        throw new AdminError('IncompleteSignatureException', 'the Authorization header is not a well-formed AWS4-HMAC-SHA256 signature');
      }
      if (claimed) {
        log.accessKeyId = claimed.accessKeyId.slice(0, 128);
        if (claimed.service !== ADMIN_SERVICE || claimed.region !== region) {
          log.reason = `SigV4: credential scope ${claimed.region}/${claimed.service}`;
          throw new AdminError('InvalidSignatureException', `the credential scope must name region ${region} and service ${ADMIN_SERVICE}`);
        }
      }
      const verdict = verifySigV4(
        { method: 'POST', path, query, rawHeaders: req.rawHeaders, body },
        { region, service: ADMIN_SERVICE, secretFor: (id) => credentials.get(id), now: now() },
      );
      if (!verdict.ok) {
        log.reason = `SigV4: ${verdict.reason}`;
        throw new AdminError(
          'InvalidSignatureException',
          'the signature does not match: check the access key id, the secret, the clock, and that the request is sent as signed',
        );
      }
      log.accessKeyId = verdict.accessKeyId;
      log.authenticated = true;

      const targets = headerValues(req.rawHeaders, 'x-amz-target');
      const target = targets.length === 1 ? targets[0]! : undefined;
      const name = target?.startsWith(ADMIN_TARGET_PREFIX) ? target.slice(ADMIN_TARGET_PREFIX.length) : undefined;
      if (name === undefined || !isAdminOperation(name)) {
        throw new AdminError('UnknownOperationException', `X-Amz-Target must be ${ADMIN_TARGET_PREFIX}<Operation>, with an operation of this API`);
      }
      // Signed, or a replayed signature could be sent with another operation on the same key (DisableKey for EnableKey).
      if (!claimed?.signedHeaders.includes('x-amz-target')) {
        throw new AdminError('IncompleteSignatureException', 'X-Amz-Target must be one of the signed headers');
      }
      log.operation = name;

      let json: unknown = {};
      if (body.length > 0) {
        const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        if (!JSON_TYPES.has(type)) throw new AdminError('ValidationException', 'Content-Type must be application/x-amz-json-1.1 or application/json');
        try {
          json = JSON.parse(body.toString('utf8'));
        } catch {
          throw new AdminError('ValidationException', 'the body is not valid JSON');
        }
      }
      if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new AdminError('ValidationException', 'the body must be a JSON object');
      const keyId = (json as { KeyId?: unknown }).KeyId;
      if (typeof keyId === 'string' && EXTERNAL_KEY_ID.test(keyId)) log.keyId = keyId;
      return { name, operation: ADMIN_OPERATIONS[name], call: services, json, refusable: true };
    },
    refusal: opts.refusal,
    refused: (why) => new AdminError('DependencyTimeoutException', why),
    invalid: (message) => new AdminError('ValidationException', message),
    answer(res, result, log) {
      log.keyVersion = versionIn(result);
      send(res, 200, log.requestId, result);
    },
    toError: toAdminError,
    answerError: (res, e, log, close) => send(res, e.status, log.requestId, { __type: e.code, message: e.message }, close),
    unexpected(err, log) {
      opts.logger.error({ ...log, err: { name: (err as Error)?.name, message: (err as Error)?.message } }, 'unexpected admin failure');
    },
    finish(_req, log) {
      opts.logger.info(log, 'admin request');
      // Every admin request goes into the audit trail, refused ones too: who tried (the key id claimed) and from where.
      opts.audit?.({
        source: 'admin',
        ...(log.accessKeyId ? (log.authenticated ? { who: log.accessKeyId } : { triedAccessKeyId: log.accessKeyId }) : {}),
        ...(log.from ? { from: log.from } : {}),
        requestId: log.requestId,
        operation: log.operation ?? 'unknown',
        ...(log.keyId ? { keyId: log.keyId } : {}),
        ...(log.keyVersion !== undefined ? { keyVersion: log.keyVersion } : {}),
        outcome: log.outcome ?? 'error',
        ...(log.errorName ? { errorName: log.errorName } : {}),
      });
    },
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => serve(surface, req, res);
  return Object.assign(handler, {
    /** Swap the region and credentials (hot reload); requests in flight keep the ones they started with. */
    setAuth(next: AdminAuth) {
      auth = { region: next.region, credentials: next.credentials };
    },
  });
}
