// Our PKCS#11 emulator (test/emulator/pkcs11-emulator.c) in front of a test token, and its control file, through which
// a test injects faults at run time (`fail`, `hang`, `throttle`, `slot_offset`, `count`; see the emulator's header).
import { execFileSync } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT } from './built-cli.js';
import type { TestToken } from './test-token.js';

export const EMULATOR = join(ROOT, 'test/emulator/build/libxks-emulator.so');

/** Build the emulator if its source is newer than the library (scripts/setup.sh builds it too). */
export function buildEmulator(): void {
  execFileSync('bash', [join(ROOT, 'scripts/build-emulator.sh')], { stdio: 'pipe' });
}

export interface EmulatorControl {
  path: string;
  /** Replace the rules (atomically), then wait until the emulator has seen them: it looks at most every 2 ms. */
  set(text: string): Promise<void>;
  /** The config's hsm settings that load the emulator with this control file. */
  hsm(vendor?: string): { module: string; libraryParameters: string };
}

/** An empty control file next to the token (in its directory: any directory the test owns). */
export function emulatorControl(token: Pick<TestToken, 'dir'>): EmulatorControl {
  const path = join(token.dir, 'emulator-control');
  writeFileSync(path, '');
  return {
    path,
    async set(text) {
      writeFileSync(`${path}.new`, text);
      renameSync(`${path}.new`, path);
      await sleep(10);
    },
    hsm: (vendor = 'none') => ({ module: EMULATOR, libraryParameters: `vendor=${vendor} control=${path}` }),
  };
}
