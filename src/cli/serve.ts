// `xks serve`: run the proxy in the foreground until SIGINT or SIGTERM, in one process or in N worker processes.
import cluster from 'node:cluster';
import { Command } from 'commander';
import { createLogger, type Logger } from '../obs/logger.js';
import { startProxy } from '../proxy.js';
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

async function serveOne(loaded: ReturnType<typeof loadFor>, logger: Logger): Promise<void> {
  const proxy = await startProxy(loaded, logger);
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
  const forkOne = () =>
    new Promise<void>((resolve) => {
      const w = cluster.fork();
      w.once('listening', () => resolve());
      w.once('exit', () => resolve());
    });
  const start = async () => {
    for (let i = 0; i < count && !stopping; i++) await forkOne();
  };
  cluster.on('exit', (w, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      return;
    }
    logger.warn({ worker: w.id, code, signal }, 'worker exited; starting another');
    setTimeout(() => void forkOne(), 500);
  });
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, workers: count }, 'shutting down workers');
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(1), 12_000).unref();
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  void start();
}
