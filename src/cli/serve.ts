// `xks serve`: run the proxy in the foreground until SIGINT or SIGTERM.
import { Command } from 'commander';
import { createLogger } from '../obs/logger.js';
import { startProxy } from '../proxy.js';
import { loadFor, withConfigOption } from './context.js';

export function serveCommand(): Command {
  return withConfigOption(new Command('serve').description('run the XKS proxy')).action(async (_opts, cmd: Command) => {
    const loaded = loadFor(cmd);
    const logger = createLogger(loaded.config.log.level);
    const proxy = await startProxy(loaded, logger);
    const { http, https } = proxy.listening;
    logger.info(
      {
        http: http ? `${http.address}:${http.port}` : undefined,
        https: https ? `${https.address}:${https.port}` : undefined,
        token: proxy.hsm.info.label,
        prefixes: loaded.prefixes.map((p) => p.path),
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
      proxy.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
}
