// The life of imported material: it expires (fake clock) and is then unusable and gone from the token; it is deleted and
// re-imported as the very same version (old ciphertexts decrypt again); new material becomes a new version; wrapping
// key pairs past their 24 hours are swept; a restart (a new connection to the token) between GetParametersForImport and
// ImportKeyMaterial still imports.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { materialExpired } from '../../src/keys/imported-material.js';
import { WRAPPING_KEY_LABEL } from '../../src/import/import-objects.js';
import { ImportService } from '../../src/import/import-service.js';
import { P } from '../../src/hsm/module.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';
import { expectProxyUses, wrapMaterial } from '../helpers/byok-customer.js';
import { TOKEN_FACTS } from '../helpers/test-token.js';

let t: TestProxy;
let svc: ImportService;
let clock: Date;
const HOUR = 3_600_000;

beforeAll(async () => {
  t = await startProxyOnToken({ cleanupToken: false });
  svc = new ImportService(t.proxy.hsm, t.proxy.catalogue, t.proxy.lifecycle, { now: () => clock });
});
beforeEach(() => {
  clock = new Date();
});
afterAll(async () => {
  await t?.stop();
  t?.token.cleanup();
});

async function importInto(id: string, material: Buffer, extra: { ValidTo?: Date; ImportType?: 'NEW_KEY_MATERIAL' | 'EXISTING_KEY_MATERIAL' } = {}) {
  const p = await svc.getParametersForImport({ KeyId: id, WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256', WrappingKeySpec: 'RSA_2048' });
  return svc.importKeyMaterial({
    KeyId: id,
    ImportToken: p.ImportToken,
    EncryptedKeyMaterial: wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, material),
    ExpirationModel: extra.ValidTo ? 'KEY_MATERIAL_EXPIRES' : 'KEY_MATERIAL_DOES_NOT_EXPIRE',
    ValidTo: extra.ValidTo,
    ImportType: extra.ImportType,
  });
}

const aesObjects = async (id: string) => (await t.proxy.hsm.findSecretKeys({ label: id, keyType: 'aes' })).map((o) => o.id.toString()).sort();

describe('expiry', () => {
  it('material past its ValidTo stops working at once, is destroyed by the sweep and is gone from the token', async () => {
    const id = 'expiring';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const material = randomBytes(32);
    const r = await importInto(id, material, { ValidTo: new Date(clock.getTime() + HOUR) });
    expect(r.ValidTo).toBe(new Date(clock.getTime() + HOUR).toISOString());
    const before = await expectProxyUses(t.httpUrl, id, material);

    // An hour and a second later: expired before any sweep (what the XKS path asks), then swept.
    clock = new Date(clock.getTime() + HOUR + 1000);
    expect(materialExpired((await t.proxy.lifecycle.get(id)).record, clock)).toBe(true);
    const swept = await svc.sweep();
    expect(swept.MaterialDestroyed).toEqual([{ KeyId: id, Version: 1, Reason: 'Expired' }]);
    expect(await aesObjects(id)).toEqual([]);
    expect((await t.proxy.lifecycle.get(id)).state).toBe('PendingImport');
    const xks = xksClient(t.httpUrl);
    const enc = await xks.encrypt(id, Buffer.from('x'));
    expect(enc.json.errorName).toBe('InvalidStateException');
    const dec = await xks.decrypt(id, decryptFields(before, before.aad));
    expect(dec.json.errorName).toBe('InvalidStateException');
    const meta = await xks.metadata(id);
    expect(meta.json.keyStatus).toBe('DISABLED');
    // A second sweep has nothing left to do.
    expect((await svc.sweep()).MaterialDestroyed).toEqual([]);

    // The same material comes back as version 1: the ciphertext from before decrypts again.
    const back = await importInto(id, material, { ValidTo: new Date(clock.getTime() + 2 * HOUR) });
    expect(back).toMatchObject({ KeyMaterialVersion: 1, ImportType: 'EXISTING_KEY_MATERIAL', KeyState: 'Enabled' });
    const again = await xks.decrypt(id, decryptFields(before, before.aad));
    expect(again.status, again.text).toBe(200);
  });

  it('re-importing present material sets its new expiry', async () => {
    const id = 'reexpire';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const material = randomBytes(32);
    await importInto(id, material, { ValidTo: new Date(clock.getTime() + HOUR) });
    const objects = await aesObjects(id);
    await importInto(id, material); // EXISTING, does not expire
    expect(await aesObjects(id)).toEqual(objects); // no new object
    clock = new Date(clock.getTime() + 10 * HOUR);
    expect((await svc.sweep()).MaterialDestroyed.filter((m) => m.KeyId === id)).toEqual([]);
    await expectProxyUses(t.httpUrl, id, material);
  });
});

describe('delete and re-import', () => {
  it('delete destroys the material; the same material returns as the same version with the same date, under a new CKA_ID', async () => {
    const id = 'deleted';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const material = randomBytes(32);
    await importInto(id, material);
    const objects = await aesObjects(id);
    expect(objects).toHaveLength(1);
    const before = await expectProxyUses(t.httpUrl, id, material);
    const madeAt = (await t.proxy.lifecycle.get(id)).versions.get(1)!.createdAt;
    expect(madeAt).toBeInstanceOf(Date);

    const d = await svc.deleteImportedKeyMaterial(id);
    expect(d).toEqual({ KeyId: id, KeyState: 'PendingImport', DeletedVersions: [1] });
    expect(await aesObjects(id)).toEqual([]);
    const xks = xksClient(t.httpUrl);
    expect((await xks.decrypt(id, decryptFields(before, before.aad))).json.errorName).toBe('InvalidStateException');
    // Deleting again is harmless.
    expect(await svc.deleteImportedKeyMaterial(id)).toEqual({ KeyId: id, KeyState: 'PendingImport', DeletedVersions: [] });

    await importInto(id, material);
    const again = await aesObjects(id);
    expect(again).toHaveLength(1);
    // A CKA_ID is never used twice (NSS would take the new object for the destroyed one); the version and its date are.
    expect(again).not.toEqual(objects);
    const restored = (await t.proxy.lifecycle.get(id)).versions.get(1)!;
    expect(restored.createdAt).toEqual(madeAt);
    const [obj] = await t.proxy.hsm.findSecretKeys({ label: id, keyType: 'aes' });
    expect(obj!.attrs).toMatchObject({ sensitive: true, extractable: false });
    // Imported, not generated: CKA_LOCAL false where the token reports it faithfully, absent where it does not (NSS).
    expect(obj!.attrs.local).toBe(TOKEN_FACTS.localIsEvidence ? false : undefined);
    expect((await xks.decrypt(id, decryptFields(before, before.aad))).status).toBe(200);
  });
});

describe('new material is a new version', () => {
  it('NEW_KEY_MATERIAL on a key with material: version 2 encrypts, version 1 still decrypts', async () => {
    const id = 'rotated';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const m1 = randomBytes(32);
    const m2 = randomBytes(32);
    expect((await importInto(id, m1)).KeyMaterialVersion).toBe(1);
    const c1 = await expectProxyUses(t.httpUrl, id, m1);
    expect((await importInto(id, m2, { ImportType: 'NEW_KEY_MATERIAL' })).KeyMaterialVersion).toBe(2);
    const c2 = await expectProxyUses(t.httpUrl, id, m2);
    expect(Buffer.from(c2.ciphertextMetadata, 'base64').readUInt32BE(1)).toBe(2);
    const xks = xksClient(t.httpUrl);
    expect((await xks.decrypt(id, decryptFields(c1, c1.aad))).status).toBe(200);

    // Delete both; bring back only version 1: the key waits for its newest material (version 2) and refuses new material.
    await svc.deleteImportedKeyMaterial(id);
    await importInto(id, m1);
    expect((await t.proxy.lifecycle.get(id)).state).toBe('PendingImport');
    const e = await importInto(id, randomBytes(32), { ImportType: 'NEW_KEY_MATERIAL' }).catch((err) => err);
    expect(e.code).toBe('KMSInvalidStateException');
    expect((await importInto(id, m2)).KeyState).toBe('Enabled');
    expect((await xks.decrypt(id, decryptFields(c1, c1.aad))).status).toBe(200);
    expect((await xks.decrypt(id, decryptFields(c2, c2.aad))).status).toBe(200);
  });
});

describe('wrapping key pairs', () => {
  it('live in the token for 24 hours, then the sweep destroys them (both halves)', async () => {
    const id = 'swept';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    // Leftovers of the other tests expire with this clock too; count this test's pair by its public key.
    await svc.sweep();
    clock = new Date(clock.getTime() + 48 * HOUR);
    await svc.sweep();
    clock = new Date();
    const p = await svc.getParametersForImport({ KeyId: id, WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_1', WrappingKeySpec: 'RSA_3072' });
    const pairs = async () => t.proxy.hsm.findObjects([{ type: P.CKA_LABEL, value: WRAPPING_KEY_LABEL }]);
    expect(await pairs()).toHaveLength(2);
    const [priv] = await t.proxy.hsm.findObjects([{ type: P.CKA_LABEL, value: WRAPPING_KEY_LABEL }, { type: P.CKA_CLASS, value: P.CKO_PRIVATE_KEY }]);
    const [sensitive, extractable, unwrap, decrypt, sign, token] = await t.proxy.hsm.getAttributes(priv!, [
      P.CKA_SENSITIVE,
      P.CKA_EXTRACTABLE,
      P.CKA_UNWRAP,
      P.CKA_DECRYPT,
      P.CKA_SIGN,
      P.CKA_TOKEN,
    ]);
    expect([sensitive, extractable, unwrap, decrypt, sign, token].map((b) => b![0])).toEqual([1, 0, 1, 0, 0, 1]);

    clock = new Date(p.ParametersValidTo.getTime() - 1000);
    expect((await svc.sweep()).WrappingKeysDestroyed).toBe(0);
    clock = new Date(p.ParametersValidTo.getTime() + 1);
    expect((await svc.sweep()).WrappingKeysDestroyed).toBe(2);
    expect(await pairs()).toHaveLength(0);
  });

  it('a successful import destroys its pair; a refused one keeps it', async () => {
    const id = 'pair-life';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const count = async () => (await t.proxy.hsm.findObjects([{ type: P.CKA_LABEL, value: WRAPPING_KEY_LABEL }])).length;
    const start = await count();
    const p = await svc.getParametersForImport({ KeyId: id, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' });
    expect(await count()).toBe(start + 2);
    await svc.importKeyMaterial({ KeyId: id, ImportToken: p.ImportToken, EncryptedKeyMaterial: randomBytes(256), ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' }).catch(() => undefined);
    expect(await count()).toBe(start + 2);
    await svc.importKeyMaterial({
      KeyId: id,
      ImportToken: p.ImportToken,
      EncryptedKeyMaterial: wrapMaterial('RSAES_OAEP_SHA_1', p.PublicKey, randomBytes(32)),
      ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
    });
    expect(await count()).toBe(start);
  });
});

describe('a restart between GetParametersForImport and ImportKeyMaterial', () => {
  it('still imports: the pair, the token key and the key record are all in the token', async () => {
    const id = 'restarted';
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const material = randomBytes(32);
    const p = await svc.getParametersForImport({ KeyId: id, WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256', WrappingKeySpec: 'RSA_4096' });
    const blob = wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, material);

    // The proxy stops (C_Finalize: every session object and handle of this process is gone) and starts again.
    await t.stop();
    t = await startProxyOnToken({ token: t.token, cleanupToken: false });
    svc = new ImportService(t.proxy.hsm, t.proxy.catalogue, t.proxy.lifecycle, { now: () => clock });

    const r = await svc.importKeyMaterial({ KeyId: id, ImportToken: p.ImportToken, EncryptedKeyMaterial: blob, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' });
    expect(r).toMatchObject({ KeyId: id, KeyMaterialVersion: 1, KeyState: 'Enabled' });
    await expectProxyUses(t.httpUrl, id, material);
  });
});
