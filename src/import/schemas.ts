// The import's names and the admin API bodies, with KMS's field names (GetParametersForImport, ImportKeyMaterial,
// DeleteImportedKeyMaterial). Blobs travel in Base64, dates as ISO 8601 (or, as AWS SDKs send them, epoch seconds).
import { z } from 'zod';
import { ExpirationModelSchema } from '../keys/imported-material.js';
import { EXTERNAL_KEY_ID } from '../keys/key-objects.js';

export const WrappingAlgorithmSchema = z.enum(['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256', 'RSA_AES_KEY_WRAP_SHA_1', 'RSA_AES_KEY_WRAP_SHA_256'], {
  error: 'must be RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256',
});
export type WrappingAlgorithm = z.infer<typeof WrappingAlgorithmSchema>;

export const WrappingKeySpecSchema = z.enum(['RSA_2048', 'RSA_3072', 'RSA_4096'], { error: 'must be RSA_2048, RSA_3072 or RSA_4096' });
export type WrappingKeySpec = z.infer<typeof WrappingKeySpecSchema>;

export const ImportTypeSchema = z.enum(['NEW_KEY_MATERIAL', 'EXISTING_KEY_MATERIAL'], { error: 'must be NEW_KEY_MATERIAL or EXISTING_KEY_MATERIAL' });
export type ImportType = z.infer<typeof ImportTypeSchema>;

export const MODULUS_BITS: Record<WrappingKeySpec, number> = { RSA_2048: 2048, RSA_3072: 3072, RSA_4096: 4096 };

/** Symmetric key material is 32 raw bytes (AES-256). */
export const KEY_MATERIAL_BYTES = 32;
/** KMS: ValidTo at most 365 days ahead. */
export const MAX_VALID_TO_DAYS = 365;

const KeyId = z.string({ error: 'must be a string' }).regex(EXTERNAL_KEY_ID, 'must be an external key id: 1 to 128 characters of A-Za-z0-9._-');

/** Strict Base64 (KMS's blob type) of at most `max` bytes once decoded. */
function base64Blob(max: number) {
  return z
    .string({ error: 'must be a Base64 string' })
    .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, 'must be Base64')
    .transform((s) => Buffer.from(s, 'base64'))
    .refine((b) => b.length > 0 && b.length <= max, `must be 1 to ${max} bytes`);
}

/** An ISO 8601 date with a time zone, or epoch seconds (what AWS SDKs send for a timestamp). */
const Timestamp = z
  .union([z.iso.datetime({ offset: true, error: 'must be an ISO 8601 date with a time zone, or epoch seconds' }), z.number().finite()], {
    error: 'must be an ISO 8601 date with a time zone, or epoch seconds',
  })
  .transform((v) => (typeof v === 'number' ? new Date(v * 1000) : new Date(v)));

export const GetParametersForImportSchema = z.strictObject({
  KeyId,
  WrappingAlgorithm: WrappingAlgorithmSchema,
  WrappingKeySpec: WrappingKeySpecSchema,
});
export type GetParametersForImportRequest = z.infer<typeof GetParametersForImportSchema>;

export const ImportKeyMaterialSchema = z.strictObject({
  KeyId,
  ImportToken: base64Blob(1024),
  EncryptedKeyMaterial: base64Blob(4096),
  ExpirationModel: ExpirationModelSchema.optional(),
  ValidTo: Timestamp.optional(),
  ImportType: ImportTypeSchema.optional(),
});
export type ImportKeyMaterialRequest = z.infer<typeof ImportKeyMaterialSchema>;

export const DeleteImportedKeyMaterialSchema = z.strictObject({ KeyId });
export type DeleteImportedKeyMaterialRequest = z.infer<typeof DeleteImportedKeyMaterialSchema>;

/** Our own, for a scheduler that calls HTTP: the CLI's `xks import sweep`. */
export const SweepImportsSchema = z.strictObject({});

/** The admin API's operations of the import, X-Amz-Target XksAdmin.<name>. */
export const IMPORT_ADMIN_SCHEMAS = {
  GetParametersForImport: GetParametersForImportSchema,
  ImportKeyMaterial: ImportKeyMaterialSchema,
  DeleteImportedKeyMaterial: DeleteImportedKeyMaterialSchema,
  SweepImports: SweepImportsSchema,
} as const;

/** GetParametersForImport's answer as the admin API sends it: blobs in Base64, the date in ISO 8601. */
export function getParametersForImportResponse(p: { KeyId: string; ImportToken: Buffer; PublicKey: Buffer; ParametersValidTo: Date }) {
  return {
    KeyId: p.KeyId,
    ImportToken: p.ImportToken.toString('base64'),
    PublicKey: p.PublicKey.toString('base64'),
    ParametersValidTo: p.ParametersValidTo.toISOString(),
  };
}
