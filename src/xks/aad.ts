// The AAD given to AES-GCM (spec "Encrypt"): u16 BE length of AAD || AAD || u8 length of metadata || metadata.
// Binding ciphertextMetadata here is what makes a changed key version fail to decrypt.
import { createHash } from 'node:crypto';

export const MAX_AAD_BYTES = 0xffff;
export const MAX_METADATA_BYTES = 20; // KMS rejects longer ciphertextMetadata

export function buildGcmAad(aad: Buffer | undefined, metadata: Buffer | undefined): Buffer {
  const a = aad ?? EMPTY;
  const m = metadata ?? EMPTY;
  if (a.length > MAX_AAD_BYTES) throw new RangeError('AAD longer than 65535 bytes');
  if (m.length > MAX_METADATA_BYTES) throw new RangeError('ciphertextMetadata longer than 20 bytes');
  const out = Buffer.allocUnsafe(2 + a.length + 1 + m.length);
  out.writeUInt16BE(a.length, 0);
  a.copy(out, 2);
  out.writeUInt8(m.length, 2 + a.length);
  m.copy(out, 3 + a.length);
  return out;
}

const EMPTY = Buffer.alloc(0);

/**
 * The AAD AWS's sample proxy (aws-samples/aws-kms-xks-proxy, `build_full_aad`) gives AES-GCM, which is not the spec's:
 * u16 BE length of AAD || SHA-256(AAD) (only when the AAD field is present, even empty) || u8 length of metadata ||
 * metadata. Read only to decrypt ciphertexts that proxy made (operations.ts); never written.
 */
export function buildAwsSampleAad(aad: Buffer | undefined, metadata: Buffer | undefined): Buffer {
  const m = metadata ?? EMPTY;
  if (aad && aad.length > MAX_AAD_BYTES) throw new RangeError('AAD longer than 65535 bytes');
  if (m.length > MAX_METADATA_BYTES) throw new RangeError('ciphertextMetadata longer than 20 bytes');
  const digest = aad ? createHash('sha256').update(aad).digest() : EMPTY;
  const out = Buffer.allocUnsafe(2 + digest.length + 1 + m.length);
  out.writeUInt16BE(aad?.length ?? 0, 0);
  digest.copy(out, 2);
  out.writeUInt8(m.length, 2 + digest.length);
  m.copy(out, 3 + digest.length);
  return out;
}

/** Which AAD layout a decrypt authenticated under, when it was not the spec's (the request log and audit line say it). */
export type AadLayout = 'aws-sample';
