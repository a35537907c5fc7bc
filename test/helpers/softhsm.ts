// A real SoftHSMv2 token for one test file: its own directory, config and PINs, removed afterwards.
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { initToken } from '../../src/hsm/token-init.js';

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

export interface TestToken {
  dir: string;
  conf: string;
  label: string;
  userPin: string;
  soPin: string;
  serial: string;
  cleanup(): void;
}

/** Creates a token directory and points this process's SOFTHSM2_CONF at it (set before any C_Initialize). */
export function createTestToken(label = 'xks-test'): TestToken {
  const dir = mkdtempSync(join(tmpdir(), 'xks-softhsm-'));
  mkdirSync(join(dir, 'tokens'));
  const conf = join(dir, 'softhsm2.conf');
  const template = readFileSync(new URL('../../softhsm-config/softhsm2.conf.template', import.meta.url), 'utf8');
  writeFileSync(conf, template.replaceAll('@TOKENDIR@', join(dir, 'tokens')));
  process.env.SOFTHSM2_CONF = conf;
  const userPin = randomBytes(8).toString('hex');
  const soPin = randomBytes(8).toString('hex');
  const { serial } = initToken({ modulePath: SOFTHSM_MODULE, label, soPin, userPin });
  return { dir, conf, label, userPin, soPin, serial, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
