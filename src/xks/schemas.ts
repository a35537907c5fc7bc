// XKS request bodies (spec "requestMetadata", "Encrypt", "Decrypt", "GetKeyMetadata", "GetHealthStatus").
// Unknown fields are ignored (KMS may add some); Base64 is strict; sizes are the spec's.
import { z } from 'zod';

/** Largest plaintext/ciphertext accepted (the spec asks for at least 4300 bytes). */
export const MAX_DATA_BYTES = 8192;
/** Largest AAD accepted (the spec asks for at least 8192 bytes). */
export const MAX_AAD_INPUT_BYTES = 16384;

/** Strict Base64: canonical padding, no whitespace, no URL alphabet; the decoded bytes are the parsed value. */
function base64(field: string, opts: { min: number; max: number; exact?: number[]; oversize?: 'unsupported' | 'invalid' }) {
  return z.string().transform((s, ctx) => {
    const buf = Buffer.from(s, 'base64');
    if (buf.toString('base64') !== s) {
      ctx.addIssue({ code: 'custom', message: `${field} is not valid Base64` });
      return z.NEVER;
    }
    if (opts.exact && !opts.exact.includes(buf.length)) {
      ctx.addIssue({ code: 'custom', message: `${field} must be ${opts.exact.join(' or ')} bytes` });
      return z.NEVER;
    }
    if (buf.length < opts.min) {
      ctx.addIssue({ code: 'custom', message: `${field} must not be empty` });
      return z.NEVER;
    }
    if (buf.length > opts.max) {
      // A size beyond what we support is UnsupportedOperationException (spec "Errors"); one beyond what the spec
      // allows is malformed.
      ctx.addIssue({
        code: 'custom',
        message: `${field} is longer than ${opts.max} bytes`,
        params: { tooLarge: (opts.oversize ?? 'unsupported') === 'unsupported' },
      });
      return z.NEVER;
    }
    return buf;
  });
}

const arn = z.string().max(2048);
const opaque = z.string().max(2048);

const healthMetadata = z.object({ kmsRequestId: opaque, kmsOperation: opaque });
const keyMetadataMetadata = healthMetadata.extend({ awsPrincipalArn: arn, kmsKeyArn: arn.optional() });
const cryptoMetadata = healthMetadata.extend({
  awsPrincipalArn: arn,
  kmsKeyArn: arn,
  kmsViaService: opaque.optional(),
  awsSourceVpc: opaque.optional(),
  awsSourceVpce: opaque.optional(),
});

export const HealthRequestSchema = z.object({ requestMetadata: healthMetadata });
export const KeyMetadataRequestSchema = z.object({ requestMetadata: keyMetadataMetadata });

export const EncryptRequestSchema = z.object({
  requestMetadata: cryptoMetadata,
  plaintext: base64('plaintext', { min: 1, max: MAX_DATA_BYTES }),
  encryptionAlgorithm: z.literal('AES_GCM', { error: 'encryptionAlgorithm must be AES_GCM' }),
  additionalAuthenticatedData: base64('additionalAuthenticatedData', { min: 0, max: MAX_AAD_INPUT_BYTES }).optional(),
  ciphertextDataIntegrityValueAlgorithm: z
    .literal('SHA_256', { error: 'ciphertextDataIntegrityValueAlgorithm must be SHA_256' })
    .optional(),
});

export const DecryptRequestSchema = z.object({
  requestMetadata: cryptoMetadata,
  ciphertext: base64('ciphertext', { min: 1, max: MAX_DATA_BYTES }),
  encryptionAlgorithm: z.literal('AES_GCM', { error: 'encryptionAlgorithm must be AES_GCM' }),
  additionalAuthenticatedData: base64('additionalAuthenticatedData', { min: 0, max: MAX_AAD_INPUT_BYTES }).optional(),
  ciphertextMetadata: base64('ciphertextMetadata', { min: 0, max: 20, oversize: 'invalid' }).optional(),
  initializationVector: base64('initializationVector', { min: 12, max: 16, exact: [12, 16] }),
  authenticationTag: base64('authenticationTag', { min: 16, max: 16, exact: [16] }),
});

export type HealthRequest = z.infer<typeof HealthRequestSchema>;
export type KeyMetadataRequest = z.infer<typeof KeyMetadataRequestSchema>;
export type EncryptRequest = z.infer<typeof EncryptRequestSchema>;
export type DecryptRequest = z.infer<typeof DecryptRequestSchema>;
export type RequestMetadata = z.infer<typeof cryptoMetadata> | z.infer<typeof keyMetadataMetadata> | z.infer<typeof healthMetadata>;
