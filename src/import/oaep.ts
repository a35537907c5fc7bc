// EME-OAEP decoding (RFC 8017 section 7.1.2, step 3) with MGF1 and an empty label, for HSMs whose CKM_RSA_PKCS_OAEP
// lacks SHA-256 (SoftHSM 2.6): the HSM does the raw RSA (CKM_RSA_X_509) and this decodes its output. It only ever sees
// the ephemeral AES key of an RSA-AES blob, never customer key material (unless an operator opted in).
//
// Every malformed input gives the same error, and the checks run over every byte without an early exit, so neither the
// answer nor its timing says which check failed (Manger's attack needs to tell "first byte not zero" apart).
import { createHash } from 'node:crypto';

export type OaepHash = 'sha1' | 'sha256';

export const OAEP_HASH_BYTES: Record<OaepHash, number> = { sha1: 20, sha256: 32 };

/** The one error of a failed decoding (RFC 8017: "decryption error"). */
export class OaepDecodingError extends Error {
  override readonly name = 'OaepDecodingError';
  constructor() {
    super('decryption error');
  }
}

/** MGF1 (RFC 8017 appendix B.2.1). */
export function mgf1(hash: OaepHash, seed: Buffer, length: number): Buffer {
  const hLen = OAEP_HASH_BYTES[hash];
  const out = Buffer.alloc(Math.ceil(length / hLen) * hLen);
  const counter = Buffer.alloc(4);
  for (let i = 0; i * hLen < length; i++) {
    counter.writeUInt32BE(i, 0);
    createHash(hash).update(seed).update(counter).digest().copy(out, i * hLen);
  }
  return out.subarray(0, length);
}

/**
 * Decode EM (the raw RSA output, `k` bytes, k = the modulus length) into the message M. Throws OaepDecodingError for
 * every malformed input. The caller wipes `em` and the result when done.
 */
export function oaepDecode(em: Buffer, k: number, hash: OaepHash): Buffer {
  const hLen = OAEP_HASH_BYTES[hash];
  // Lengths are public (the modulus and the ciphertext length), so these checks may exit early.
  if (k < 2 * hLen + 2 || em.length !== k) throw new OaepDecodingError();
  const lHash = createHash(hash).digest(); // hash of the empty label
  const maskedSeed = em.subarray(1, 1 + hLen);
  const maskedDb = em.subarray(1 + hLen);
  const seed = xor(maskedSeed, mgf1(hash, maskedDb, hLen));
  const db = xor(maskedDb, mgf1(hash, seed, k - hLen - 1));

  let bad = em[0]!; // Y must be zero
  for (let i = 0; i < hLen; i++) bad |= db[i]! ^ lHash[i]!;
  // DB = lHash' || PS (zero bytes) || 0x01 || M: find the first non-zero byte after lHash', which must be 0x01.
  let found = 0; // 1 once the 0x01 separator was seen
  let index = 0; // its position
  for (let i = hLen; i < db.length; i++) {
    const b = db[i]!;
    const isOne = ((b ^ 1) - 1) >>> 31; // 1 when b == 0x01
    const isZero = (b - 1) >>> 31; // 1 when b == 0x00
    const before = found ^ 1;
    index |= i & -(before & isOne);
    bad |= (before & (isOne | isZero)) ^ before; // a byte before the separator that is neither 0x00 nor 0x01
    found |= isOne;
  }
  bad |= found ^ 1;
  const ok = bad === 0;
  const message = ok ? Buffer.from(db.subarray(index + 1)) : undefined;
  seed.fill(0);
  db.fill(0);
  if (!message) throw new OaepDecodingError();
  return message;
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}
