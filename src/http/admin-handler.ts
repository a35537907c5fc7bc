// The admin API: key management over HTTP, shaped like KMS's JSON protocol so AWS SDKs and curl --aws-sigv4 can call
// it. POST / with X-Amz-Target: XksAdmin.<Operation> and a JSON body with KMS's field names; SigV4 with service
// xks-admin and credentials of its own (never a key store's). Checks, in order, each refusing before anything changes:
// path (404) -> method (405) -> body size (413) -> SigV4 (403) -> operation (400) -> JSON and body shape (400) ->
// the key lifecycle, whose own refusals (unknown key, wrong state) also come before any write to the token.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ZodType } from 'zod';
import { HsmError } from '../hsm/errors.js';
import { describeKey } from '../keys/key-description.js';
import { EXTERNAL_KEY_ID } from '../keys/key-objects.js';
import { PENDING_WINDOW_DAYS } from '../keys/key-record.js';
import type { ImportService } from '../import/import-service.js';
import { getParametersForImportResponse } from '../import/schemas.js';
import type { KeyLifecycle } from '../keys/lifecycle.js';
import type { AuditEntry } from '../audit/audit-record.js';
import type { Logger } from '../obs/logger.js';
import { AdminError, toAdminError } from './admin-errors.js';
import { readBody } from './read-body.js';
import {
  ADMIN_SCHEMAS,
  ADMIN_SERVICE,
  ADMIN_TARGET_PREFIX,
  DEFAULT_ROTATION_PERIOD_DAYS,
  isAdminOperation,
  type AdminOperation,
  type AdminRequest,
} from './admin-schemas.js';
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
interface AdminLog {
  requestId: string;
  operation: AdminOperation | undefined;
  keyId: string | undefined;
  accessKeyId: string | undefined;
  /** The access key id verified by the signature (accessKeyId alone may be only claimed). */
  authenticated: boolean;
  /** The client's address (the TCP peer). */
  from: string | undefined;
  outcome: 'ok' | 'error' | undefined;
  status: number | undefined;
  errorName: string | undefined;
  reason: string | undefined;
  hsmError: string | undefined;
  /** The key version the operation made or left current (a rotation's new version, an import's version). */
  keyVersion: number | undefined;
  ms: number | undefined;
}

/** The services the operations call: key lifecycle and the import of key material. */
export interface AdminServices {
  lifecycle: KeyLifecycle;
  imports: ImportService;
}

type Handlers = { [O in AdminOperation]: (services: AdminServices, request: AdminRequest<O>) => Promise<object> };

/** Each operation: one service call, answered with KMS's response fields (and the key after the change). */
const OPERATIONS: Handlers = {
  CreateKey: async ({ lifecycle: lc }, r) => {
    const usage = r.KeyUsage ?? ['ENCRYPT', 'DECRYPT'];
    const key = await lc.create(r.KeyId, {
      usage: { encrypt: usage.includes('ENCRYPT'), decrypt: usage.includes('DECRYPT') },
      origin: r.Origin ?? 'HSM',
      rotationPeriodDays: r.RotationPeriodInDays,
      exportable: r.Exportable === true,
    });
    return { KeyMetadata: describeKey(key) };
  },
  DescribeKey: async ({ lifecycle: lc }, r) => {
    const key = await lc.get(r.KeyId);
    return { KeyMetadata: describeKey(key, await lc.encryptionCounts(key)) };
  },
  ListKeys: async ({ lifecycle: lc }, r) => {
    // Code-point order, so a marker means the same thing in every process.
    const all = (await lc.list()).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const marker = r.Marker;
    const from = marker === undefined ? all : all.filter((k) => k.id > marker);
    const page = from.slice(0, r.Limit ?? 1000);
    const truncated = page.length < from.length;
    return {
      Keys: page.map((k) => ({ KeyId: k.id, KeyState: k.state })),
      Truncated: truncated,
      ...(truncated ? { NextMarker: page[page.length - 1]!.id } : {}),
    };
  },
  EnableKey: async ({ lifecycle: lc }, r) => ({ KeyMetadata: describeKey(await lc.enable(r.KeyId)) }),
  DisableKey: async ({ lifecycle: lc }, r) => ({ KeyMetadata: describeKey(await lc.disable(r.KeyId)) }),
  GetKeyRotationStatus: async ({ lifecycle: lc }, r) => {
    const d = describeKey(await lc.get(r.KeyId));
    return {
      KeyId: d.KeyId,
      KeyRotationEnabled: d.RotationPeriodInDays !== undefined,
      ...(d.RotationPeriodInDays !== undefined ? { RotationPeriodInDays: d.RotationPeriodInDays } : {}),
      ...(d.NextRotationDate !== undefined ? { NextRotationDate: d.NextRotationDate } : {}),
      ...(d.CurrentVersion !== undefined ? { CurrentVersion: d.CurrentVersion } : {}),
    };
  },
  EnableKeyRotation: async ({ lifecycle: lc }, r) => ({
    KeyMetadata: describeKey(await lc.setRotation(r.KeyId, r.RotationPeriodInDays ?? DEFAULT_ROTATION_PERIOD_DAYS)),
  }),
  DisableKeyRotation: async ({ lifecycle: lc }, r) => ({ KeyMetadata: describeKey(await lc.setRotation(r.KeyId, undefined)) }),
  RotateKeyOnDemand: async ({ lifecycle: lc }, r) => {
    const done = await lc.rotate(r.KeyId);
    return { KeyId: done.KeyId, Version: done.Version };
  },
  ScheduleKeyDeletion: async ({ lifecycle: lc }, r) => {
    const days = r.PendingWindowInDays ?? PENDING_WINDOW_DAYS.default;
    const d = describeKey(await lc.scheduleDeletion(r.KeyId, days));
    return { KeyId: d.KeyId, DeletionDate: d.DeletionDate, KeyState: d.KeyState, PendingWindowInDays: days };
  },
  CancelKeyDeletion: async ({ lifecycle: lc }, r) => {
    const d = describeKey(await lc.cancelDeletion(r.KeyId));
    return { KeyId: d.KeyId, KeyState: d.KeyState };
  },
  RotateDueKeys: async ({ lifecycle: lc }) => ({
    ...(await lc.rotateDue().then((all) => ({
      Rotations: all.filter((x) => x.Rotated).map((x) => ({ KeyId: x.KeyId, Version: x.Version })),
      ...(all.some((x) => x.Error) ? { Failures: all.filter((x) => x.Error).map((x) => ({ KeyId: x.KeyId, Error: x.Error })) } : {}),
    }))),
  }),
  PurgeDueKeys: async ({ lifecycle: lc }) => ({ DeletedKeyIds: await lc.purgeDue() }),
  GetParametersForImport: async ({ imports }, r) => getParametersForImportResponse(await imports.getParametersForImport(r)),
  ImportKeyMaterial: async ({ imports }, r) => imports.importKeyMaterial(r),
  DeleteImportedKeyMaterial: async ({ imports }, r) => imports.deleteImportedKeyMaterial(r.KeyId),
  SweepImports: async ({ imports }) => imports.sweep(),
};

/** The version an answer names: RotateKeyOnDemand's Version, an import's KeyMaterialVersion, else the key's CurrentVersion. */
function versionIn(result: object): number | undefined {
  const r = result as { Version?: unknown; KeyMaterialVersion?: unknown; KeyMetadata?: { CurrentVersion?: unknown } };
  if (typeof r.Version === 'number' && r.Version > 0) return r.Version;
  if (typeof r.KeyMaterialVersion === 'number') return r.KeyMaterialVersion;
  const v = r.KeyMetadata?.CurrentVersion;
  return typeof v === 'number' ? v : undefined;
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

function parseBody<O extends AdminOperation>(operation: O, json: unknown): AdminRequest<O> {
  const schema = ADMIN_SCHEMAS[operation] as unknown as ZodType<AdminRequest<O>>;
  const r = schema.safeParse(json);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.join('.');
  let message: string;
  if (issue.code === 'unrecognized_keys') {
    const known = Object.keys(ADMIN_SCHEMAS[operation].shape);
    message = `${operation} has no field ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}${known.length ? ` (its fields: ${known.join(', ')})` : ' (it takes {})'}`;
  } else if (issue.code === 'invalid_type' && valueAt(json, issue.path) === undefined) {
    message = `${field} is required`;
  } else {
    message = `${field || 'body'}: ${issue.message}`;
  }
  throw new AdminError('ValidationException', message);
}

function valueAt(value: unknown, path: PropertyKey[]): unknown {
  let v = value;
  for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

export function createAdminHandler(opts: AdminHandlerOptions) {
  /** Every admin request goes into the audit trail, refused ones too: who tried (the key id claimed) and from where. */
  const audit = (log: AdminLog) => {
    if (!opts.audit) return;
    opts.audit({
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
  };
  const now = opts.now ?? Date.now;
  const bodyLimit = opts.bodyLimit ?? ADMIN_BODY_LIMIT;
  let auth: AdminAuth = { region: opts.region, credentials: opts.credentials };

  async function handle(req: IncomingMessage, res: ServerResponse, log: AdminLog): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path !== '/') throw new AdminError('InvalidUriPathException', 'the admin API is POST / with X-Amz-Target: XksAdmin.<Operation>');
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      throw new AdminError('MethodNotAllowedException', 'the admin API takes POST only');
    }
    const body = await readBody(req, bodyLimit, () => new AdminError('RequestEntityTooLargeException', `the request body is larger than ${bodyLimit} bytes`));

    // Authentication. The caller is told what to fix when it is not secret (unsigned, malformed, wrong scope); a wrong
    // or unknown key, an expired or mismatched signature all read the same, with the detail in the log.
    const { region, credentials } = auth; // one set per request, even across a reload
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
      { method: 'POST', path, query: q < 0 ? '' : url.slice(q + 1), rawHeaders: req.rawHeaders, body },
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

    const refused = opts.refusal?.();
    if (refused) throw new AdminError('DependencyTimeoutException', refused);
    const result = await run(name, json);
    log.keyVersion = versionIn(result);
    send(res, 200, log.requestId, result);
  }

  function run<O extends AdminOperation>(operation: O, json: unknown): Promise<object> {
    const request = parseBody(operation, json);
    return (OPERATIONS[operation] as (s: AdminServices, r: AdminRequest<O>) => Promise<object>)(opts, request);
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const started = performance.now();
    const log: AdminLog = {
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
    };
    handle(req, res, log).then(
      () => {
        log.outcome = 'ok';
        log.status = 200;
        log.ms = round(performance.now() - started);
        opts.logger.info(log, 'admin request');
        audit(log);
      },
      (err: unknown) => {
        const x = toAdminError(err);
        if (x.errorName === 'KMSInternalException') {
          opts.logger.error({ ...log, err: { name: (err as Error)?.name, message: (err as Error)?.message } }, 'unexpected admin failure');
        }
        // After an oversized body the rest of it is not read: the connection cannot carry another request.
        const close = x.errorName === 'RequestEntityTooLargeException';
        if (!res.headersSent) send(res, x.status, log.requestId, { __type: x.errorName, message: x.message }, close);
        log.outcome = 'error';
        log.status = x.status;
        log.errorName = x.errorName;
        log.reason ??= x.message;
        if (err instanceof HsmError) log.hsmError = err.ckr ?? err.kind;
        log.ms = round(performance.now() - started);
        opts.logger.info(log, 'admin request');
        audit(log);
      },
    );
  };

  return Object.assign(handler, {
    /** Swap the region and credentials (hot reload); requests in flight keep the ones they started with. */
    setAuth(next: AdminAuth) {
      auth = { region: next.region, credentials: next.credentials };
    },
  });
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
