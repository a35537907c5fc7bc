// Imported material whose ValidTo passes stops working through XKS at once, with the real clock and before any sweep
// destroys it: GetKeyMetadata answers DISABLED, Encrypt and Decrypt InvalidStateException.
import { randomBytes } from 'node:crypto';
import { expect, it } from 'vitest';
import { ImportService } from '../../src/import/import-service.js';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';
import { wrapMaterial } from '../helpers/byok-customer.js';

const t = useProxyOnToken();

it('stops serving material the moment its ValidTo passes, before a sweep', async () => {
  const id = 'short-lived';
  const svc = new ImportService(t.proxy.hsm, t.proxy.catalogue, t.proxy.lifecycle, {});
  await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
  const p = await svc.getParametersForImport({ KeyId: id, WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256', WrappingKeySpec: 'RSA_2048' });
  const validTo = new Date(Date.now() + 3_000);
  await svc.importKeyMaterial({
    KeyId: id,
    ImportToken: p.ImportToken,
    EncryptedKeyMaterial: wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', p.PublicKey, randomBytes(32)),
    ExpirationModel: 'KEY_MATERIAL_EXPIRES',
    ValidTo: validTo,
  });
  const xks = xksClient(t.httpUrl);
  const made = await xks.encrypt(id, Buffer.from('before expiry'));
  expect(made.status, made.text).toBe(200);
  expect((await xks.metadata(id)).json.keyStatus).toBe('ENABLED');

  await new Promise((r) => setTimeout(r, Math.max(0, validTo.getTime() - Date.now()) + 200));
  const meta = await xks.metadata(id);
  expect(meta.status).toBe(200);
  expect(meta.json.keyStatus).toBe('DISABLED');
  const enc = await xks.encrypt(id, Buffer.from('after expiry'));
  expect(enc.status).toBe(400);
  expect(enc.json.errorName).toBe('InvalidStateException');
  const dec = await xks.decrypt(id, decryptFields(made.json));
  expect(dec.status).toBe(400);
  expect(dec.json.errorName).toBe('InvalidStateException');
  // Nothing was swept yet: the material object is still in the token, just refused.
  expect((await t.proxy.lifecycle.get(id)).versions.size).toBe(1);
});
