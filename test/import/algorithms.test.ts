// Every wrapping algorithm with every wrapping key spec, blobs made by node:crypto as a customer makes them: after the
// import, an XKS encrypt through the real proxy decrypts in node:crypto with the known material (the HSM holds exactly
// the customer's key), and the imported key is sensitive, not extractable and not CKA_LOCAL (it was not generated there).
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImportService } from '../../src/import/import-service.js';
import { createLogger } from '../../src/obs/logger.js';
import type { WrappingKeySpec } from '../../src/import/schemas.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { TOKEN_FACTS } from '../helpers/test-token.js';
import { ALGORITHMS, expectProxyUses, wrapMaterial } from '../helpers/byok-customer.js';

let t: TestProxy;
let svc: ImportService;
let optedIn: ImportService;
const SPECS: WrappingKeySpec[] = ['RSA_2048', 'RSA_3072', 'RSA_4096'];

beforeAll(async () => {
  t = await startTestProxy();
  svc = new ImportService(t.proxy.hsm, t.proxy.catalogue, t.proxy.lifecycle);
  optedIn = new ImportService(t.proxy.hsm, t.proxy.catalogue, t.proxy.lifecycle, { allowInProcessMaterial: true });
});
afterAll(async () => t?.stop());

async function importAndCheck(service: ImportService, algorithm: (typeof ALGORITHMS)[number], spec: WrappingKeySpec): Promise<void> {
  const id = `byok-${algorithm}-${spec}`.toLowerCase().replaceAll('_', '-');
  await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
  const params = await service.getParametersForImport({ KeyId: id, WrappingAlgorithm: algorithm, WrappingKeySpec: spec });
  expect(params.PublicKey.length).toBeGreaterThan(Number(spec.slice(4)) / 8);
  const material = randomBytes(32);
  const blob = wrapMaterial(algorithm, params.PublicKey, material);
  // byok.md: RSA-AES blobs are modulus length + 40 bytes for 32 bytes of material.
  expect(blob.length).toBe(Number(spec.slice(4)) / 8 + (algorithm.startsWith('RSA_AES') ? 40 : 0));
  const r = await service.importKeyMaterial({
    KeyId: id,
    ImportToken: params.ImportToken,
    EncryptedKeyMaterial: blob,
    ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
  });
  expect(r).toMatchObject({ KeyId: id, KeyMaterialVersion: 1, ImportType: 'NEW_KEY_MATERIAL', KeyState: 'Enabled' });
  await expectProxyUses(t.httpUrl, id, material);
  const objects = (await t.proxy.hsm.findSecretKeys({ label: id })).filter((o) => o.id.toString().startsWith('xks:k2;'));
  expect(objects).toHaveLength(1);
  expect(objects[0]!.attrs).toMatchObject({ sensitive: true, extractable: false, encrypt: true, decrypt: true });
  // Imported, not generated: CKA_LOCAL false, where the token reports it faithfully (absent otherwise).
  expect(objects[0]!.attrs.local).toBe(TOKEN_FACTS.localIsEvidence ? false : undefined);
}

describe('every algorithm with every key spec', () => {
  for (const algorithm of ALGORITHMS) {
    for (const spec of SPECS) {
      // RSAES_OAEP_SHA_256 on SoftHSM (no OAEP-SHA-256 in the HSM) needs the operator's opt-in: see the next block. A
      // token with it (NSS) unwraps natively, without the opt-in.
      const service = () => (algorithm === 'RSAES_OAEP_SHA_256' && !TOKEN_FACTS.oaepSha256 ? optedIn : svc);
      it(`${algorithm} with ${spec}`, () => importAndCheck(service(), algorithm, spec), 60_000);
    }
  }
});

// Only where the token has no OAEP with SHA-256 (SoftHSM): elsewhere the HSM unwraps it and memory is never involved.
describe.skipIf(TOKEN_FACTS.oaepSha256)('RSAES_OAEP_SHA_256 where it would put the material in process memory', () => {
  it('is refused with a clear message without the operator opt-in, at GetParametersForImport', async () => {
    await t.proxy.lifecycle.create('byok-refused', { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const err = await svc.getParametersForImport({ KeyId: 'byok-refused', WrappingAlgorithm: 'RSAES_OAEP_SHA_256', WrappingKeySpec: 'RSA_2048' }).catch((e) => e);
    expect(err.code).toBe('UnsupportedOperationException');
    expect(err.message).toMatch(/in the proxy's memory.*RSA_AES_KEY_WRAP_SHA_256/);
  });

  it('and at ImportKeyMaterial, for parameters made by an opted-in process', async () => {
    await t.proxy.lifecycle.create('byok-refused-2', { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const params = await optedIn.getParametersForImport({ KeyId: 'byok-refused-2', WrappingAlgorithm: 'RSAES_OAEP_SHA_256', WrappingKeySpec: 'RSA_2048' });
    const blob = wrapMaterial('RSAES_OAEP_SHA_256', params.PublicKey, randomBytes(32));
    const err = await svc
      .importKeyMaterial({ KeyId: 'byok-refused-2', ImportToken: params.ImportToken, EncryptedKeyMaterial: blob, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' })
      .catch((e) => e);
    expect(err.code).toBe('UnsupportedOperationException');
    expect((await t.proxy.lifecycle.get('byok-refused-2')).state).toBe('PendingImport');
  });

  it('logs each opted-in use (and never the material)', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        cb();
      },
    });
    const logged = new ImportService(t.proxy.hsm, t.proxy.catalogue, t.proxy.lifecycle, { allowInProcessMaterial: true, logger: createLogger('info', sink) });
    await t.proxy.lifecycle.create('byok-logged', { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const params = await logged.getParametersForImport({ KeyId: 'byok-logged', WrappingAlgorithm: 'RSAES_OAEP_SHA_256', WrappingKeySpec: 'RSA_2048' });
    const material = randomBytes(32);
    await logged.importKeyMaterial({
      KeyId: 'byok-logged',
      ImportToken: params.ImportToken,
      EncryptedKeyMaterial: wrapMaterial('RSAES_OAEP_SHA_256', params.PublicKey, material),
      ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
    });
    const warn = lines.map((l) => JSON.parse(l)).find((l) => /decoded in process memory/.test(l.msg));
    expect(warn).toMatchObject({ level: 40, keyId: 'byok-logged', algorithm: 'RSAES_OAEP_SHA_256' });
    const all = lines.join('\n');
    for (const secret of [material.toString('hex'), material.toString('base64'), params.ImportToken.toString('base64'), params.ImportToken.toString('hex')]) {
      expect(all).not.toContain(secret);
    }
    await expectProxyUses(t.httpUrl, 'byok-logged', material);
  });
});

it('keeps the key usage of the key: a decrypt-only key gets a decrypt-only version', async () => {
  await t.proxy.lifecycle.create('byok-decrypt-only', { usage: { encrypt: false, decrypt: true }, origin: 'EXTERNAL' });
  const params = await svc.getParametersForImport({ KeyId: 'byok-decrypt-only', WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256', WrappingKeySpec: 'RSA_2048' });
  await svc.importKeyMaterial({
    KeyId: 'byok-decrypt-only',
    ImportToken: params.ImportToken,
    EncryptedKeyMaterial: wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', params.PublicKey, randomBytes(32)),
    ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
  });
  const [v] = (await t.proxy.hsm.findSecretKeys({ label: 'byok-decrypt-only' })).filter((o) => o.id.toString().startsWith('xks:k2;'));
  expect(v!.attrs).toMatchObject({ encrypt: false, decrypt: true, sensitive: true, extractable: false });
});
