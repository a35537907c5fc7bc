// A rotation or an import killed between making its candidate and committing it must not block its key: the next
// attempt recognises the dead writer's claim at once (a lease that names the writer's process, claims.ts) instead of
// waiting 60 s for it, and an import token is spent only by a commit, so the customer's retry with the same token works.
// A live writer is still never overrun: on this host its process is alive, from another host its lease keeps being
// renewed, whatever its clock says. A writer cleared while it stalled answers ConflictException rather than a commit
// that did not happen, and a stalled import holding the same token is waited for, not stepped over. The CLI runs
// through our PKCS#11 emulator (test/emulator), whose control file holds every C_GenerateKey for a while, so the
// process can be killed with SIGKILL once its candidate is in the token and before its commit marker.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImportService } from '../../src/import/import-service.js';
import { GENERIC_SECRET_KEY_GEN } from '../../src/hsm/mechanisms.js';
import { aes256KeyTemplate, inertSecretTemplate } from '../../src/hsm/templates.js';
import { openToken } from '../../src/import/import-token.js';
import { assemble, uncommitted } from '../../src/keys/catalogue.js';
import { importTokenTag, leaseId } from '../../src/keys/claims.js';
import { KeyError } from '../../src/keys/errors.js';
import { materialId, newNonce } from '../../src/keys/key-objects.js';
import { ensureBuilt, runXks, startXks } from '../helpers/built-cli.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';
import { expectProxyUses, wrapMaterial } from '../helpers/byok-customer.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import { describeViaCli, expectCleanVersions, tokenObjects, versionOf } from '../helpers/key-versions.js';
import { pollUntil } from '../helpers/poll.js';

const leases = async (t: TestProxy, id: string) =>
  (await t.proxy.hsm.findSecretKeys({ label: id })).filter((o) => o.id.toString('latin1').startsWith('xks:l2;'));

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('a writer killed between its candidate and its commit', () => {
  let t: TestProxy;
  let control: EmulatorControl;
  let emulated: string;
  const setControl = (text: string) => control.set(text);

  beforeAll(async () => {
    ensureBuilt();
    buildEmulator();
    const token = createTestToken('killed');
    control = emulatorControl(token);
    t = await startProxyOnToken({ token });
    emulated = writeTestConfig(token, { hsm: control.hsm() }, 'emulated.yaml');
  }, 120_000);
  afterAll(async () => {
    await setControl('');
    await t?.stop();
  });

  /**
   * `xks ...args` through the emulator, with every C_GenerateKey held 5 s, killed with SIGKILL as soon as key `id` has
   * a candidate for `version` in the token (read by this process, straight from SoftHSM).
   */
  async function killAtCandidate(id: string, version: number, args: string[]): Promise<void> {
    await setControl('hang C_GenerateKey 5000\n');
    const { child, output, exited } = startXks(args, { token: t.token, configFile: emulated });
    try {
      await pollUntil(`a candidate for version ${version} (${output()})`, 40_000, async () => {
        if (child.exitCode !== null) throw new Error(`xks ${args.join(' ')} ended before it made its candidate: ${output()}`);
        return (await tokenObjects(t.proxy.hsm, id)).candidates.includes(version);
      });
    } finally {
      child.kill('SIGKILL');
      await exited;
      await setControl('');
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

    const retry = await runXks(['keys', 'rotate', id, '--json'], { token: t.token, configFile: t.configFile });
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

    const retry = await runXks(imported, { token: t.token, configFile: t.configFile });
    expect(retry.code, retry.stderr).toBe(0);
    expect(JSON.parse(retry.stdout)).toMatchObject({ KeyId: id, KeyMaterialVersion: 1, KeyState: 'Enabled' });
    expect(retry.endedMs - retry.startedMs).toBeLessThan(8_000);
    await expectCleanVersions(t.proxy.hsm, id, 1);
    expect(await leases(t, id)).toEqual([]);
    await t.proxy.catalogue.refresh(id);
    await expectProxyUses(t.httpUrl, id, material);
    // Spent by that commit: single use holds.
    const again = await runXks(imported, { token: t.token, configFile: t.configFile });
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
    const other = await runXks(['keys', 'rotate', id, '--json'], { token: t.token, configFile: t.configFile });
    expect(other.code).not.toBe(0);
    expect(other.stderr).toMatch(/being changed by another process/);
    expect(other.endedMs - other.startedMs).toBeGreaterThanOrEqual(10_000);
    expect(await held).toEqual({ KeyId: id, Rotated: true, Version: 2 });
    await expectCleanVersions(t.proxy.hsm, id, 2);
  }, 60_000);

  /**
   * Another host's writer: a lease naming a process this host cannot see (so only its renewals say it runs), renewed
   * every 500 ms until stop(), and its candidate for `version`. `startedMs` is its own clock's reading.
   */
  async function foreignWriter(id: string, version: number, o: { startedMs?: number; token?: string } = {}) {
    const nonce = newNonce();
    const startedMs = o.startedMs ?? Date.now();
    const writer = 'abcdef012345-4242-99';
    const lease = (renewal: number) => inertSecretTemplate(id, leaseId({ startedMs, nonce, writer, renewal, token: o.token }));
    let renewal = 0;
    let current = (await t.proxy.hsm.generateKey(lease(0), GENERIC_SECRET_KEY_GEN)).handle;
    const candidate = await t.proxy.hsm.generateKey(
      aes256KeyTemplate({ label: id, id: materialId(version, startedMs, nonce), encrypt: true, decrypt: true, exportable: false }),
    );
    let renewing: Promise<void> = Promise.resolve();
    const timer = setInterval(() => {
      renewing = renewing
        .then(async () => {
          const next = (await t.proxy.hsm.generateKey(lease(++renewal), GENERIC_SECRET_KEY_GEN)).handle;
          await t.proxy.hsm.destroyObject(current).catch(() => undefined);
          current = next;
        })
        .catch(() => undefined);
    }, 500);
    return {
      candidate: candidate.handle,
      /** Stop renewing (killed, or stalled). */
      stop: async () => {
        clearInterval(timer);
        await renewing;
      },
    };
  }

  it('a writer on another host is waited for while it renews its lease, and its claim is cleared once it stops', async () => {
    const id = 'elsewhere';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true } });
    const w = await foreignWriter(id, 2);
    // It renews for 2 s, then stops.
    setTimeout(() => void w.stop(), 2_000);
    const started = Date.now();
    const r = await t.proxy.lifecycle.rotate(id).catch((e: unknown) => e);
    const took = Date.now() - started;
    await w.stop();
    expect(r, (r as KeyError).message).toEqual({ KeyId: id, Rotated: true, Version: 2 });
    // Not while it renewed; soon after it stopped (LEASE_SILENT_MS, 4 s, on this process's clock).
    expect(took).toBeGreaterThanOrEqual(2_000);
    expect(took).toBeLessThan(9_000);
    // Its candidate and lease are destroyed (were it only stalled, it finds them gone and withdraws), version 2 is current.
    const objs = await tokenObjects(t.proxy.hsm, id);
    expect(objs.all.some((o) => o.handle.equals(w.candidate))).toBe(false);
    await expectCleanVersions(t.proxy.hsm, id, 2);
    expect(await leases(t, id)).toEqual([]);
  }, 60_000);

  it('a writer whose clock is far behind is not overrun while it renews its lease (no clocks compared), and is cleared once it stops', async () => {
    const id = 'skewed';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true } });
    // Its clock reads 10 minutes earlier than this one: its claim looks 10 minutes old here.
    const w = await foreignWriter(id, 2, { startedMs: Date.now() - 600_000 });
    try {
      const started = Date.now();
      const r = await t.proxy.lifecycle.rotate(id).catch((e: unknown) => e);
      expect((r as KeyError).code, JSON.stringify(r)).toBe('ConflictException');
      expect(Date.now() - started).toBeGreaterThanOrEqual(10_000);
      const objs = await tokenObjects(t.proxy.hsm, id);
      expect(objs.all.some((o) => o.handle.equals(w.candidate))).toBe(true);
      expect([...objs.versions.keys()]).toEqual([1]);
    } finally {
      await w.stop();
    }
    // Stopped: silent after 4 s on this process's clock, so it is cleared and version 2 is this rotation's.
    expect(await t.proxy.lifecycle.rotate(id)).toEqual({ KeyId: id, Rotated: true, Version: 2 });
    await expectCleanVersions(t.proxy.hsm, id, 2);
    expect(await leases(t, id)).toEqual([]);
  }, 60_000);

  it('a writer whose candidate is destroyed before its commit answers ConflictException: no version, no stray marker, nothing spent', async () => {
    const id = 'pulled';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true } });
    let spent = false;
    const r = await t.proxy.lifecycle
      .addVersion(id, {
        check: () => 'go',
        make: (spec) => t.proxy.hsm.generateKey(aes256KeyTemplate(spec)),
        // After the read that cleared its claim, another process destroys its candidate (one that took it for dead).
        beforeCommit: async () => {
          for (const c of uncommitted(await t.proxy.hsm.findSecretKeys({ label: id }))) await t.proxy.hsm.destroyObject(c.object);
        },
        // What an import does here: spend its token.
        afterCommit: async () => {
          spent = true;
        },
      })
      .catch((e: unknown) => e);
    expect((r as KeyError).code, JSON.stringify(r)).toBe('ConflictException');
    expect(spent).toBe(false);
    const objs = await tokenObjects(t.proxy.hsm, id);
    expect([...objs.versions.keys()]).toEqual([1]);
    expect(objs.candidates).toEqual([]);
    expect(assemble(id, objs.all)?.strayMarkers).toEqual([]);
    expect(await leases(t, id)).toEqual([]);
    await t.proxy.catalogue.refresh(id);
    expect(versionOf((await xksClient(t.httpUrl).encrypt(id, Buffer.from('x'))).json)).toBe(1);
  }, 60_000);

  it('a writer whose own renewals lapsed (its process stalled 4 s) does not trust its claim: it withdraws it and claims again', async () => {
    const id = 'lapsed';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true } });
    let made = 0;
    const r = await t.proxy.lifecycle.addVersion(id, {
      check: () => 'go',
      make: async (spec) => {
        const candidate = await t.proxy.hsm.generateKey(aes256KeyTemplate(spec));
        // The first time, the whole process stops for 4 s (no renewal can run): an observer may take it for silent.
        if (made++ === 0) {
          const until = performance.now() + 4_000;
          while (performance.now() < until);
        }
        return candidate;
      },
    });
    expect(r).toEqual({ KeyId: id, Rotated: true, Version: 2 });
    expect(made).toBe(2);
    await expectCleanVersions(t.proxy.hsm, id, 2);
    expect(await leases(t, id)).toEqual([]);
  }, 60_000);

  it('an import stalled elsewhere with the same token blocks an import with it (ConflictException, token unspent) until its lease is 60 s silent here', async () => {
    const id = 'same-token';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const svc = new ImportService(t.proxy.hsm, t.proxy.catalogue, t.proxy.lifecycle);
    const p = await svc.getParametersForImport({ KeyId: id, WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256', WrappingKeySpec: 'RSA_2048' });
    const tag = importTokenTag(openToken(p.ImportToken)!.fields.wrappingKeyNonce);
    // Another host's import with this very token: its claim on version 1, renewed for 2 s, then stalled.
    const w = await foreignWriter(id, 1, { token: tag });
    await sleep(2_000);
    await w.stop();
    const material = randomBytes(32);
    const req = {
      KeyId: id,
      ImportToken: p.ImportToken,
      EncryptedKeyMaterial: wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, material),
      ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' as const,
    };
    const started = performance.now();
    const first = await svc.importKeyMaterial(req).catch((e: unknown) => e);
    expect((first as KeyError).code, JSON.stringify(first)).toBe('ConflictException');
    expect(performance.now() - started).toBeGreaterThanOrEqual(10_000);
    // Nothing committed and the token unspent: the stalled import may still wake up and commit with it.
    let objs = await tokenObjects(t.proxy.hsm, id);
    expect(objs.versions.size).toBe(0);
    expect(objs.all.some((o) => o.handle.equals(w.candidate))).toBe(true);
    expect(await leases(t, id)).toHaveLength(1);
    // Its lease unchanged for 60 s as this process watched it: abandoned. Cleared, and the import goes ahead.
    await sleep(Math.max(0, started + 62_000 - performance.now()));
    expect(await svc.importKeyMaterial(req)).toMatchObject({ KeyId: id, KeyMaterialVersion: 1, KeyState: 'Enabled' });
    objs = await tokenObjects(t.proxy.hsm, id);
    expect(objs.all.some((o) => o.handle.equals(w.candidate))).toBe(false);
    await expectCleanVersions(t.proxy.hsm, id, 1);
    expect(await leases(t, id)).toEqual([]);
    await t.proxy.catalogue.refresh(id);
    await expectProxyUses(t.httpUrl, id, material);
  }, 120_000);
});
