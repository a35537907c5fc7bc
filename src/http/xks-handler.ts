// The XKS listener's side of the request cycle (request-cycle.ts), in the conformance order of xks-api.md:
// path and prefix (404) -> signature (401) -> rate (429) -> JSON (400) -> then xks/requests.ts: body shape (400) ->
// key exists (404) -> policy (403) -> key state and usage (400) -> HSM.
// No framework router: the hot path is measured against a bare node:http ceiling (npm run bench).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ResolvedPrefix } from '../config/load.js';
import type { AuditEntry } from '../audit/audit-record.js';
import type { Incidents } from '../obs/incidents.js';
import { REQUEST_LINE, type Logger } from '../obs/logger.js';
import { XksError, toXksError } from '../xks/errors.js';
import type { HealthChecker } from '../xks/health.js';
import type { XksDeps } from '../xks/operations.js';
import { newRequestLog, type RequestLog } from '../xks/request-log.js';
import { XKS_OPERATIONS, type XksAnswer, type XksCall } from '../xks/requests.js';
import { Deadlines } from './deadlines.js';
import { TokenBucket } from './rate-limit.js';
import { claimedAccessKeyId, serve, type Surface } from './request-cycle.js';
import { matchRoute, type XksRoute } from './routes.js';
import { XKS_SERVICE, verifySigV4 } from './sigv4.js';

export interface XksHandlerOptions {
  deps: XksDeps;
  health: HealthChecker;
  prefixes: ResolvedPrefix[];
  bodyLimit: number;
  logger: Logger;
  /** Warnings and errors beyond the request line, one line per incident (absent: each is logged). */
  incidents?: Incidents | undefined;
  /** Appends one line per request to the audit trail (absent: no trail). */
  audit?: ((entry: AuditEntry) => void) | undefined;
  /** No request is held longer than this (KMS's budget is 250 ms): past it, DependencyTimeoutException. */
  requestTimeoutMs?: number;
  /**
   * This process's share of each key store's rate limit: 1 / the number of worker processes, so that the key store as
   * a whole gets the configured rate and burst (connections are spread evenly over the workers).
   */
  rateShare?: number;
  /** Called once per request with its log line (metrics). */
  observe?: ((log: Readonly<RequestLog>) => void) | undefined;
  /** Why key operations are refused for now (audit.onFailure refuse while the trail cannot be sealed), or undefined. */
  refusal?: (() => string | undefined) | undefined;
  now?: () => number;
}

function send(res: ServerResponse, status: number, body: unknown, close = false): void {
  const text = JSON.stringify(body); // compact, single line: AWS's test client reads the last line
  res.writeHead(
    status,
    close
      ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), connection: 'close' }
      : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
  );
  res.end(text);
}

export function createXksHandler(opts: XksHandlerOptions) {
  const now = opts.now ?? Date.now;
  let prefixes = new Map(opts.prefixes.map((p) => [p.path, p]));
  const share = opts.rateShare ?? 1;
  let buckets = bucketsFor(opts.prefixes, new Map(), now(), share);
  const services = { ...opts.deps, health: opts.health };
  const budget = opts.requestTimeoutMs ?? 240;

  const surface: Surface<{ route: XksRoute; prefix: ResolvedPrefix }, XksCall, XksAnswer, RequestLog, XksError> = {
    newLog: (req) => newRequestLog(req.socket.remoteAddress),
    route(req, res, path, log) {
      const route = matchRoute(path);
      const prefix = route ? prefixes.get(route.prefix) : undefined;
      if (!route || !prefix) throw new XksError('InvalidUriPathException', 'no XKS operation at this path');
      log.operation = route.operation;
      log.prefix = route.prefix;
      if (route.keyId) log.keyId = route.keyId;
      if (req.method !== 'POST') {
        res.setHeader('allow', 'POST');
        throw new XksError('ValidationException', 'XKS operations use POST', 405);
      }
      return { route, prefix };
    },
    bodyLimit: opts.bodyLimit,
    tooLarge: () => new XksError('UnsupportedOperationException', `request body is larger than ${opts.bodyLimit} bytes`),
    admit({ route, prefix }, req, path, query, body, log) {
      const auth = verifySigV4(
        { method: 'POST', path, query, rawHeaders: req.rawHeaders, body },
        { region: prefix.region, service: XKS_SERVICE, secretFor: (id) => prefix.credentials.get(id), now: now() },
      );
      let json: unknown;
      let jsonError = false;
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch {
        jsonError = true;
      }
      // Logged even when authentication fails, so operators can match KMS's connection errors to log lines.
      const meta = (json as { requestMetadata?: Record<string, unknown> } | null)?.requestMetadata;
      if (meta && typeof meta === 'object') {
        log.kmsRequestId = text(meta.kmsRequestId, 128);
        log.awsPrincipalArn = text(meta.awsPrincipalArn, 2048);
        log.kmsKeyArn = text(meta.kmsKeyArn, 2048);
        log.kmsOperation = text(meta.kmsOperation, 128);
        log.kmsViaService = text(meta.kmsViaService, 256);
        log.awsSourceVpc = text(meta.awsSourceVpc, 256);
        log.awsSourceVpce = text(meta.awsSourceVpce, 256);
      }
      if (!auth.ok) {
        // The caller learns only that the signature failed; which check failed goes to the log for the operator.
        log.reason = `SigV4: ${auth.reason}`;
        throw new XksError('AuthenticationFailedException', 'the request signature is not valid for this key store');
      }
      log.accessKeyId = auth.accessKeyId;
      const bucket = buckets.get(prefix.path);
      if (bucket && !bucket.take(now())) throw new XksError('ThrottlingException', 'the key store is over its request rate; retry');
      if (jsonError) throw new XksError('ValidationException', 'the body is not valid JSON');
      return {
        name: route.operation,
        operation: XKS_OPERATIONS[route.operation],
        call: { services, access: prefix, keyId: route.keyId, log },
        json,
        // Health answers whatever the trail's state; key operations are refused while it cannot be sealed.
        refusable: route.keyId !== undefined,
      };
    },
    refusal: opts.refusal,
    refused: (why) => new XksError('DependencyTimeoutException', why),
    invalid: (message, tooLarge) => new XksError(tooLarge ? 'UnsupportedOperationException' : 'ValidationException', message),
    answer(res, result, log) {
      log.keyVersion = result.keyVersion;
      if (result.aadLayout) log.aadLayout = result.aadLayout;
      send(res, 200, result.body);
    },
    toError: toXksError,
    answerError: (res, e, _log, close) => send(res, e.status, { errorName: e.code, errorMessage: e.message }, close),
    unexpected(err, log) {
      const e = { name: (err as Error)?.name, message: (err as Error)?.message };
      // Each request still has its own request line; the error behind it is logged once per incident.
      if (opts.incidents) opts.incidents.error(`${e.name}: ${e.message}`, { ...log, err: e }, 'unexpected failure');
      else opts.logger.error({ ...log, err: e }, 'unexpected failure');
    },
    finish(req, log) {
      if (log.outcome === 'error' && !log.accessKeyId) log.triedAccessKeyId = claimedAccessKeyId(req);
      opts.logger.info(log, REQUEST_LINE);
      opts.observe?.(log);
      // Requests to no XKS path at all (scanners) are not calls on the key store: log only.
      if (log.operation) opts.audit?.(auditEntry(log));
    },
    budget: {
      ms: budget,
      deadlines: new Deadlines(performance.now.bind(performance)),
      timedOut: () => new XksError('DependencyTimeoutException', `the request did not complete within ${budget} ms`),
    },
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.url === '/ping' && (req.method === 'GET' || req.method === 'HEAD')) {
      // Unauthenticated liveness for load balancers: says the process serves, not that the HSM is healthy.
      send(res, 200, { status: 'ok' });
      return;
    }
    serve(surface, req, res);
  };

  return Object.assign(handler, {
    /** Swap prefixes and credentials (hot reload); requests in flight keep the ones they started with. */
    setPrefixes(next: ResolvedPrefix[]) {
      prefixes = new Map(next.map((p) => [p.path, p]));
      buckets = bucketsFor(next, buckets, now(), share);
    },
  });
}

/** One token bucket per rate-limited prefix; a reload keeps a bucket whose rate did not change (and its tokens). */
function bucketsFor(prefixes: ResolvedPrefix[], old: Map<string, TokenBucket>, now: number, share: number): Map<string, TokenBucket> {
  const next = new Map<string, TokenBucket>();
  for (const p of prefixes) {
    if (!p.rateLimit) continue;
    const rate = p.rateLimit.requestsPerSecond * share;
    const burst = Math.max(1, p.rateLimit.burst * share);
    const before = old.get(p.path);
    const same = before && before.ratePerSecond === rate && before.burst === burst;
    next.set(p.path, same ? before : new TokenBucket(rate, burst, now));
  }
  return next;
}

function text(v: unknown, max: number): string | undefined {
  return typeof v === 'string' ? v.slice(0, max) : undefined;
}

/** The audit line of a request: who, for which KMS key and operation, on which key version, with what outcome. */
function auditEntry(log: RequestLog): AuditEntry {
  return {
    source: 'xks',
    ...(log.accessKeyId ? { who: log.accessKeyId } : {}),
    ...(log.triedAccessKeyId ? { triedAccessKeyId: log.triedAccessKeyId } : {}),
    ...(log.from ? { from: log.from } : {}),
    ...(log.awsPrincipalArn ? { awsPrincipalArn: log.awsPrincipalArn } : {}),
    ...(log.kmsKeyArn ? { kmsKeyArn: log.kmsKeyArn } : {}),
    ...(log.kmsOperation ? { kmsOperation: log.kmsOperation } : {}),
    ...(log.kmsRequestId ? { kmsRequestId: log.kmsRequestId } : {}),
    ...(log.kmsViaService ? { kmsViaService: log.kmsViaService } : {}),
    operation: log.operation ?? 'unknown',
    ...(log.keyId ? { keyId: log.keyId } : {}),
    ...(log.keyVersion !== undefined ? { keyVersion: log.keyVersion } : {}),
    ...(log.aadLayout ? { aadLayout: log.aadLayout } : {}),
    outcome: log.outcome ?? 'error',
    ...(log.errorName ? { errorName: log.errorName } : {}),
  };
}

