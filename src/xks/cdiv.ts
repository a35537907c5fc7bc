// Ciphertext data integrity value (spec "Encrypt"): SHA-256 over AAD || metadata || IV || ciphertext || tag, raw bytes.
import { createHash } from 'node:crypto';

export function ciphertextDataIntegrityValue(parts: {
  aad?: Buffer | undefined;
  metadata?: Buffer | undefined;
  iv: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}): Buffer {
  const h = createHash('sha256');
  if (parts.aad) h.update(parts.aad);
  if (parts.metadata) h.update(parts.metadata);
  return h.update(parts.iv).update(parts.ciphertext).update(parts.tag).digest();
}
