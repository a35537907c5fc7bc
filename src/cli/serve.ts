// `xks serve`: run the proxy in the foreground until SIGINT or SIGTERM, in one process or in N worker processes.
import cluster from 'node:cluster';
import { Command } from 'commander';
import { createLogger, type Logger } from '../obs/logger.js';
import { startProxy } from '../proxy.js';
import { loadConfig, type LoadedConfig } from '../config/load.js';
import { loadFor, withConfigOption } from './context.js';

function parseWorkers(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new Error('--workers takes a whole number from 1 to 64');
  return n;
}

export function serveCommand(): Command {
  return withConfigOption(new Command('serve').description('run the XKS proxy'))
    .option('--workers <n>', 'worker processes sharing the listeners, each with its own PKCS#11 library (default 1)', parseWorkers, 1)
    .action(async (opts: { workers: number }, cmd: Command) => {
      const loaded = loadFor(cmd);
      const logger = createLogger(loaded.config.log.level);
      if (opts.workers > 1 && cluster.isPrimary) {
        superviseWorkers(opts.workers, logger);
        return;
      }
      await serveOne(loaded, logger);
    });
}

async function serveOne(loaded: LoadedConfig, logger: Logger): Promise<void> {
  const proxy = await startProxy(loaded, logger);
  // SIGHUP re-reads the config file: prefixes, SigV4 credentials and key allow-lists change without a restart (this is
  // how credentials are rotated: add the new one, update the key store in KMS, remove the old one). A config that does
  // not load is refused and the running one stays. HSM and listener settings need a restart.
  process.on('SIGHUP', () => {
    try {
      const next = loadConfig(loaded.file);
      proxy.reload(next);
      logger.info({ file: loaded.file, prefixes: next.prefixes.map((p) => p.path) }, 'configuration reloaded');
    } catch (e) {
      logger.error({ file: loaded.file, reason: (e as Error).message }, 'configuration reload refused; keeping the running one');
    }
  });
  const { http, https } = proxy.listening;
  logger.info(
    {
      http: http ? `${http.address}:${http.port}` : undefined,
      https: https ? `${https.address}:${https.port}` : undefined,
      token: proxy.hsm.info.label,
      prefixes: loaded.prefixes.map((p) => p.path),
      worker: cluster.isWorker ? cluster.worker?.id : undefined,
    },
    'xks proxy listening',
  );
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
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
 * The primary process: forks the workers one after another (SoftHSM logins race when processes start at the same
 * moment), replaces a worker that dies, and forwards SIGINT/SIGTERM so that each drains and calls C_Finalize.
 */
function superviseWorkers(count: number, logger: Logger): void {
  let stopping = false;
  const served = new Set<number>(); // workers that reached 'listening'
  const forkOne = () =>
    new Promise<void>((resolve) => {
      const w = cluster.fork();
      w.once('listening', () => {
        served.add(w.id);
        resolve();
      });
      w.once('exit', () => resolve());
    });
  const start = async () => {
    for (let i = 0; i < count && !stopping; i++) await forkOne();
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
    setTimeout(() => void forkOne(), 1_000);
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
  process.on('SIGHUP', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
  });
  void start();
}
