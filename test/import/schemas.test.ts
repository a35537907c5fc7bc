// The admin API bodies of the import (KMS's field names, Base64 blobs, ISO dates or epoch seconds), strict.
import { describe, expect, it } from 'vitest';
import { DeleteImportedKeyMaterialSchema, GetParametersForImportSchema, getParametersForImportResponse, ImportKeyMaterialSchema } from '../../src/import/schemas.js';

describe('admin API bodies', () => {
  it('GetParametersForImport: KMS names and values only', () => {
    expect(GetParametersForImportSchema.parse({ KeyId: 'k', WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256', WrappingKeySpec: 'RSA_4096' })).toEqual({
      KeyId: 'k',
      WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256',
      WrappingKeySpec: 'RSA_4096',
    });
    for (const bad of [
      { KeyId: 'k', WrappingAlgorithm: 'RSAES_PKCS1_V1_5', WrappingKeySpec: 'RSA_2048' },
      { KeyId: 'k', WrappingAlgorithm: 'SM2PKE', WrappingKeySpec: 'SM2' },
      { KeyId: 'k', WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_1024' },
      { KeyId: 'k/1', WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' },
      { KeyId: 'k', WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048', Extra: 1 },
    ]) {
      expect(GetParametersForImportSchema.safeParse(bad).success).toBe(false);
    }
  });

  it('ImportKeyMaterial: Base64 blobs become bytes; ValidTo as ISO 8601 or epoch seconds', () => {
    const body = { KeyId: 'k', ImportToken: Buffer.from('token').toString('base64'), EncryptedKeyMaterial: Buffer.from('blob!').toString('base64') };
    const iso = ImportKeyMaterialSchema.parse({ ...body, ExpirationModel: 'KEY_MATERIAL_EXPIRES', ValidTo: '2027-01-31T00:00:00Z', ImportType: 'NEW_KEY_MATERIAL' });
    expect(iso.ImportToken).toEqual(Buffer.from('token'));
    expect(iso.EncryptedKeyMaterial).toEqual(Buffer.from('blob!'));
    expect(iso.ValidTo).toEqual(new Date('2027-01-31T00:00:00Z'));
    const epoch = ImportKeyMaterialSchema.parse({ ...body, ValidTo: 1801353600 });
    expect(epoch.ValidTo).toEqual(new Date(1801353600 * 1000));
    expect(ImportKeyMaterialSchema.parse(body).ExpirationModel).toBeUndefined();
    for (const bad of [
      { ...body, ImportToken: 'not base64!' },
      { ...body, ImportToken: '' },
      { ...body, EncryptedKeyMaterial: Buffer.alloc(5000).toString('base64') },
      { ...body, ValidTo: 'next tuesday' },
      { ...body, ExpirationModel: 'SOMETIMES' },
      { ...body, ImportType: 'OLD_KEY_MATERIAL' },
      { ...body, WrappingAlgorithm: 'RSAES_OAEP_SHA_1' },
    ]) {
      expect(ImportKeyMaterialSchema.safeParse(bad).success).toBe(false);
    }
  });

  it('DeleteImportedKeyMaterial takes only KeyId; the parameters answer is Base64 and ISO', () => {
    expect(DeleteImportedKeyMaterialSchema.safeParse({ KeyId: 'k' }).success).toBe(true);
    expect(DeleteImportedKeyMaterialSchema.safeParse({ KeyId: 'k', Force: true }).success).toBe(false);
    expect(
      getParametersForImportResponse({ KeyId: 'k', ImportToken: Buffer.from([1, 2]), PublicKey: Buffer.from([3]), ParametersValidTo: new Date(0) }),
    ).toEqual({ KeyId: 'k', ImportToken: 'AQI=', PublicKey: 'Aw==', ParametersValidTo: '1970-01-01T00:00:00.000Z' });
  });
});
