// Rotation as KMS relies on it: every ciphertext ever made decrypts after any number of rotations, new encrypts use the
// new version (named in the authenticated ciphertextMetadata), the key's usage and exportability carry over, and a
// rotation's leftovers (a candidate object) are never used for crypto. Real SoftHSM token, real server over a socket.
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { aes256KeyTemplate } from '../../src/hsm/templates.js';
import { KeyError } from '../../src/keys/errors.js';
import { materialId } from '../../src/keys/key-objects.js';
import { buildGcmAad } from '../../src/xks/aad.js';
import { encodeCiphertextMetadata } from '../../src/xks/ciphertext-metadata.js';
import { runXks } from '../helpers/built-cli.js';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields } from '../helpers/xks-client.js';
import { describeViaCli, expectCleanVersions, tokenObjects, versionOf } from '../helpers/key-versions.js';
import { evidence, TOKEN_FACTS } from '../helpers/test-token.js';

const t = useProxyOnToken({ cli: true });
const { xks } = t;

const pt = (s: string) => Buffer.from(s);
const withMetadata = (enc: any, version: number) => ({ ...decryptFields(enc), ciphertextMetadata: encodeCiphertextMetadata(version).toString('base64') });

describe('a rotated key', () => {
  const aad = randomBytes(24);
  let v1: any;

  beforeAll(async () => {
    await t.proxy.lifecycle.create('rot', { usage: { encrypt: true, decrypt: true } });
    const enc = await xks.encrypt('rot', pt('made at version 1'), { additionalAuthenticatedData: aad.toString('base64') });
    expect(enc.status, enc.text).toBe(200);
    expect(versionOf(enc.json)).toBe(1);
    v1 = enc.json;
  });

  it('decrypts a version-1 ciphertext after three rotations, and each new encrypt carries the new version', async () => {
    const made = new Map<number, any>([[1, v1]]);
    for (const expected of [2, 3, 4]) {
      const r = await t.proxy.lifecycle.rotate('rot');
      expect(r).toEqual({ KeyId: 'rot', Rotated: true, Version: expected });
      const enc = await xks.encrypt('rot', pt(`made at version ${expected}`), { additionalAuthenticatedData: aad.toString('base64') });
      expect(enc.status, enc.text).toBe(200);
      expect(versionOf(enc.json)).toBe(expected);
      made.set(expected, enc.json);
    }
    // Every ciphertext, old and new, decrypts through XKS with its own version.
    for (const [version, enc] of made) {
      const dec = await xks.decrypt('rot', decryptFields(enc, aad));
      expect(dec.status, dec.text).toBe(200);
      expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe(`made at version ${version}`);
    }
    await expectCleanVersions(t.proxy.hsm, 'rot', 4);
  });

  it('refuses a ciphertext whose metadata names another version, or one that does not exist (InvalidCiphertextException 400)', async () => {
    // v1 ciphertext claiming v2, v3 or v4: those versions exist, but the metadata is in the AAD and the material differs.
    for (const claimed of [2, 3, 4, 5, 99, 0xffffffff]) {
      const r = await xks.decrypt('rot', { ...withMetadata(v1, claimed), additionalAuthenticatedData: aad.toString('base64') });
      expect(r.status, `claimed ${claimed}: ${r.text}`).toBe(400);
      expect(r.json.errorName).toBe('InvalidCiphertextException');
    }
    // A v4 ciphertext claiming v1 (the version that an old, weaker key would be): refused the same way.
    const v4 = await xks.encrypt('rot', pt('now'), { additionalAuthenticatedData: aad.toString('base64') });
    expect(versionOf(v4.json)).toBe(4);
    const back = await xks.decrypt('rot', { ...withMetadata(v4.json, 1), additionalAuthenticatedData: aad.toString('base64') });
    expect(back.status).toBe(400);
    expect(back.json.errorName).toBe('InvalidCiphertextException');
    // Metadata of another format, or without its metadata (read as version 1 with empty metadata): refused.
    const otherFormat = Buffer.from(v1.ciphertextMetadata, 'base64');
    otherFormat[0] = 2;
    for (const fields of [
      { ...decryptFields(v1, aad), ciphertextMetadata: otherFormat.toString('base64') },
      (({ ciphertextMetadata: _drop, ...rest }) => rest)(decryptFields(v1, aad)),
    ]) {
      const r = await xks.decrypt('rot', fields);
      expect(r.status, r.text).toBe(400);
      expect(r.json.errorName).toBe('InvalidCiphertextException');
    }
    // And the untouched ciphertext still decrypts.
    expect((await xks.decrypt('rot', decryptFields(v1, aad))).status).toBe(200);
  });

  it('stays ENABLED with its usage in GetKeyMetadata', async () => {
    const m = await xks.metadata('rot');
    expect(m.status, m.text).toBe(200);
    expect(m.json).toEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' });
  });

  it('rotates through the CLI (another process) too: its version decrypts here within a second, and encrypts move to it', async () => {
    const r = await runXks(['keys', 'rotate', 'rot', '--json'], { token: t.token, configFile: t.configFile });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ KeyId: 'rot', Rotated: true, Version: 5 });
    const rotatedAt = performance.now();
    // A ciphertext made under version 5 outside this process: this server has not read version 5 yet, and must.
    const v5 = (await t.proxy.hsm.findSecretKeys({ label: 'rot' })).find((o) => o.id.toString().startsWith('xks:k2;v=5;'));
    expect(v5).toBeDefined();
    const metadata = encodeCiphertextMetadata(5);
    const out = await t.proxy.hsm.encryptGcm(v5!.handle, pt('under version 5'), buildGcmAad(undefined, metadata));
    const fields = {
      ciphertext: out.ciphertext.toString('base64'),
      initializationVector: out.iv.toString('base64'),
      authenticationTag: out.tag.toString('base64'),
      ciphertextMetadata: metadata.toString('base64'),
    };
    // The test before asked for version 5 when it did not exist: that read is the answer for up to a second (a key is
    // re-read for a missing version at most once a second), then the next decrypt reads the token again.
    let dec = await xks.decrypt('rot', fields);
    while (dec.status !== 200 && performance.now() - rotatedAt < 5_000) {
      await sleep(50);
      dec = await xks.decrypt('rot', fields);
    }
    expect(performance.now() - rotatedAt).toBeLessThan(2_500);
    expect(dec.status, dec.text).toBe(200);
    expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe('under version 5');
    const enc = await xks.encrypt('rot', pt('after the CLI rotation'));
    expect(versionOf(enc.json)).toBe(5);
    expect((await xks.decrypt('rot', decryptFields(v1, aad))).status).toBe(200);
    const d = await describeViaCli(t.token, t.configFile, 'rot');
    expect(d).toMatchObject({ KeyState: 'Enabled', CurrentVersion: 5 });
    expect(d.Versions.map((v: any) => v.Version)).toEqual([1, 2, 3, 4, 5]);
    expect(d.LastRotationDate).toBe(d.Versions[4].CreationDate);
  });
});

describe('what a rotation carries over', () => {
  it('an encrypt-only key rotates to an encrypt-only version', async () => {
    await t.proxy.lifecycle.create('enc-only', { usage: { encrypt: true, decrypt: false } });
    expect((await t.proxy.lifecycle.rotate('enc-only')).Version).toBe(2);
    const key = await t.proxy.lifecycle.get('enc-only');
    expect([...key.versions.values()].map((v) => [v.version, v.encrypt, v.decrypt])).toEqual([
      [1, true, false],
      [2, true, false],
    ]);
    const m = await xks.metadata('enc-only');
    expect(m.json).toEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT'], keyStatus: 'ENABLED' });
    const enc = await xks.encrypt('enc-only', pt('x'));
    expect(enc.status, enc.text).toBe(200);
    expect(versionOf(enc.json)).toBe(2);
    // The new version may not decrypt either: the HSM refuses, not just the proxy.
    const dec = await xks.decrypt('enc-only', decryptFields(enc.json));
    expect(dec.status).toBe(400);
    expect(dec.json.errorName).toBe('InvalidKeyUsageException');
  });

  // A token without CKA_WRAP_WITH_TRUSTED (NSS) makes no exportable key: see the next test.
  it.skipIf(!TOKEN_FACTS.wrapWithTrusted)('an exportable key rotates to exportable versions', async () => {
    const made = await runXks(['keys', 'create', 'exp', '--exportable', '--json'], { token: t.token, configFile: t.configFile });
    expect(made.code, made.stderr).toBe(0);
    expect(JSON.parse(made.stdout)).toMatchObject({ KeyId: 'exp', Exportable: true, CurrentVersion: 1 });
    expect((await runXks(['keys', 'rotate', 'exp'], { token: t.token, configFile: t.configFile })).code).toBe(0);
    expect((await t.proxy.lifecycle.rotate('exp')).Version).toBe(3);
    const d = await describeViaCli(t.token, t.configFile, 'exp');
    expect(d).toMatchObject({ Exportable: true, CurrentVersion: 3 });
    expect(d.Versions).toHaveLength(3);
    for (const v of d.Versions) expect(v).toMatchObject({ Extractable: true, Sensitive: true, Local: evidence(true), NeverExtractable: evidence(false) });
    const key = await t.proxy.lifecycle.get('exp');
    expect([...key.versions.values()].every((v) => v.attrs.extractable === true)).toBe(true);
  });

  it.runIf(!TOKEN_FACTS.wrapWithTrusted)('a token that cannot restrict wrapping to a trusted KEK makes no exportable key, and says why', async () => {
    const made = await runXks(['keys', 'create', 'exp', '--exportable', '--json'], { token: t.token, configFile: t.configFile });
    expect(made.code).not.toBe(0);
    expect(made.stderr).toMatch(/cannot restrict wrapping to a trusted KEK.*CKA_WRAP_WITH_TRUSTED/);
    expect(await t.proxy.hsm.findSecretKeys({ label: 'exp' })).toEqual([]);
  });

  it('a default key rotates to sensitive, non-extractable versions', async () => {
    const plain = await describeViaCli(t.token, t.configFile, 'rot');
    expect(plain.Exportable).toBe(false);
    for (const v of plain.Versions) expect(v).toMatchObject({ Extractable: false, Sensitive: true, Local: evidence(true), NeverExtractable: evidence(true), AlwaysSensitive: true });
  });
});

describe('leftover candidates', () => {
  it('a stale candidate (a rotation that died) is cleared by the next rotation and never used', async () => {
    await t.proxy.lifecycle.create('stale', { usage: { encrypt: true, decrypt: true } });
    const before = await xks.encrypt('stale', pt('before'));
    // A rotation that died two minutes ago after making its candidate for version 2.
    const dead = await t.proxy.hsm.generateKey(
      aes256KeyTemplate({ label: 'stale', id: materialId(2, Date.now() - 120_000, 'ab'.repeat(12)), encrypt: true, decrypt: true, exportable: false }),
    );
    // Something encrypted under the candidate's material, labelled version 2: must never decrypt.
    const metadata = encodeCiphertextMetadata(2);
    const underDead = await t.proxy.hsm.encryptGcm(dead.handle, pt('under the dead candidate'), buildGcmAad(undefined, metadata));
    // While it is there, encrypts stay at version 1 and it is reported as a rotation in progress.
    await t.proxy.catalogue.refresh('stale');
    expect(versionOf((await xks.encrypt('stale', pt('x'))).json)).toBe(1);
    expect(await describeViaCli(t.token, t.configFile, 'stale')).toMatchObject({ CurrentVersion: 1, RotationsInProgress: [2] });

    expect(await t.proxy.lifecycle.rotate('stale')).toEqual({ KeyId: 'stale', Rotated: true, Version: 2 });
    const objs = await tokenObjects(t.proxy.hsm, 'stale');
    expect(objs.all.some((o) => o.handle.equals(dead.handle))).toBe(false);
    await expectCleanVersions(t.proxy.hsm, 'stale', 2);
    const d = await describeViaCli(t.token, t.configFile, 'stale');
    expect(d.RotationsInProgress).toBeUndefined();

    const forged = await xks.decrypt('stale', {
      ciphertext: underDead.ciphertext.toString('base64'),
      initializationVector: underDead.iv.toString('base64'),
      authenticationTag: underDead.tag.toString('base64'),
      ciphertextMetadata: metadata.toString('base64'),
    });
    expect(forged.status).toBe(400);
    expect(forged.json.errorName).toBe('InvalidCiphertextException');
    expect((await xks.decrypt('stale', decryptFields(before.json))).status).toBe(200);
    expect(versionOf((await xks.encrypt('stale', pt('after'))).json)).toBe(2);
  });

  it('a fresh candidate of another writer makes rotate back off and fail with ConflictException, changing nothing', async () => {
    await t.proxy.lifecycle.create('busy', { usage: { encrypt: true, decrypt: true } });
    const rival = await t.proxy.hsm.generateKey(
      aes256KeyTemplate({ label: 'busy', id: materialId(2, Date.now(), 'cd'.repeat(12)), encrypt: true, decrypt: true, exportable: false }),
    );
    const started = Date.now();
    const err = await t.proxy.lifecycle.rotate('busy').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KeyError);
    expect((err as KeyError).code).toBe('ConflictException');
    // It retried with back-off (25 attempts, at least 10 ms each) rather than failing at once.
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    const objs = await tokenObjects(t.proxy.hsm, 'busy');
    expect([...objs.versions.entries()]).toEqual([[1, 1]]);
    expect(objs.candidates).toEqual([2]);
    expect(objs.all.some((o) => o.handle.equals(rival.handle))).toBe(true);
    expect(versionOf((await xks.encrypt('busy', pt('x'))).json)).toBe(1);
  });

  it('a rotation waiting on a fresh candidate goes ahead once that candidate is gone, with its own material', async () => {
    const rival = (await tokenObjects(t.proxy.hsm, 'busy')).all.find((o) => o.id.toString().startsWith('xks:k2;v=2;'))!;
    const before = await xks.encrypt('busy', pt('before'));
    const rotating = t.proxy.lifecycle.rotate('busy');
    await sleep(150);
    await t.proxy.hsm.destroyObject(rival.handle);
    const destroyedAt = Date.now();
    const r = await rotating;
    expect(Date.now()).toBeGreaterThanOrEqual(destroyedAt);
    expect(r).toEqual({ KeyId: 'busy', Rotated: true, Version: 2 });
    await expectCleanVersions(t.proxy.hsm, 'busy', 2);
    const enc = await xks.encrypt('busy', pt('after'));
    expect(versionOf(enc.json)).toBe(2);
    expect((await xks.decrypt('busy', decryptFields(enc.json))).status).toBe(200);
    expect((await xks.decrypt('busy', decryptFields(before.json))).status).toBe(200);
  });
});
