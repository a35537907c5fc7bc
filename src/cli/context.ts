// What every command needs: the config (from --config or XKS_CONFIG) and a connection to the token.
import type { Command } from 'commander';
import { configPath, loadConfig, type LoadedConfig } from '../config/load.js';
import type { HsmConnection } from '../hsm/hsm-connection.js';
import { openHsm } from '../proxy.js';

export function withConfigOption(cmd: Command): Command {
  return cmd.option('-c, --config <file>', 'configuration file (default: $XKS_CONFIG)');
}

/** The config; what loading let through with a warning goes to stderr, or to `warn` (xks serve: the log). */
export function loadFor(cmd: Command, warn: (warning: string) => void = (w) => console.error(`xks: warning: ${w}`)): LoadedConfig {
  const opts = cmd.optsWithGlobals<{ config?: string }>();
  const loaded = loadConfig(configPath(opts.config));
  for (const w of loaded.warnings) warn(w);
  return loaded;
}

/** Open the token, run `fn`, always close it (C_Finalize), even when `fn` fails. */
export async function withHsm<T>(cmd: Command, fn: (hsm: HsmConnection, loaded: LoadedConfig) => Promise<T>): Promise<T> {
  const loaded = loadFor(cmd);
  const hsm = await openHsm(loaded);
  try {
    return await fn(hsm, loaded);
  } finally {
    hsm.close();
  }
}
