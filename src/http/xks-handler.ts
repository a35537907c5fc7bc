// The XKS request path on plain node:http, in the conformance order of xks-api.md:
// path and prefix (404) -> signature (401) -> body shape (400) -> key exists (404) -> key state and usage (400) -> HSM.
// No framework router: the hot path is measured against a bare node:http ceiling (npm run bench).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ZodType } from 'zod';
import type { ResolvedPrefix } from '../config/load.js';
import { HsmError } from '../hsm/errors.js';
import type { AuditEntry } from '../audit/audit-record.js';
import type { Incidents } from '../obs/incidents.js';
import { REQUEST_LINE, type Logger } from '../obs/logger.js';
import type { AadLayout } from '../xks/aad.js';
import { XksError, toXksError, type XksErrorName } from '../xks/errors.js';
import type { HealthChecker } from '../xks/health.js';
import { decrypt, encrypt, getKeyMetadata, type XksDeps } from '../xks/operations.js';
import { DecryptRequestSchema, EncryptRequestSchema, HealthRequestSchema, KeyMetadataRequestSchema } from '../xks/schemas.js';
import { Deadlines } from './deadlines.js';
import { readBody } from './read-body.js';
import { TokenBucket } from './rate-limit.js';
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

/** The request's log line, filled in as the request advances; one fixed shape, logged once. */
export interface RequestLog {
  kmsRequestId: string | undefined;
  operation: string | undefined;
  prefix: string | undefined;
  keyId: string | undefined;
  keyVersion: number | undefined;
  /** A decrypt that authenticated only under another proxy's AAD layout (AWS's sample proxy's ciphertexts). */
  aadLayout: AadLayout | undefined;
  accessKeyId: string | undefined;
  /** The access key id a request that did not authenticate claimed (its Authorization header), as it was tried. */
  triedAccessKeyId: string | undefined;
  /** The client's address (the TCP peer: a load balancer's when one is in front). */
  from: string | undefined;
  /** From requestMetadata (as KMS sent it; trusted only once the signature verified). */
  awsPrincipalArn: string | undefined;
  kmsKeyArn: string | undefined;
  kmsOperation: string | undefined;
  kmsViaService: string | undefined;
  awsSourceVpc: string | undefined;
  awsSourceVpce: string | undefined;
  /** The policy statement that decided (allowed or denied), when a policy applies. */
  policy: string | undefined;
  outcome: 'ok' | 'error' | undefined;
  status: number | undefined;
  errorName: XksErrorName | undefined;
  reason: string | undefined;
  hsmError: string | undefined;
  ms: number | undefined;
}

function newLog(): RequestLog {
  return {
    kmsRequestId: undefined,
    operation: undefined,
    prefix: undefined,
    keyId: undefined,
    keyVersion: undefined,
    aadLayout: undefined,
    accessKeyId: undefined,
    triedAccessKeyId: undefined,
    from: undefined,
    awsPrincipalArn: undefined,
    kmsKeyArn: undefined,
    kmsOperation: undefined,
    kmsViaService: undefined,
    awsSourceVpc: undefined,
    awsSourceVpce: undefined,
    policy: undefined,
    outcome: undefined,
    status: undefined,
    errorName: undefined,
    reason: undefined,
    hsmError: undefined,
    ms: undefined,
  };
}

function send(res: ServerResponse, status: number, body: unknown, close = false): void {
  if (res.headersSent) return; // answered already (the request's deadline passed)
  const text = JSON.stringify(body); // compact, single line: AWS's test client reads the last line
  res.writeHead(
    status,
    close
      ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), connection: 'close' }
      : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
  );
  res.end(text);
}

function parse<T>(schema: ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.join('.') || 'body';
  const tooLarge = issue.code === 'custom' && (issue as { params?: { tooLarge?: boolean } }).params?.tooLarge === true;
  // Our own Base64 checks already name the field; zod's built-in messages do not.
  // zod 4 issues do not carry the input: look the value up, so a missing field and a wrong type read differently.
  const missing = issue.code === 'invalid_type' && valueAt(value, issue.path) === undefined;
  const message = missing ? `${field} is required` : issue.code === 'custom' ? issue.message : `${field}: ${issue.message}`;
  throw new XksError(tooLarge ? 'UnsupportedOperationException' : 'ValidationException', message);
}

export function createXksHandler(opts: XksHandlerOptions) {
  const now = opts.now ?? Date.now;
  let prefixes = new Map(opts.prefixes.map((p) => [p.path, p]));
  const share = opts.rateShare ?? 1;
  let buckets = bucketsFor(opts.prefixes, new Map(), now(), share);
  const deadlines = new Deadlines(performance.now.bind(performance));
  const budget = opts.requestTimeoutMs ?? 240;

  async function handle(req: IncomingMessage, res: ServerResponse, log: RequestLog): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const route: XksRoute | undefined = matchRoute(path);
    const prefix = route ? prefixes.get(route.prefix) : undefined;
    if (!route || !prefix) throw new XksError('InvalidUriPathException', 'no XKS operation at this path');
    log.operation = route.operation;
    log.prefix = route.prefix;
    if (route.keyId) log.keyId = route.keyId;
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      throw new XksError('ValidationException', 'XKS operations use POST', 405);
    }

    const body = await readBody(req, opts.bodyLimit, () => new XksError('UnsupportedOperationException', `request body is larger than ${opts.bodyLimit} bytes`));
    const auth = verifySigV4(
      { method: 'POST', path, query: q < 0 ? '' : url.slice(q + 1), rawHeaders: req.rawHeaders, body },
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

    if (route.operation === 'GetHealthStatus') {
      parse(HealthRequestSchema, json);
      const r = await opts.health.response();
      send(res, 200, r.body);
      return;
    }
    const refused = opts.refusal?.();
    if (refused) throw new XksError('DependencyTimeoutException', refused);
    const keyId = route.keyId!;
    // Each operation validates its body before the key is looked up (400 before 404), and the key is known to exist
    // before the policy decides (404 before 403); key state and usage come after (400).
    const allowed = (): Promise<void> | undefined => {
      if (prefix.keys && !prefix.keys.has(keyId)) throw new XksError('KeyNotFoundException', `external key ${keyId} is not in this key store`);
      // Without a policy there is nothing to wait for: no promise on the hot path.
      return prefix.policy.empty ? undefined : authorize();
    };
    const authorize = async () => {
      if (!(await opts.deps.catalogue.resolve(keyId))) throw new XksError('KeyNotFoundException', `external key ${keyId} does not exist`);
      const d = prefix.policy.evaluate({
        keyId,
        awsPrincipalArn: log.awsPrincipalArn,
        kmsKeyArn: log.kmsKeyArn,
        kmsOperation: log.kmsOperation,
        kmsViaService: log.kmsViaService,
        awsSourceVpc: log.awsSourceVpc,
        awsSourceVpce: log.awsSourceVpce,
      });
      log.policy = d.statement;
      if (!d.allowed) {
        log.reason = `policy: ${d.reason}`;
        throw new XksError('AccessDeniedException', 'the request is not allowed by the key store policy');
      }
    };
    let result: { body: unknown; keyVersion: number | undefined; aadLayout?: AadLayout | undefined };
    switch (route.operation) {
      case 'Encrypt': {
        const request = parse(EncryptRequestSchema, json);
        const pending = allowed();
        if (pending) await pending; // only with a policy: no microtask otherwise
        result = await encrypt(opts.deps, keyId, request);
        break;
      }
      case 'Decrypt': {
        const request = parse(DecryptRequestSchema, json);
        const pending = allowed();
        if (pending) await pending;
        result = await decrypt(opts.deps, keyId, request);
        break;
      }
      case 'GetKeyMetadata': {
        parse(KeyMetadataRequestSchema, json);
        const pending = allowed();
        if (pending) await pending;
        result = await getKeyMetadata(opts.deps, keyId);
        break;
      }
    }
    log.keyVersion = result.keyVersion;
    if (result.aadLayout) log.aadLayout = result.aadLayout;
    send(res, 200, result.body);
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const started = performance.now();
    if (req.url === '/ping' && (req.method === 'GET' || req.method === 'HEAD')) {
      // Unauthenticated liveness for load balancers: says the process serves, not that the HSM is healthy.
      send(res, 200, { status: 'ok' });
      return;
    }
    const log = newLog();
    log.from = req.socket.remoteAddress;
    let finished = false;
    const finish = () => {
      finished = true;
      deadlines.remove(deadline);
      log.ms = round(performance.now() - started);
      opts.logger.info(log, REQUEST_LINE);
      opts.observe?.(log);
      // Requests to no XKS path at all (scanners) are not calls on the key store: log only.
      if (log.operation) opts.audit?.(auditEntry(log));
    };
    const fail = (err: unknown, closeConnection = false) => {
      if (finished) return;
      const x = toXksError(err);
      if (x.errorName === 'InternalException') {
        const e = { name: (err as Error)?.name, message: (err as Error)?.message };
        // Each request still has its own request line; the error behind it is logged once per incident.
        if (opts.incidents) opts.incidents.error(`${e.name}: ${e.message}`, { ...log, err: e }, 'unexpected failure');
        else opts.logger.error({ ...log, err: e }, 'unexpected failure');
      }
      // After an oversized body (or a request cut off by its deadline) the rest of the body is not read: the
      // connection cannot carry another request.
      const close = closeConnection || (x.errorName === 'UnsupportedOperationException' && x.message.startsWith('request body'));
      if (!res.headersSent) send(res, x.status, { errorName: x.errorName, errorMessage: x.message }, close);
      log.outcome = 'error';
      log.status = x.status;
      log.errorName = x.errorName;
      log.reason ??= x.message;
      if (err instanceof HsmError) log.hsmError = err.ckr ?? err.kind;
      if (!log.accessKeyId) log.triedAccessKeyId = claimedAccessKeyId(req);
      finish();
    };
    // Past the budget the caller gets its answer now; the HSM call, if any, finishes in the background unanswered.
    const deadline = deadlines.add(budget, () =>
      fail(new XksError('DependencyTimeoutException', `the request did not complete within ${budget} ms`), true),
    );
    handle(req, res, log).then(() => {
      if (finished) return;
      log.outcome = 'ok';
      log.status = 200;
      finish();
    }, fail);
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

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let v = value;
  for (const k of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
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

/** The access key id in a request's Authorization header, whether or not it authenticated (for the audit trail). */
export function claimedAccessKeyId(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  const id = typeof h === 'string' ? /Credential=([^/,\s]{1,128})\//.exec(h)?.[1] : undefined;
  return id?.replace(/[^\x21-\x7e]/g, '?');
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
