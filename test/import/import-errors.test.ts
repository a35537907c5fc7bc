// Every refusal of ImportKeyMaterial has its KMS name and leaves the key exactly as it was: expired token, altered
// token, token for another key, reused token, a blob for another wrapping key, a truncated blob, material that is not
// 32 bytes, different material on re-import. A token refused for its blob can still be used with a good blob.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KeyError } from '../../src/keys/errors.js';
import { ImportService, type ImportMaterialInput } from '../../src/import/import-service.js';
import type { WrappingAlgorithm } from '../../src/import/schemas.js';
import { describeKey } from '../../src/keys/key-description.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { expectProxyUses, kwp, wrapMaterial } from '../helpers/byok-customer.js';

let t: TestProxy;
let svc: ImportService;
let clock: Date;

beforeAll(async () => {
  t = await startTestProxy();
  svc = new ImportService(t.proxy.hsm, t.proxy.catalogue, t.proxy.lifecycle, { now: () => clock });
});
beforeEach(() => {
  clock = new Date();
});
afterAll(async () => t?.stop());

let n = 0;
async function externalKey(): Promise<string> {
  const id = `err-${++n}`;
  await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
  return id;
}

/** The key as describe shows it, plus every AES object with its CKA_ID: what "as it was" means. */
async function snapshot(id: string) {
  const objects = await t.proxy.hsm.findSecretKeys({ label: id });
  return { key: describeKey(await t.proxy.lifecycle.get(id)), objects: objects.map((o) => o.id.toString()).sort() };
}

async function params(id: string, algorithm: WrappingAlgorithm = 'RSA_AES_KEY_WRAP_SHA_256') {
  return svc.getParametersForImport({ KeyId: id, WrappingAlgorithm: algorithm, WrappingKeySpec: 'RSA_2048' });
}

function input(id: string, token: Buffer, blob: Buffer, extra: Partial<ImportMaterialInput> = {}): ImportMaterialInput {
  return { KeyId: id, ImportToken: token, EncryptedKeyMaterial: blob, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE', ...extra };
}

/** Run the import, expect the named error, and the key unchanged. Returns the message. */
async function refused(id: string, req: ImportMaterialInput, code: string): Promise<string> {
  const before = await snapshot(id);
  const err = await svc.importKeyMaterial(req).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(KeyError);
  expect((err as KeyError).code).toBe(code);
  expect(await snapshot(id)).toEqual(before);
  return (err as KeyError).message;
}

describe('the import token', () => {
  it('expired (fake clock past its 24 hours): ExpiredImportTokenException', async () => {
    const id = await externalKey();
    const p = await params(id);
    const blob = wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, randomBytes(32));
    clock = new Date(p.ParametersValidTo.getTime());
    await refused(id, input(id, p.ImportToken, blob), 'ExpiredImportTokenException');
    clock = new Date(p.ParametersValidTo.getTime() + 3_600_000);
    await refused(id, input(id, p.ImportToken, blob), 'ExpiredImportTokenException');
  });

  it('altered anywhere (MAC, expiry, algorithm, key spec, wrapping key, truncated): InvalidImportTokenException', async () => {
    const id = await externalKey();
    const p = await params(id);
    const material = randomBytes(32);
    const blob = wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, material);
    const flip = (i: number, bit = 1) => {
      const b = Buffer.from(p.ImportToken);
      b[i]! ^= bit;
      return b;
    };
    const last = p.ImportToken.length - 1;
    const messages = new Set<string>();
    for (const token of [flip(last), flip(last - 31), flip(14), flip(5), flip(6), flip(20), p.ImportToken.subarray(0, last), randomBytes(80), Buffer.from('x')]) {
      messages.add(await refused(id, input(id, token, blob), 'InvalidImportTokenException'));
    }
    expect(messages.size).toBe(1);
    // The genuine token still works.
    await svc.importKeyMaterial(input(id, p.ImportToken, blob));
    await expectProxyUses(t.httpUrl, id, material);
  });

  it('made for another key: InvalidImportTokenException', async () => {
    const a = await externalKey();
    const b = await externalKey();
    const p = await params(a);
    await refused(b, input(b, p.ImportToken, wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, randomBytes(32))), 'InvalidImportTokenException');
  });

  it('used already: InvalidImportTokenException (the wrapping key pair is gone)', async () => {
    const id = await externalKey();
    const p = await params(id);
    const material = randomBytes(32);
    const blob = wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, material);
    await svc.importKeyMaterial(input(id, p.ImportToken, blob));
    await refused(id, input(id, p.ImportToken, blob), 'InvalidImportTokenException');
    await refused(id, input(id, p.ImportToken, blob, { ImportType: 'NEW_KEY_MATERIAL' }), 'InvalidImportTokenException');
    await expectProxyUses(t.httpUrl, id, material);
  });

  it('two imports racing with one token: exactly one succeeds', async () => {
    const id = await externalKey();
    const p = await params(id);
    const blob = wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, randomBytes(32));
    const results = await Promise.allSettled([1, 2, 3].map(() => svc.importKeyMaterial(input(id, p.ImportToken, blob))));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect((r.reason as KeyError).code).toBe('InvalidImportTokenException');
    expect((await t.proxy.lifecycle.get(id)).versions.size).toBe(1);
  });
});

describe('the encrypted key material', () => {
  for (const algorithm of ['RSA_AES_KEY_WRAP_SHA_256', 'RSA_AES_KEY_WRAP_SHA_1', 'RSAES_OAEP_SHA_1'] as const) {
    it(`${algorithm}: for another wrapping key, truncated, altered: one InvalidCiphertextException for every step`, async () => {
      const id = await externalKey();
      const p = await params(id, algorithm);
      const other = await params(id, algorithm);
      const material = randomBytes(32);
      const good = wrapMaterial(algorithm, p.PublicKey, material);
      const alter = (i: number) => {
        const b = Buffer.from(good);
        b[i]! ^= 0x10;
        return b;
      };
      const blobs = [
        wrapMaterial(algorithm, other.PublicKey, material), // another wrapping key
        good.subarray(0, good.length - 1),
        good.subarray(0, good.length - 8),
        good.subarray(0, 100),
        Buffer.concat([good, Buffer.alloc(8)]),
        alter(0), // inside the RSA part
        alter(good.length - 1), // inside the KWP part (or the RSA part of a direct blob)
      ];
      if (algorithm.startsWith('RSA_AES')) {
        // A good RSA part carrying a KWP under another AES key; and a bad RSA part before a good KWP.
        const eph = randomBytes(32);
        const rsa = wrapMaterial(algorithm, p.PublicKey, material, eph).subarray(0, 256);
        blobs.push(Buffer.concat([rsa, kwp(randomBytes(32), material)]));
        blobs.push(Buffer.concat([wrapMaterial('RSAES_OAEP_SHA_1', p.PublicKey, randomBytes(32)), kwp(eph, material)]));
      }
      const messages = new Set<string>();
      for (const blob of blobs) messages.add(await refused(id, input(id, p.ImportToken, blob), 'InvalidCiphertextException'));
      expect(messages.size).toBe(1);
      // Nothing was spent: the same token imports a good blob.
      await svc.importKeyMaterial(input(id, p.ImportToken, good));
      await expectProxyUses(t.httpUrl, id, material);
    }, 60_000);
  }

  for (const algorithm of ['RSA_AES_KEY_WRAP_SHA_256', 'RSA_AES_KEY_WRAP_SHA_1', 'RSAES_OAEP_SHA_1'] as const) {
    it(`${algorithm}: material that is not 32 bytes: IncorrectKeyMaterialException`, async () => {
      const id = await externalKey();
      const p = await params(id, algorithm);
      for (const length of [16, 24, 31, 33, 48, 64]) {
        const message = await refused(id, input(id, p.ImportToken, wrapMaterial(algorithm, p.PublicKey, randomBytes(length))), 'IncorrectKeyMaterialException');
        expect(message).toMatch(/32 bytes/);
      }
    }, 60_000);
  }
});

describe('re-import', () => {
  it('different material with EXISTING_KEY_MATERIAL: IncorrectKeyMaterialException, whether the material is present or deleted', async () => {
    const id = await externalKey();
    const material = randomBytes(32);
    const p1 = await params(id);
    await svc.importKeyMaterial(input(id, p1.ImportToken, wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p1.PublicKey, material)));
    const p2 = await params(id);
    await refused(id, input(id, p2.ImportToken, wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p2.PublicKey, randomBytes(32))), 'IncorrectKeyMaterialException');
    await svc.deleteImportedKeyMaterial(id);
    await refused(id, input(id, p2.ImportToken, wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p2.PublicKey, randomBytes(32))), 'IncorrectKeyMaterialException');
    // The default import type after a first import is EXISTING_KEY_MATERIAL: the same material comes back.
    const r = await svc.importKeyMaterial(input(id, p2.ImportToken, wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p2.PublicKey, material)));
    expect(r).toMatchObject({ ImportType: 'EXISTING_KEY_MATERIAL', KeyMaterialVersion: 1, KeyState: 'Enabled' });
    await expectProxyUses(t.httpUrl, id, material);
  });

  it('the same material as NEW_KEY_MATERIAL: IncorrectKeyMaterialException (it is a version already)', async () => {
    const id = await externalKey();
    const material = randomBytes(32);
    const p1 = await params(id);
    await svc.importKeyMaterial(input(id, p1.ImportToken, wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p1.PublicKey, material)));
    const p2 = await params(id);
    const message = await refused(
      id,
      input(id, p2.ImportToken, wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p2.PublicKey, material), { ImportType: 'NEW_KEY_MATERIAL' }),
      'IncorrectKeyMaterialException',
    );
    expect(message).toMatch(/already version 1/);
  });

  it('EXISTING_KEY_MATERIAL on a key that never had material: KMSInvalidStateException', async () => {
    const id = await externalKey();
    const p = await params(id);
    await refused(id, input(id, p.ImportToken, wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, randomBytes(32)), { ImportType: 'EXISTING_KEY_MATERIAL' }), 'KMSInvalidStateException');
  });
});

describe('requests and keys that cannot import', () => {
  it('a bad expiration: ValidationException before anything else', async () => {
    const id = await externalKey();
    const p = await params(id);
    const blob = wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, randomBytes(32));
    await refused(id, input(id, p.ImportToken, blob, { ExpirationModel: undefined }), 'ValidationException');
    await refused(id, input(id, p.ImportToken, blob, { ExpirationModel: 'KEY_MATERIAL_EXPIRES', ValidTo: new Date(clock.getTime() - 1000) }), 'ValidationException');
    await refused(id, input(id, p.ImportToken, blob, { ValidTo: new Date(clock.getTime() + 366 * 86_400_000) }), 'ValidationException');
  });

  it('a key generated in the HSM: UnsupportedOperationException; an unknown key: NotFoundException', async () => {
    await t.proxy.lifecycle.create('err-hsm', { usage: { encrypt: true, decrypt: true } });
    const e1 = await params('err-hsm').catch((e) => e);
    expect(e1.code).toBe('UnsupportedOperationException');
    const e2 = await params('err-missing').catch((e) => e);
    expect(e2.code).toBe('NotFoundException');
    const e3 = await svc.deleteImportedKeyMaterial('err-hsm').catch((e) => e);
    expect(e3.code).toBe('UnsupportedOperationException');
  });

  it('a key pending deletion: KMSInvalidStateException', async () => {
    const id = await externalKey();
    const p = await params(id);
    await t.proxy.lifecycle.scheduleDeletion(id, 7);
    await refused(id, input(id, p.ImportToken, wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, randomBytes(32))), 'KMSInvalidStateException');
    expect((await params(id).catch((e) => e)).code).toBe('KMSInvalidStateException');
  });
});
