// Bring your own key over the admin API, with KMS's JSON shapes: GetParametersForImport, ImportKeyMaterial,
// DeleteImportedKeyMaterial (and SweepImports), signed with SigV4 for xks-admin by AWS's signer; the material that went
// in is exactly the key the proxy then encrypts with (checked with node:crypto), and refusals are KMS-named and change nothing.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { adminClient, adminConfig } from '../helpers/admin-client.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { xksClient } from '../helpers/xks-client.js';
import { expectProxyUses, wrapMaterial } from '../helpers/byok-customer.js';
import { evidence } from '../helpers/test-token.js';

let t: TestProxy;
let admin: ReturnType<typeof adminClient>;

beforeAll(async () => {
  t = await startProxyOnToken({ config: { admin: adminConfig() } });
  admin = adminClient(`http://127.0.0.1:${t.proxy.adminListening!.http!.port}`);
});
afterAll(async () => t?.stop());

async function parameters(keyId: string, algorithm = 'RSA_AES_KEY_WRAP_SHA_256') {
  const r = await admin.call('GetParametersForImport', { KeyId: keyId, WrappingAlgorithm: algorithm, WrappingKeySpec: 'RSA_3072' });
  expect(r.status, r.text).toBe(200);
  expect(Object.keys(r.json).sort()).toEqual(['ImportToken', 'KeyId', 'ParametersValidTo', 'PublicKey']);
  const validTo = Date.parse(r.json.ParametersValidTo);
  expect(validTo - Date.now()).toBeGreaterThan(23.9 * 3600_000);
  expect(validTo - Date.now()).toBeLessThanOrEqual(24 * 3600_000);
  return { token: r.json.ImportToken as string, publicKey: Buffer.from(r.json.PublicKey, 'base64') };
}

const state = async (keyId: string) => (await admin.call('DescribeKey', { KeyId: keyId })).json.KeyMetadata.KeyState;

it('imports customer material end to end; the proxy then encrypts with exactly that key', async () => {
  expect((await admin.call('CreateKey', { KeyId: 'byok1', Origin: 'EXTERNAL' })).json.KeyMetadata).toMatchObject({ KeyState: 'PendingImport', Origin: 'EXTERNAL' });
  const material = randomBytes(32);
  const p = await parameters('byok1');
  const r = await admin.call('ImportKeyMaterial', {
    KeyId: 'byok1',
    ImportToken: p.token,
    EncryptedKeyMaterial: wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.publicKey, material).toString('base64'),
    ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
  });
  expect(r.status, r.text).toBe(200);
  expect(await state('byok1')).toBe('Enabled');
  await expectProxyUses(t.httpUrl, 'byok1', material);
  const d = (await admin.call('DescribeKey', { KeyId: 'byok1' })).json.KeyMetadata;
  expect(d.Versions[0]).toMatchObject({ Local: evidence(false), Sensitive: true, Extractable: false });

  // KMS's default expiration model needs a ValidTo.
  const noValidTo = await admin.call('ImportKeyMaterial', { KeyId: 'byok1', ImportToken: p.token, EncryptedKeyMaterial: 'AAAA' });
  expect(noValidTo.json.__type).toBe('ValidationException');
  // The token worked once.
  const again = await admin.call('ImportKeyMaterial', {
    KeyId: 'byok1',
    ImportToken: p.token,
    EncryptedKeyMaterial: wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.publicKey, material).toString('base64'),
    ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
  });
  expect(again.status).toBe(400);
  expect(again.json.__type).toBe('InvalidImportTokenException');

  // Delete: back to PendingImport, XKS refuses; the same material comes back.
  const del = await admin.call('DeleteImportedKeyMaterial', { KeyId: 'byok1' });
  expect(del.status, del.text).toBe(200);
  expect(await state('byok1')).toBe('PendingImport');
  expect((await xksClient(t.httpUrl).encrypt('byok1', Buffer.from('x'))).json.errorName).toBe('InvalidStateException');
  const p2 = await parameters('byok1');
  const back = await admin.call('ImportKeyMaterial', {
    KeyId: 'byok1',
    ImportToken: p2.token,
    EncryptedKeyMaterial: wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p2.publicKey, material).toString('base64'),
    ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
  });
  expect(back.status, back.text).toBe(200);
  await expectProxyUses(t.httpUrl, 'byok1', material);
});

it('names each refusal as KMS does and leaves the key as it was', async () => {
  await admin.call('CreateKey', { KeyId: 'byok2', Origin: 'EXTERNAL' });
  const p = await parameters('byok2');
  const blob = wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.publicKey, randomBytes(32));
  const token = Buffer.from(p.token, 'base64');
  const altered = Buffer.from(token);
  altered[altered.length - 1] ^= 1;
  const cases: [string, Record<string, unknown>, string][] = [
    ['an altered token', { ImportToken: altered.toString('base64'), EncryptedKeyMaterial: blob.toString('base64') }, 'InvalidImportTokenException'],
    ['a truncated blob', { ImportToken: p.token, EncryptedKeyMaterial: blob.subarray(0, blob.length - 8).toString('base64') }, 'InvalidCiphertextException'],
    ['material of 16 bytes', { ImportToken: p.token, EncryptedKeyMaterial: wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.publicKey, randomBytes(16)).toString('base64') }, 'IncorrectKeyMaterialException'],
    ['bad Base64', { ImportToken: 'not base64!', EncryptedKeyMaterial: blob.toString('base64') }, 'ValidationException'],
    ['a ValidTo without KEY_MATERIAL_EXPIRES', { ImportToken: p.token, EncryptedKeyMaterial: blob.toString('base64'), ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE', ValidTo: new Date(Date.now() + 86_400_000).toISOString() }, 'ValidationException'],
  ];
  for (const [what, body, name] of cases) {
    const r = await admin.call('ImportKeyMaterial', { KeyId: 'byok2', ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE', ...body });
    expect(r.status, what).toBe(400);
    expect(r.json.__type, `${what}: ${r.text}`).toBe(name);
    expect(await state('byok2'), what).toBe('PendingImport');
  }
  // A token for another key.
  await admin.call('CreateKey', { KeyId: 'byok3', Origin: 'EXTERNAL' });
  const other = await admin.call('ImportKeyMaterial', {
    KeyId: 'byok3',
    ImportToken: p.token,
    EncryptedKeyMaterial: blob.toString('base64'),
    ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
  });
  expect(other.json.__type).toBe('InvalidImportTokenException');
  expect(await state('byok3')).toBe('PendingImport');
  // Parameters for a key that does not exist, or that is not EXTERNAL.
  expect((await admin.call('GetParametersForImport', { KeyId: 'nope', WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' })).json.__type).toBe('NotFoundException');
  await admin.call('CreateKey', { KeyId: 'generated1' });
  const gen = await admin.call('GetParametersForImport', { KeyId: 'generated1', WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' });
  expect(gen.status).toBe(400);
  expect(['UnsupportedOperationException', 'KMSInvalidStateException']).toContain(gen.json.__type);
  // The refused token still works for its own key afterwards (nothing was consumed by the refusals).
  const ok = await admin.call('ImportKeyMaterial', { KeyId: 'byok2', ImportToken: p.token, EncryptedKeyMaterial: blob.toString('base64'), ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' });
  expect(ok.status, ok.text).toBe(200);
});

it('sweeps on request, for schedulers that call HTTP', async () => {
  const r = await admin.call('SweepImports', {});
  expect(r.status, r.text).toBe(200);
  expect(r.json).toHaveProperty('MaterialDestroyed');
});
