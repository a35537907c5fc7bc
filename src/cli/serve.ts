// `xks serve`: run the proxy in the foreground until SIGINT or SIGTERM, in one process or in N worker processes.
import cluster from 'node:cluster';
import { unwatchFile, watchFile } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Command } from 'commander';
import client from 'prom-client';
import { createOpsHandler } from '../http/ops-handler.js';
import { SMALL_LISTENER_CONNECTIONS, startListeners } from '../http/listeners.js';
import { Incidents } from '../obs/incidents.js';
import { createLogger, type Logger } from '../obs/logger.js';
import { startProxy, type RunningProxy } from '../proxy.js';
import { serveFileFindings, startUpRefusal } from '../config/config-check.js';
import { configPath, ConfigError, loadConfig, servingIssues, type LoadedConfig } from '../config/load.js';
import { changesNeedingRestart } from '../config/reload-scope.js';
import { withConfigOption } from './context.js';
import { runHsmCheck } from './hsm.js';

function parseWorkers(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new Error('--workers takes a whole number from 1 to 64');
  return n;
}

export function serveCommand(): Command {
  return withConfigOption(new Command('serve').description('run the XKS proxy'))
    .option(
      '--workers <n>',
      `worker processes sharing the listeners, each with its own PKCS#11 library (default: one per core, here ${availableParallelism()})`,
      parseWorkers,
    )
    .action(async (opts: { workers?: number }, cmd: Command) => {
      // Every secret: serving needs the PIN, the key stores' and the admin API's.
      const loaded = loadConfig(configPath(cmd.optsWithGlobals<{ config?: string }>().config));
      const cannot = servingIssues(loaded.config);
      if (cannot.length) throw new ConfigError(`${loaded.file} cannot serve:\n${cannot.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`);
      const logger = createLogger(loaded.config.log.level);
      for (const w of loaded.warnings) logger.warn({ warning: w }, 'configuration warning');
      // `xks config check`'s checks of the TLS files, the mTLS CA and the ports, once (workers run this action too).
      if (cluster.isPrimary) {
        const findings = serveFileFindings(loaded.config);
        const refusal = startUpRefusal(loaded.file, findings);
        if (refusal) throw refusal;
        for (const f of findings.filter((x) => x.status === 'warn')) logger.warn({ setting: f.where, warning: f.message }, 'configuration warning');
      }
      const workers = opts.workers ?? Math.min(64, availableParallelism());
      // Workers get a larger young generation (below); a single process started without it runs as one worker too.
      if (cluster.isPrimary && (workers > 1 || !hasSemiSpaceFlag(process.execArgv))) {
        await superviseWorkers(workers, loaded, logger);
        return;
      }
      await serveOne(loaded, logger);
    });
}

async function serveOne(loaded: LoadedConfig, logger: Logger): Promise<void> {
  const slot = process.env.XKS_WORKER_SLOT;
  // The first process to open the HSM checks the token first (`xks hsm check`) and logs what it found.
  if (!cluster.isWorker || slot === '1') await logHsmCheck(loaded, logger);
  const proxy = await startProxy(
    loaded,
    logger,
    cluster.isWorker
      ? {
          registry: client.register,
          ops: false,
          auditRole: `w${slot ?? cluster.worker?.id}`,
          // Each worker enforces its share of a key store's rate limit; together they enforce the configured rate.
          rateShare: 1 / Math.max(1, Number(process.env.XKS_WORKERS ?? 1)),
          // One worker counts the keys for xks_keys (a search of the whole token): the primary shows the first count.
          countKeys: loaded.config.listeners.ops !== undefined && slot === '1',
        }
      : {},
  );
  if (cluster.isWorker) {
    answerHealthQueries(proxy);
    // prom-client answers the primary's metrics requests only once an AggregatorRegistry exists in the worker too.
    new client.AggregatorRegistry();
  }
  // SIGHUP, or a change of the config file, re-reads it: prefixes, SigV4 credentials, key allow-lists, policies and
  // rate limits change without a restart or a dropped connection (this is how credentials are rotated: add the new
  // one, update the key store in KMS, remove the old one). A config that does not load is refused with a log line and
  // the running one stays. The settings read at start-up only (HSM, listeners, audit...) are accepted but wait for a
  // restart: one warning per section that changed, so an edit is never silently without effect.
  const reload = (why: string) => {
    try {
      const next = loadConfig(loaded.file);
      const cannot = servingIssues(next.config);
      if (cannot.length) throw new ConfigError(cannot.map((i) => `${i.path}: ${i.message}`).join('; '));
      proxy.reload(next);
      for (const w of next.warnings) logger.warn({ warning: w }, 'configuration warning');
      for (const c of changesNeedingRestart(loaded.config, next.config)) {
        logger.warn({ file: loaded.file, section: c.section, fields: c.fields }, 'configuration change ignored until a restart');
      }
      logger.info({ file: loaded.file, why, files: next.files, prefixes: next.prefixes.map((p) => p.path) }, 'configuration reloaded');
      if (!cluster.isWorker) watchConfig(next.files, () => reload('file changed'));
    } catch (e) {
      logger.error({ file: loaded.file, why, reason: (e as Error).message }, 'configuration reload refused; keeping the running one');
    }
  };
  process.on('SIGHUP', () => reload('SIGHUP'));
  // Under --workers the primary watches the file and signals every worker at once, so they never disagree for long.
  if (!cluster.isWorker) watchConfig(loaded.files, () => reload('file changed'));
  const { http, https } = proxy.listening;
  logger.info(
    {
      http: http ? `${http.address}:${http.port}` : undefined,
      https: https ? `${https.address}:${https.port}` : undefined,
      token: proxy.hsm.info.label,
      prefixes: loaded.prefixes.map((p) => p.path),
      worker: cluster.isWorker ? cluster.worker?.id : undefined,
      pid: process.pid,
    },
    'xks proxy listening',
  );
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    unwatchAll();
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    // Drain requests in flight, then C_Finalize.
    proxy.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

/**
 * `xks hsm check` once at start-up, before the HsmConnection opens: one `hsm check` line with every probe's status, and
 * a warning per probe that is not ok. The check loads, uses and finalises the library; the HsmConnection initialises it
 * again (checked on SoftHSM and NSS). A failed login stops here: trying the wrong PIN again could lock the token.
 */
async function logHsmCheck(loaded: LoadedConfig, logger: Logger): Promise<void> {
  let report;
  try {
    report = await runHsmCheck(loaded);
  } catch (e) {
    logger.warn({ reason: (e as Error).message }, 'hsm check could not run');
    return;
  }
  if (report.stoppedAt === 'login') throw new Error(report.reason);
  // No library or no token: opening the HSM says so next, in its own words.
  if (report.stoppedAt) return;
  logger.info(
    { token: report.token?.label, canServe: report.canServe, reason: report.reason, probes: Object.fromEntries(report.rows.map((r) => [r.name, r.status])) },
    'hsm check',
  );
  for (const r of report.rows) {
    if (r.status === 'warn' || r.status === 'fail') {
      logger.warn({ probe: r.name, status: r.status, needed: r.needed, result: r.result, consequence: r.consequence }, 'hsm check finding');
    }
  }
}

/**
 * The primary process: forks the workers one after another (SoftHSM logins race when processes start at the same
 * moment), replaces a worker that dies, and forwards SIGINT/SIGTERM so that each drains and calls C_Finalize.
 */
/**
 * V8 flags for the workers. A young generation of 32 MB semi-spaces instead of 16, so that a request's objects die
 * young. And no allocation-site pretenuring: after a burst at saturation V8 starts allocating the hot path's objects
 * straight in old space and keeps doing so, and the old generation's collections (10-15 ms every few seconds) then set
 * the p99. npm run bench at 1,800 req/s after its closed-loop phase: p99 from 1.9 to 0.74 ms, p99.9 from 15 to 2.2 ms.
 */
const HEAP_FLAGS = ['--max-semi-space-size=32', '--no-allocation-site-pretenuring'];

function hasSemiSpaceFlag(execArgv: string[]): boolean {
  return execArgv.some((a) => a.startsWith('--max-semi-space-size'));
}

async function superviseWorkers(count: number, loaded: LoadedConfig, logger: Logger): Promise<void> {
  if (!hasSemiSpaceFlag(process.execArgv)) cluster.setupPrimary({ execArgv: [...process.execArgv, ...HEAP_FLAGS] });
  let stopping = false;
  const served = new Set<number>(); // workers that reached 'listening'
  const slots = new Map<number, number>(); // worker id -> slot (a replacement takes over its slot's audit trail)
  const forkOne = (slot: number) =>
    new Promise<void>((resolve) => {
      const w = cluster.fork({ XKS_WORKER_SLOT: String(slot), XKS_WORKERS: String(count) });
      slots.set(w.id, slot);
      w.once('listening', () => {
        served.add(w.id);
        resolve();
      });
      w.once('exit', () => resolve());
    });
  const start = async () => {
    for (let i = 1; i <= count && !stopping; i++) await forkOne(i);
  };
  cluster.on('exit', (w, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(process.exitCode ?? 0);
      return;
    }
    if (!served.has(w.id)) {
      // It never started (wrong PIN, missing token, bad config): retrying would repeat failed logins, which lock
      // or zeroise some HSM partitions. Stop everything and say so.
      logger.error({ worker: w.id, code, signal }, 'worker failed to start; stopping');
      process.exitCode = 1;
      stop('SIGTERM');
      return;
    }
    logger.warn({ worker: w.id, code, signal }, 'worker exited; starting another');
    const slot = slots.get(w.id) ?? w.id;
    slots.delete(w.id);
    setTimeout(() => void forkOne(slot), 1_000);
  });
  function stop(signal: NodeJS.Signals): void {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, workers: count }, 'shutting down workers');
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(1), 12_000).unref();
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(process.exitCode ?? 0);
  }
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  const signalWorkers = () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
  };
  process.on('SIGHUP', signalWorkers);
  // The config file and its overrides file; an overrides file named later is watched from the next restart.
  watchConfig(loaded.files, () => {
    logger.info({ file: loaded.file }, 'configuration file changed: reloading every worker');
    signalWorkers();
  });
  void start();
  watchWorkers(loaded.config.health.replaceWorkerAfterSeconds * 1_000, logger, () => stopping, (id) => served.has(id));
  // The operations listener lives here: /metrics aggregates the workers' registries, /health asks every worker.
  const ops = loaded.config.listeners.ops;
  if (ops) {
    const aggregator = new client.AggregatorRegistry();
    const l = loaded.config.listeners;
    const listening = await startListeners(
      { http: ops },
      createOpsHandler({
        metrics: async () => ({ contentType: aggregator.contentType, body: await aggregator.clusterMetrics() }),
        health: () => workersHealth(count),
      }),
      new Incidents(logger, loaded.config.log.repeatWindowSeconds * 1000),
      { maxConnections: SMALL_LISTENER_CONNECTIONS, headersTimeoutMs: l.headersTimeoutMs, idleTimeoutMs: l.idleTimeoutMs },
      'ops',
    );
    logger.info({ ops: `${listening.http!.address}:${listening.http!.port}`, workers: count }, 'operations listener (/metrics, /health, /ping)');
  }
}

const watched = new Set<string>();

/**
 * Polling the file's stat follows symlinks, so a Kubernetes ConfigMap update (an atomic symlink swap) is seen too.
 * The config file and its overrides file; a file already watched is not watched twice.
 */
function watchConfig(files: string[], changed: () => void): void {
  for (const file of files) {
    if (watched.has(file)) continue;
    watched.add(file);
    watchFile(file, { interval: 2_000, persistent: false }, (now, before) => {
      if (now.mtimeMs !== before.mtimeMs || now.size !== before.size || now.ino !== before.ino) changed();
    });
  }
}

function unwatchAll(): void {
  for (const file of watched) unwatchFile(file);
  watched.clear();
}

interface HealthAnswer {
  xks: 'health';
  query: number;
  status: string;
  token?: string;
  detail?: string;
}

/**
 * Worker side: answer the primary's health query with this worker's own deep health check, and take the primary's word
 * for how many sibling workers fail theirs.
 */
function answerHealthQueries(proxy: RunningProxy): void {
  process.on('message', (m: { xks?: string; query?: number; siblingsUnavailable?: number }) => {
    if (m?.xks === 'siblings' && typeof m.siblingsUnavailable === 'number') proxy.health.siblingsUnavailable = m.siblingsUnavailable;
    if (m?.xks !== 'health?') return;
    void proxy.health.current().then((r) =>
      process.send?.({ xks: 'health', query: m.query, status: r.status, token: proxy.hsm.info.label, ...(r.detail ? { detail: r.detail } : {}) }),
    );
  });
}

let queries = 0;
/** Health queries waiting for the workers' answers, by query number. */
const pendingHealth = new Map<number, (worker: number, m: HealthAnswer) => void>();
let listeningForHealth = false;

interface WorkerHealth {
  worker: number;
  /** A worker that did not answer within a second reads UNAVAILABLE. */
  status: string;
  token?: string;
  detail?: string;
}

/**
 * Primary side: the worst answer of all `count` workers within a second (ACTIVE only when every one is; a worker still
 * starting does not answer, and reads UNAVAILABLE: the process is not ready until every worker is). One 'message' listener for every query: a listener per
 * query and worker piled up under concurrent probes (MaxListenersExceededWarning).
 */
function workersHealth(count: number): Promise<{ status: string; workers: WorkerHealth[] }> {
  if (!listeningForHealth) {
    listeningForHealth = true;
    cluster.on('message', (w, m: HealthAnswer) => {
      if (m?.xks === 'health') pendingHealth.get(m.query)?.(w.id, m);
    });
  }
  const query = ++queries;
  const workers = Object.values(cluster.workers ?? {}).filter((w) => w !== undefined);
  return new Promise((resolve) => {
    const answers = new Map<number, HealthAnswer>();
    const done = () => {
      pendingHealth.delete(query);
      clearTimeout(timer);
      const list = workers.map((w): WorkerHealth => {
        const a = answers.get(w.id);
        if (!a) return { worker: w.id, status: 'UNAVAILABLE', detail: 'did not answer within a second' };
        return { worker: w.id, status: a.status, ...(a.token ? { token: a.token } : {}), ...(a.detail ? { detail: a.detail } : {}) };
      });
      // The worst of the workers' answers; UNAVAILABLE until every worker answers.
      const all = list.length >= count && list.length > 0;
      const status = !all || list.some((a) => a.status !== 'ACTIVE' && a.status !== 'DEGRADED') ? 'UNAVAILABLE' : list.some((a) => a.status === 'DEGRADED') ? 'DEGRADED' : 'ACTIVE';
      resolve({ status, workers: list });
    };
    pendingHealth.set(query, (worker, m) => {
      answers.set(worker, m);
      if (answers.size === workers.length) done();
    });
    const timer = setTimeout(done, 1_000);
    for (const w of workers) w.send({ xks: 'health?', query });
    if (workers.length === 0) done();
  });
}

/**
 * Primary side, every 2 s: ask every worker for its health, tell each how many of its siblings fail (its GetHealthStatus
 * answer says DEGRADED then), and replace a worker that has failed for `replaceAfterMs` while another passes: the HSM
 * is fine, that worker's library is not. While every worker fails (the HSM is away) none is replaced: each keeps
 * recovering on its own, and a new process could not start either.
 */
function watchWorkers(replaceAfterMs: number, logger: Logger, stopping: () => boolean, serving: (worker: number) => boolean): void {
  const failingSince = new Map<number, number>();
  let busy = false;
  const tick = async () => {
    if (busy || stopping()) return;
    busy = true;
    try {
      // A worker still starting has not answered yet: it is neither failing nor a sibling that fails.
      const workers = (await workersHealth(0)).workers.filter((w) => serving(w.worker));
      const now = Date.now();
      // DEGRADED serves (an audit trail that cannot be sealed under audit.onFailure serve): not a reason to replace.
      const failing = new Set(workers.filter((w) => w.status === 'UNAVAILABLE').map((w) => w.worker));
      for (const id of [...failingSince.keys()]) if (!failing.has(id)) failingSince.delete(id);
      for (const id of failing) if (!failingSince.has(id)) failingSince.set(id, now);
      for (const w of workers) {
        const siblingsUnavailable = failing.size - (failing.has(w.worker) ? 1 : 0);
        cluster.workers?.[w.worker]?.send({ xks: 'siblings', siblingsUnavailable });
      }
      if (failing.size === workers.length) return;
      for (const [id, since] of failingSince) {
        if (now - since < replaceAfterMs) continue;
        const w = workers.find((x) => x.worker === id);
        logger.warn({ worker: id, failingForMs: now - since, detail: w?.detail }, 'worker fails its health check while others pass; replacing it');
        failingSince.delete(id);
        cluster.workers?.[id]?.process.kill('SIGTERM');
      }
    } finally {
      busy = false;
    }
  };
  setInterval(() => void tick(), 2_000).unref();
}
