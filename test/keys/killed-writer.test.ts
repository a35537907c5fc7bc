// A rotation or an import killed between making its candidate and committing it must not block its key: the next
// attempt recognises the dead writer's claim at once (a lease that names the writer's process, claims.ts) instead of
// waiting 60 s for it, and an import token is spent only by a commit, so the customer's retry with the same token works.
// A live writer is still never overrun: on this host its process is alive, from another host its lease keeps being
// renewed. The CLI runs through our PKCS#11 emulator (test/emulator), whose control file holds every C_GenerateKey for
// a while, so the process can be killed with SIGKILL once its candidate is in the token and before its commit marker.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImportService } from '../../src/import/import-service.js';
import { GENERIC_SECRET_KEY_GEN } from '../../src/hsm/mechanisms.js';
import { aes256KeyTemplate, inertSecretTemplate } from '../../src/hsm/templates.js';
import { leaseId } from '../../src/keys/claims.js';
import { KeyError } from '../../src/keys/errors.js';
import { materialId, newNonce } from '../../src/keys/key-objects.js';
import { MAIN, ensureBuilt, ROOT } from '../helpers/built-cli.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';
import { expectProxyUses, wrapMaterial } from '../import/byok.js';
import { describeViaCli, expectCleanVersions, pollUntil, runCli, tokenObjects, versionOf } from './lifecycle-support.js';

const leases = async (t: TestProxy, id: string) =>
  (await t.proxy.hsm.findSecretKeys({ label: id })).filter((o) => o.id.toString('latin1').startsWith('xks:l2;'));

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('a writer killed between its candidate and its commit', () => {
  let t: TestProxy;
  let control: string;
  let emulated: string;
  const setControl = (text: string) => {
    writeFileSync(`${control}.new`, text);
    renameSync(`${control}.new`, control);
  };

  beforeAll(async () => {
    ensureBuilt();
    execFileSync('bash', [join(ROOT, 'scripts/build-emulator.sh')], { stdio: 'pipe' });
    const token = createTestToken('killed');
    control = join(token.dir, 'emulator-control');
    writeFileSync(control, '');
    t = await startProxyOnToken({ token });
    emulated = writeTestConfig(
      token,
      { hsm: { module: join(ROOT, 'test/emulator/build/libxks-emulator.so'), libraryParameters: `vendor=none control=${control}` } },
      'emulated.yaml',
    );
  }, 120_000);
  afterAll(async () => {
    setControl('');
    await t?.stop();
  });

  /**
   * `xks ...args` through the emulator, with every C_GenerateKey held 5 s, killed with SIGKILL as soon as key `id` has
   * a candidate for `version` in the token (read by this process, straight from SoftHSM).
   */
  async function killAtCandidate(id: string, version: number, args: string[]): Promise<void> {
    setControl('hang C_GenerateKey 5000\n');
    const child = spawn('node', [MAIN, ...args], { cwd: ROOT, env: { ...process.env, ...t.token.env, XKS_CONFIG: emulated }, stdio: 'pipe' });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise((r) => child.once('exit', r));
    try {
      await pollUntil(`a candidate for version ${version} (${out})`, 40_000, async () => {
        if (child.exitCode !== null) throw new Error(`xks ${args.join(' ')} ended before it made its candidate: ${out}`);
        return (await tokenObjects(t.proxy.hsm, id)).candidates.includes(version);
      });
    } finally {
      child.kill('SIGKILL');
      await exited;
      setControl('');
    }
    // Killed between its candidate and its commit marker.
    const objs = await tokenObjects(t.proxy.hsm, id);
    expect(objs.candidates).toEqual([version]);
    expect(objs.versions.has(version)).toBe(false);
  }

  it('a rotation killed after making its candidate: the next rotation goes ahead at once and clears what it left', async () => {
    const id = 'killed-rotation';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true } });
    const xks = xksClient(t.httpUrl);
    const before = await xks.encrypt(id, Buffer.from('before'));
    await killAtCandidate(id, 2, ['keys', 'rotate', id, '--json']);

    const retry = await runCli(t.token, t.configFile, ['keys', 'rotate', id, '--json']);
    expect(retry.code, retry.stderr).toBe(0);
    expect(JSON.parse(retry.stdout)).toEqual({ KeyId: id, Rotated: true, Version: 2 });
    // At once: no waiting out the dead writer's claim (it used to take 10 s, then ConflictException, for 60 s).
    expect(retry.endedMs - retry.startedMs).toBeLessThan(8_000);
    await expectCleanVersions(t.proxy.hsm, id, 2);
    expect(await leases(t, id)).toEqual([]);
    await t.proxy.catalogue.refresh(id);
    expect((await xks.decrypt(id, decryptFields(before.json))).status).toBe(200);
    expect(versionOf((await xks.encrypt(id, Buffer.from('after'))).json)).toBe(2);
  }, 90_000);

  it('an import killed after making its candidate leaves its token unspent: the retry with the same token imports at once, and spends it', async () => {
    const id = 'killed-import';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const svc = new ImportService(t.proxy.hsm, t.proxy.catalogue, t.proxy.lifecycle);
    const p = await svc.getParametersForImport({ KeyId: id, WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256', WrappingKeySpec: 'RSA_2048' });
    const material = randomBytes(32);
    const tokenFile = join(t.token.dir, 'ImportToken.bin');
    const blobFile = join(t.token.dir, 'EncryptedKeyMaterial.bin');
    writeFileSync(tokenFile, p.ImportToken, { mode: 0o600 });
    writeFileSync(blobFile, wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, material), { mode: 0o600 });
    const args = ['import', 'key-material', '--key-id', id, '--import-token', tokenFile, '--encrypted-key-material', blobFile];
    const imported = [...args, '--expiration-model', 'KEY_MATERIAL_DOES_NOT_EXPIRE', '--json'];
    await killAtCandidate(id, 1, imported);

    const retry = await runCli(t.token, t.configFile, imported);
    expect(retry.code, retry.stderr).toBe(0);
    expect(JSON.parse(retry.stdout)).toMatchObject({ KeyId: id, KeyMaterialVersion: 1, KeyState: 'Enabled' });
    expect(retry.endedMs - retry.startedMs).toBeLessThan(8_000);
    await expectCleanVersions(t.proxy.hsm, id, 1);
    expect(await leases(t, id)).toEqual([]);
    await t.proxy.catalogue.refresh(id);
    await expectProxyUses(t.httpUrl, id, material);
    // Spent by that commit: single use holds.
    const again = await runCli(t.token, t.configFile, imported);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/import token is not valid for this key: .* used already/);
    await expectCleanVersions(t.proxy.hsm, id, 1);
  }, 90_000);

  it('a live writer on this host is not overrun: a rotation waits for it, then answers ConflictException, and the writer commits', async () => {
    const id = 'live-here';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true } });
    // A rotation in this process (alive, and renewing its lease) that holds its candidate for 13 s.
    let made = false;
    const held = t.proxy.lifecycle.addVersion(id, {
      check: () => 'go',
      make: async (spec) => {
        const candidate = await t.proxy.hsm.generateKey(aes256KeyTemplate(spec));
        made = true;
        await new Promise((r) => setTimeout(r, 13_000));
        return candidate;
      },
    });
    await pollUntil('the held candidate', 5_000, async () => made);
    const other = await runCli(t.token, t.configFile, ['keys', 'rotate', id, '--json']);
    expect(other.code).not.toBe(0);
    expect(other.stderr).toMatch(/being changed by another process/);
    expect(other.endedMs - other.startedMs).toBeGreaterThanOrEqual(10_000);
    expect(await held).toEqual({ KeyId: id, Rotated: true, Version: 2 });
    await expectCleanVersions(t.proxy.hsm, id, 2);
  }, 60_000);

  it('a writer on another host is waited for while it renews its lease, and stepped over (never destroyed) once it stops', async () => {
    const id = 'elsewhere';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true } });
    // Another host's rotation: a lease naming a process this host cannot see, and its candidate for version 2.
    const nonce = newNonce();
    const startedMs = Date.now();
    const writer = 'abcdef012345-4242-99';
    const lease = (renewal: number) => inertSecretTemplate(id, leaseId({ startedMs, nonce, writer, renewal }));
    let current = (await t.proxy.hsm.generateKey(lease(0), GENERIC_SECRET_KEY_GEN)).handle;
    const candidate = await t.proxy.hsm.generateKey(
      aes256KeyTemplate({ label: id, id: materialId(2, startedMs, nonce), encrypt: true, decrypt: true, exportable: false }),
    );
    // It renews for 2 s, then stops (killed, or stalled).
    let renewal = 0;
    const renewing = setInterval(() => {
      void (async () => {
        const next = (await t.proxy.hsm.generateKey(lease(++renewal), GENERIC_SECRET_KEY_GEN)).handle;
        await t.proxy.hsm.destroyObject(current);
        current = next;
      })();
    }, 500);
    setTimeout(() => clearInterval(renewing), 2_000);
    const started = Date.now();
    const r = await t.proxy.lifecycle.rotate(id).catch((e: unknown) => e);
    const took = Date.now() - started;
    clearInterval(renewing);
    expect(r, (r as KeyError).message).toEqual({ KeyId: id, Rotated: true, Version: 3 });
    // Not while it renewed; soon after it stopped (LEASE_SILENT_MS, 4 s, on this process's clock).
    expect(took).toBeGreaterThanOrEqual(2_000);
    expect(took).toBeLessThan(9_000);
    // Its candidate is left alone (it might still commit version 2, which would harm nothing); version 3 is current.
    const objs = await tokenObjects(t.proxy.hsm, id);
    expect(objs.all.some((o) => o.handle.equals(candidate.handle))).toBe(true);
    expect([...objs.versions.keys()].sort()).toEqual([1, 3]);
    expect(await describeViaCli(t.token, t.configFile, id)).toMatchObject({ CurrentVersion: 3, RotationsInProgress: [2] });
  }, 60_000);
});
