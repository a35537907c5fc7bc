// A decrypt naming a key version the cache does not know re-reads the token (another replica may have rotated a
// moment ago), but not on every request: a flood of ciphertexts naming a version that does not exist (KMS passes
// ciphertextMetadata through) made one token search each, 11 times slower than a decrypt. Searches are counted by our
// emulator module. A version rotated in by another process is still found, within the documented second.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { openCatalogue } from '../../src/proxy.js';
import { encodeCiphertextMetadata } from '../../src/xks/ciphertext-metadata.js';
import { EncryptionBudget } from '../../src/xks/encryption-budget.js';
import { encrypt } from '../../src/xks/operations.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { decryptFields, metadata, xksClient } from '../helpers/xks-client.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** How often a key may be re-read for a version it lacks (src/proxy.ts openCatalogue; README, "Key lifecycle"). */
const VERSION_REFRESH_MS = 1_000;

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('a decrypt naming a version the cache does not know', () => {
  let t: TestProxy;
  let control: EmulatorControl;
  let searches: string;
  let xks: ReturnType<typeof xksClient>;
  const setControl = (text: string) => control.set(text);
  const searchCount = () => (existsSync(searches) ? readFileSync(searches, 'utf8').split('\n').filter(Boolean).length : 0);

  beforeAll(async () => {
    ensureBuilt();
    buildEmulator();
    const token = createTestToken('versions');
    control = emulatorControl(token);
    searches = join(token.dir, 'searches');
    t = await startProxyOnToken({
      token,
      // The cache is refreshed by its TTL only after a minute: every search in these tests is one a decrypt forced.
      config: { hsm: { ...control.hsm(), keyCacheTtlMs: 60_000 } },
      keys: { foo: { encrypt: true, decrypt: true } },
    });
    xks = xksClient(t.httpUrl);
  }, 60_000);
  afterAll(async () => {
    if (control) await setControl('');
    await t?.stop();
  });

  it('a burst naming version 999 makes at most one token search per second, and each answers InvalidCiphertextException', async () => {
    const enc = await xks.encrypt('foo', Buffer.from('under version 1'));
    expect(enc.status, enc.text).toBe(200);
    const v999 = { ...decryptFields(enc.json), ciphertextMetadata: encodeCiphertextMetadata(999).toString('base64') };
    // The first encrypt of a version reserves its next block of encryptions in the background (a search of its own).
    await sleep(300);
    rmSync(searches, { force: true });
    await setControl(`count C_FindObjectsInit ${searches}\n`);
    const started = performance.now();
    const answers = [];
    for (let i = 0; i < 40; i++) answers.push(await xks.decrypt('foo', v999));
    for (let i = 0; i < 4; i++) answers.push(...(await Promise.all(Array.from({ length: 10 }, () => xks.decrypt('foo', v999)))));
    const elapsed = performance.now() - started;
    const made = searchCount();
    await setControl('');
    for (const a of answers) expect(a.json?.errorName, a.text).toBe('InvalidCiphertextException');
    expect(made, `${made} searches for ${answers.length} decrypts in ${elapsed.toFixed(0)} ms`).toBeGreaterThanOrEqual(1);
    expect(made, `${made} searches for ${answers.length} decrypts in ${elapsed.toFixed(0)} ms`).toBeLessThanOrEqual(1 + Math.floor(elapsed / VERSION_REFRESH_MS));
    // Version 1 still decrypts meanwhile.
    expect((await xks.decrypt('foo', decryptFields(enc.json))).status).toBe(200);
  });

  it('a version rotated in by another process decrypts within a second of the rotation, long before the cache TTL', async () => {
    const enc1 = await xks.encrypt('foo', Buffer.from('before'));
    const current = Buffer.from(enc1.json.ciphertextMetadata, 'base64').readUInt32BE(1);
    const next = current + 1;
    // A decrypt naming the next version before it exists: refused, and the key's read is remembered.
    const early = await xks.decrypt('foo', { ...decryptFields(enc1.json), ciphertextMetadata: encodeCiphertextMetadata(next).toString('base64') });
    expect(early.json.errorName).toBe('InvalidCiphertextException');
    // Another process rotates.
    const rotated = await runXks(['keys', 'rotate', 'foo'], { token: t.token, configFile: t.configFile });
    expect(rotated.code, rotated.stderr).toBe(0);
    const rotatedAt = performance.now();
    // A ciphertext under the new version, as another replica (its own catalogue, reading the token afresh) makes it.
    const loaded = loadConfig(t.configFile);
    const other = { hsm: t.proxy.hsm, catalogue: openCatalogue(t.proxy.hsm, loaded), encryptions: new EncryptionBudget(t.proxy.hsm, loaded.config.encryptionLimits) };
    const made = await encrypt(other, 'foo', { requestMetadata: metadata('Encrypt'), plaintext: Buffer.from('after'), encryptionAlgorithm: 'AES_GCM' });
    expect(made.keyVersion).toBe(next);
    let dec = await xks.decrypt('foo', decryptFields(made.body));
    while (dec.status !== 200 && performance.now() - rotatedAt < 5_000) {
      await sleep(50);
      dec = await xks.decrypt('foo', decryptFields(made.body));
    }
    const ms = performance.now() - rotatedAt;
    expect(dec.status, dec.text).toBe(200);
    expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe('after');
    // The bound is VERSION_REFRESH_MS after the last forced read; the margin is for a loaded machine.
    expect(ms, `found ${ms.toFixed(0)} ms after the rotation`).toBeLessThan(VERSION_REFRESH_MS + 1_500);
  });
});
