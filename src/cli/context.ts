// What every command needs: the config (from --config or XKS_CONFIG) and a connection to the token.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { configPath, loadFile, type LoadedFile } from '../config/load.js';
import type { HsmConnection } from '../hsm/hsm-connection.js';
import { openHsm } from '../proxy.js';

export function withConfigOption(cmd: Command): Command {
  return cmd.option('-c, --config <file>', 'configuration file (default: $XKS_CONFIG)');
}

/**
 * The config with the HSM PIN (`pin: false`: without), and no other secret: a command reads only the secrets it uses
 * (a CLI-only host has no SigV4 or admin secret). What loading let through with a warning goes to stderr.
 */
export function loadFor(cmd: Command, opts: { pin?: boolean } = {}): LoadedFile {
  const { config } = cmd.optsWithGlobals<{ config?: string }>();
  const loaded = loadFile(configPath(config), opts);
  for (const w of loaded.warnings) warnOnStderr(w);
  return loaded;
}

/** Open the token, run `fn`, always close it (C_Finalize), even when `fn` fails. */
export async function withHsm<T>(cmd: Command, fn: (hsm: HsmConnection, loaded: LoadedFile) => Promise<T>): Promise<T> {
  const loaded = loadFor(cmd);
  const hsm = await openHsm(loaded);
  try {
    return await fn(hsm, loaded);
  } finally {
    hsm.close();
  }
}

export function warnOnStderr(warning: string): void {
  console.error(`xks: warning: ${warning}`);
}

/** A file a command was pointed at, or a sentence naming it (`what`: the option or the thing it holds) and why not. */
export function readInput(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new Error(`${what}: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}
