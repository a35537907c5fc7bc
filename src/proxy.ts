// Wires one proxy process together from a loaded configuration: HSM connection, key catalogue, health, listeners.
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import client from 'prom-client';
import { ANCHOR_LABEL, AuditAnchors } from './audit/audit-anchor.js';
import { auditSigner, DEFAULT_AUDIT_KEY_LABEL } from './audit/audit-key.js';
import { AuditTrail, trailFileName } from './audit/audit-trail.js';
import { TrailLock } from './audit/trail-lock.js';
import type { LoadedConfig, LoadedFile } from './config/load.js';
import { HsmConnection } from './hsm/hsm-connection.js';
import type { KeyStore } from './hsm/key-store.js';
import { loadProfile, resolveLibrary } from './hsm/profile.js';
import { createAdminHandler } from './http/admin-handler.js';
import { createOpsHandler } from './http/ops-handler.js';
import { createXksHandler } from './http/xks-handler.js';
import { SMALL_LISTENER_CONNECTIONS, startListeners, xksConnectionLimit, type ConnectionLimits, type Listening } from './http/listeners.js';
import { ImportService } from './import/import-service.js';
import { KeyCatalogue } from './keys/catalogue.js';
import { KeyStateSchema } from './keys/key-record.js';
import { KeyLifecycle } from './keys/lifecycle.js';
import { Incidents } from './obs/incidents.js';
import type { Logger } from './obs/logger.js';
import { KeyCount } from './obs/key-count.js';
import { registerAuditMetrics } from './obs/audit-metrics.js';
import { Metrics } from './obs/metrics.js';
import { EncryptionBudget } from './xks/encryption-budget.js';
import { HealthChecker } from './xks/health.js';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export async function openHsm(
  loaded: LoadedFile,
  incidents?: Incidents,
  observeCall?: (call: 'encrypt' | 'decrypt', seconds: number) => void,
  /** The budget of a call on the control thread (HsmOptions.controlTimeoutMs); an operator's command waits longer. */
  controlTimeoutMs?: number,
): Promise<HsmConnection> {
  const h = loaded.config.hsm;
  const profile = loadProfile(h.profile);
  return HsmConnection.open({
    ...resolveLibrary(profile, h),
    profile,
    tokenLabel: h.tokenLabel,
    tokenSerial: h.tokenSerial,
    pin: loaded.pin,
    poolSize: h.sessionPoolSize,
    acquireTimeoutMs: h.acquireTimeoutMs,
    maxQueue: h.maxQueue,
    operationTimeoutMs: h.operationTimeoutMs,
    ivMode: h.ivMode,
    callMode: h.callMode,
    callThreadBusyAt: h.callThreadBusyAt,
    controlTimeoutMs,
    // One line per incident: a failing HSM reports the same event for every request.
    onEvent: (event, detail) => incidents?.warn(incidentKey(detail), detail, event),
    observeCall,
  });
}

/** The file of this process's audit trail (one per host and role), when the config has an audit section. */
export function auditTrailFile(loaded: LoadedFile, role: string): string | undefined {
  const a = loaded.config.audit;
  return a ? join(a.dir, trailFileName(role)) : undefined;
}

/**
 * Open (or continue) this process's audit trail, sealed with a MAC key that lives in the HSM. The caller holds the
 * trail's lock (trail-lock.ts): one writer per file.
 */
export async function openAuditTrail(hsm: KeyStore, loaded: LoadedFile, role: string, logger?: Logger, incidents?: Incidents): Promise<AuditTrail | undefined> {
  const a = loaded.config.audit;
  if (!a) return undefined;
  mkdirSync(a.dir, { recursive: true, mode: 0o750 });
  return AuditTrail.open({
    file: auditTrailFile(loaded, role)!,
    signer: await auditSigner(hsm, a.keyLabel),
    anchors: new AuditAnchors(hsm),
    checkpointEvery: a.checkpointEvery,
    checkpointIntervalMs: a.checkpointSeconds * 1000,
    maxFileBytes: a.maxFileMB * 1_000_000,
    // Each checkpoint's hash also goes to the process log: a copy outside the trail's directory to compare with.
    onCheckpoint: (c) => logger?.info(c, 'audit checkpoint'),
    onSegment: (s) => logger?.warn(s, 'audit trail segment: the end of the trail could not be vouched for'),
    onError: (e) =>
      incidents ? incidents.error(e.message, { reason: e.message }, 'audit trail write failed') : logger?.error({ reason: e.message }, 'audit trail write failed'),
  });
}

/** The import of key material on this connection, with the operator's opt-in from the config. */
export function openImports(hsm: KeyStore, catalogue: KeyCatalogue, lifecycle: KeyLifecycle, loaded: LoadedFile, logger?: Logger, orAllow = false): ImportService {
  return new ImportService(hsm, catalogue, lifecycle, {
    allowInProcessMaterial: orAllow || loaded.config.import.allowInProcessMaterial,
    ...(logger ? { logger } : {}),
  });
}

export interface ProxyOptions {
  /** Where metrics are recorded: a fresh registry by default; the global one in cluster workers (aggregated by the primary). */
  registry?: client.Registry;
  /** Run the operations listener in this process (default true; the primary runs it under --workers). */
  ops?: boolean;
  /** Names this process's audit trail file (default "main"; w1, w2 ... for workers). */
  auditRole?: string;
  /** This process's share of each key store's rate limit (1 / workers). */
  rateShare?: number;
  /**
   * Count the token's keys by state for xks_keys (default: when the config has an operations listener). Under
   * --workers one worker counts: the primary shows the first worker's count anyway.
   */
  countKeys?: boolean;
}

/** Labels the proxy uses for its own keys: never an external key id (KMS could otherwise be pointed at them). */
function reservedLabels(loaded: LoadedFile): Set<string> {
  return new Set([loaded.config.hsm.healthKeyLabel, loaded.config.audit?.keyLabel ?? DEFAULT_AUDIT_KEY_LABEL, ANCHOR_LABEL]);
}

export function openCatalogue(hsm: KeyStore, loaded: LoadedFile): KeyCatalogue {
  return new KeyCatalogue(hsm, {
    ttlMs: loaded.config.hsm.keyCacheTtlMs,
    negativeTtlMs: 1_000,
    versionRefreshMs: 1_000,
    reserved: reservedLabels(loaded),
    maxEntries: 10_000,
  });
}

/** Key management on this connection; the proxy's own keys (health check, audit) are out of its reach. */
export function openLifecycle(hsm: KeyStore, catalogue: KeyCatalogue, loaded: LoadedFile, now?: () => Date): KeyLifecycle {
  return new KeyLifecycle(hsm, catalogue, {
    reserved: reservedLabels(loaded),
    encryptionLimits: loaded.config.encryptionLimits,
    ...(now ? { now } : {}),
  });
}

export interface RunningProxy {
  hsm: HsmConnection;
  catalogue: KeyCatalogue;
  lifecycle: KeyLifecycle;
  health: HealthChecker;
  listening: Listening;
  /** The admin API's listener; undefined when the config has no admin section (the API is off). */
  adminListening: Listening | undefined;
  /** The operations listener (/metrics, /health, /ping); undefined when not configured or run by the primary. */
  opsListening: Listening | undefined;
  metrics: Metrics;
  audit: AuditTrail | undefined;
  /**
   * Take new prefixes, credentials and key allow-lists, and the admin API's credentials, from a reloaded config;
   * requests in flight keep the old. The admin listener itself starts and stops only with the process.
   */
  reload(next: LoadedConfig): void;
  stop(): Promise<void>;
}

export async function startProxy(loaded: LoadedConfig, logger: Logger, opts: ProxyOptions = {}): Promise<RunningProxy> {
  const metrics = new Metrics(opts.registry ?? new client.Registry());
  const incidents = new Incidents(logger, loaded.config.log.repeatWindowSeconds * 1000);
  // A serving process gives a search or a key read 2 s (the request itself is answered at its deadline meanwhile).
  const hsm = await openHsm(loaded, incidents, (call, seconds) => metrics.observeHsmCall(call, seconds), Math.max(2_000, loaded.config.hsm.operationTimeoutMs));
  let current = loaded;
  const closers: (() => Promise<void>)[] = [];
  let trailLock: TrailLock | undefined;
  try {
    const catalogue = openCatalogue(hsm, loaded);
    const lifecycle = openLifecycle(hsm, catalogue, loaded);
    // While the audit trail cannot be sealed, health says so, and with audit.onFailure refuse key operations wait.
    let audit: AuditTrail | undefined;
    const refuseUnsealed = loaded.config.audit?.onFailure === 'refuse';
    const auditFailing = () => audit?.status.failing;
    const health = new HealthChecker(hsm, {
      keyLabel: loaded.config.hsm.healthKeyLabel,
      maxAgeMs: loaded.config.health.maxAgeMs,
      waitMs: 200,
      fleetSize: loaded.config.health.fleetSize,
      version: VERSION,
      stalledMs: () => hsm.overdueMs,
      // A call past its budget (AES-GCM: operationTimeoutMs; a search: the control thread's): the HSM is not answering.
      stalledAfterMs: 0,
      degradedBy: () => {
        const failing = auditFailing();
        return failing ? { status: refuseUnsealed ? 'UNAVAILABLE' : 'DEGRADED', detail: `the audit trail cannot be sealed (${failing})` } : undefined;
      },
    });
    const refusal = refuseUnsealed
      ? () => (auditFailing() ? 'the audit trail cannot be sealed (audit.onFailure: refuse): retry later' : undefined)
      : undefined;
    // Creates the health key if it is missing, and tells at start-up whether the HSM really works.
    const first = await health.refresh();
    logger.info({ token: hsm.info.label, serial: hsm.info.serial, status: first.status, detail: first.detail }, 'health check');
    // xks_keys: counted in the background, never at scrape time (a count searches the whole token).
    let keyCount: KeyCount | undefined;
    if (opts.countKeys ?? loaded.config.listeners.ops !== undefined) {
      keyCount = new KeyCount(() => lifecycle.list(), KeyStateSchema.options, loaded.config.hsm.keyCountIntervalMs);
      await keyCount.start();
      const counting = keyCount;
      closers.push(async () => counting.stop());
    }
    const encryptions = new EncryptionBudget(hsm, loaded.config.encryptionLimits, (event, detail) => logger.warn(detail, event));
    metrics.bind({ hsm, health, keyCount, encryptions, config: () => current });
    // The trail's lock, held for the process's lifetime: a second process with the same host and role would otherwise
    // resume the live file (and rename it) under this one. It fails start-up, by name, while a live process holds it.
    const role = opts.auditRole ?? 'main';
    const trailFile = auditTrailFile(loaded, role);
    if (trailFile) {
      mkdirSync(dirname(trailFile), { recursive: true, mode: 0o750 });
      trailLock = await TrailLock.acquire(trailFile, {
        onLost: () => logger.error({ file: trailFile }, 'audit trail lock taken over by another process (this one was silent for seconds): two writers may share the file'),
      });
    }
    audit = await openAuditTrail(hsm, loaded, role, logger, incidents);
    const trail = audit;
    if (trail) {
      closers.push(() => trail.close());
      registerAuditMetrics(metrics.registry, () => trail.status);
    }
    // Released after the trail's last checkpoint is written.
    if (trailLock) {
      const held = trailLock;
      closers.push(async () => held.release());
    }
    const handler = createXksHandler({
      audit: trail ? (e) => trail.append(e) : undefined,
      refusal,
      observe: (log) => metrics.observeRequest(log),
      deps: { hsm, catalogue, encryptions, awsSampleAadFallback: loaded.config.xks.awsSampleAadFallback },
      health,
      prefixes: loaded.prefixes,
      bodyLimit: loaded.config.limits.bodyBytes,
      requestTimeoutMs: loaded.config.limits.requestTimeoutMs,
      rateShare: opts.rateShare ?? 1,
      logger: logger.child({ hsm: hsm.info.label }),
      incidents,
    });
    const listeners = loaded.config.listeners;
    await warmUp(hsm, catalogue, encryptions, loaded, logger);
    const limits = connectionLimits(loaded, opts.ops !== false, logger);
    if (listeners.https?.mtls && listeners.http) {
      logger.warn({ http: `${listeners.http.host}:${listeners.http.port}` }, 'mTLS is on for HTTPS, but the plain HTTP listener accepts any client');
    }
    const listening = await startListeners(listeners, handler, incidents, limits.xks, 'xks');
    closers.unshift(() => listening.close());
    let opsListening: Listening | undefined;
    if (listeners.ops && opts.ops !== false) {
      opsListening = await startListeners({ http: listeners.ops }, createOpsHandler(opsSources(metrics.registry, health, hsm)), incidents, limits.small, 'ops');
      closers.unshift(() => opsListening!.close());
      logger.info({ ops: `${opsListening.http!.address}:${opsListening.http!.port}` }, 'operations listener (/metrics, /health, /ping)');
    }
    let adminListening: Listening | undefined;
    let adminHandler: ReturnType<typeof createAdminHandler> | undefined;
    if (loaded.admin) {
      const a = loaded.admin;
      adminHandler = createAdminHandler({
        lifecycle,
        imports: openImports(hsm, catalogue, lifecycle, loaded, logger),
        region: a.region,
        credentials: a.credentials,
        logger: logger.child({ hsm: hsm.info.label }),
        audit: trail ? (e) => trail.append(e) : undefined,
        refusal,
      });
      adminListening = await startListeners({ http: a.listener }, adminHandler, incidents, limits.small, 'admin');
      closers.unshift(() => adminListening!.close());
      const at = adminListening.http!;
      if (!isLoopback(at.address)) {
        logger.warn({ admin: `${at.address}:${at.port}` }, 'the admin API listens beyond loopback over plain HTTP; put TLS in front of it');
      }
      logger.info({ admin: `${at.address}:${at.port}`, region: a.region, accessKeyIds: [...a.credentials.keys()] }, 'admin API listening');
    }
    return {
      hsm,
      catalogue,
      lifecycle,
      health,
      listening,
      adminListening,
      opsListening,
      metrics,
      audit,
      reload: (next) => {
        current = next;
        handler.setPrefixes(next.prefixes);
        // An admin section removed on reload refuses every admin request (no credential) until the restart closes it.
        adminHandler?.setAuth(next.admin ?? { region: loaded.admin!.region, credentials: new Map() });
        if (next.admin && !adminHandler) logger.warn({}, 'the admin API was added to the configuration: it starts with the next restart');
      },
      stop: async () => {
        // Listeners first (drain requests in flight), then the audit trail's final checkpoint (made in the HSM).
        for (const close of closers) await close().catch(() => undefined);
        await hsm.drain(2_000); // calls abandoned by a timeout may still run on the thread pool
        hsm.close();
        incidents.flush();
      },
    };
  } catch (e) {
    for (const close of closers) await close().catch(() => undefined);
    trailLock?.release();
    hsm.close();
    throw e;
  }
}

/** What the operations listener serves in a single process. */
export function opsSources(registry: client.Registry, health: HealthChecker, hsm: HsmConnection) {
  return {
    metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
    health: async () => {
      const r = await health.current();
      return {
        status: r.status,
        token: hsm.info.label,
        serial: hsm.info.serial,
        checkedAt: new Date(r.checkedAt).toISOString(),
        ...(r.detail ? { detail: r.detail } : {}),
      };
    },
  };
}

/** What identifies an HSM event for coalescing: its text fields (cause, ckr, reason), not its numbers (durations). */
function incidentKey(detail: Record<string, unknown>): string {
  return Object.entries(detail)
    .filter(([, v]) => typeof v === 'string')
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');
}

/** Start-up's bound on the warm-up: a slow token delays the listener this long at most, then it opens anyway. */
const WARM_UP_MS = 10_000;
/** Keys resolved at start-up when a prefix serves every key of the token: the catalogue's cache holds at most this many. */
const WARM_UP_KEYS = 1_000;

/**
 * Before the listeners open (and so before /health or a load balancer can call the process ready): the session pool
 * opened, the call thread started (callMode thread), and the keys the key stores may use found in the token, with their
 * session copies made. A cold proxy under a burst answered ThrottlingException in its first seconds while it did this
 * per request. Bounded by WARM_UP_MS; a key that cannot be read now is read by its first request, as before.
 */
async function warmUp(hsm: HsmConnection, catalogue: KeyCatalogue, encryptions: EncryptionBudget, loaded: LoadedConfig, logger: Logger): Promise<void> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), WARM_UP_MS)));
  let sessions = 0;
  let callThread: boolean | undefined;
  let keys = 0;
  const work = (async () => {
    ({ sessions, callThread } = await hsm.warmUp(WARM_UP_MS));
    const listed = loaded.prefixes.some((p) => p.keys === undefined)
      ? (await catalogue.list()).map((k) => k.id).slice(0, WARM_UP_KEYS)
      : [];
    const allowed = new Set(loaded.prefixes.flatMap((p) => [...(p.keys ?? [])]));
    for (const id of new Set([...allowed, ...listed])) {
      const key = await catalogue.resolve(id);
      if (!key) continue;
      keys++;
      // The first block of encryptions too, for the keys an allow-list names: each reservation is an object in the
      // token, so not for every key of a token served without one (their first encrypt reserves it).
      if (allowed.has(id) && key.current?.encrypt) await encryptions.prepare(id, key.current);
    }
    return 'done' as const;
  })().catch((e: Error) => {
    logger.warn({ reason: e.message }, 'warm-up failed; keys are read by their first request');
    return 'failed' as const;
  });
  const outcome = await Promise.race([work, deadline]);
  clearTimeout(timer);
  if (outcome === 'late') logger.warn({ ms: WARM_UP_MS, sessions, keys }, 'warm-up did not finish in time; opening the listeners anyway');
  else logger.info({ ms: Math.round(performance.now() - started), sessions, callThread, keys }, 'warm-up');
}

/** The XKS listeners' limits from the config, and the fixed ones of the admin and operations listeners. */
function connectionLimits(loaded: LoadedConfig, ops: boolean, logger: Logger): { xks: ConnectionLimits; small: ConnectionLimits } {
  const l = loaded.config.listeners;
  const timeouts = { headersTimeoutMs: l.headersTimeoutMs, idleTimeoutMs: l.idleTimeoutMs };
  const xksListeners = (l.http ? 1 : 0) + (l.https ? 1 : 0);
  const small = (l.ops && ops ? 1 : 0) + (loaded.admin ? 1 : 0);
  const { maxConnections, lowered } = xksConnectionLimit(l.maxConnections, xksListeners, small);
  if (lowered) logger.warn({ configured: l.maxConnections, maxConnections }, 'listeners.maxConnections lowered to stay below the descriptor limit');
  return { xks: { maxConnections, ...timeouts }, small: { maxConnections: SMALL_LISTENER_CONNECTIONS, ...timeouts } };
}

function isLoopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.') || address === '::ffff:127.0.0.1';
}
