// The import token: opaque to the customer, authenticated by HMAC-SHA256 under a key that lives in the HSM
// (import-service.ts signs and verifies; this file only encodes). It binds everything GetParametersForImport decided:
//
//   "XKIT" | format 0x01 | algorithm (u8) | key spec (u8) | expiry (u64 BE, unix ms) | wrapping key nonce (16 bytes)
//   | key id length (u8) | key id (ASCII) | HMAC-SHA256 over everything before it (32 bytes)
//
// The wrapping key nonce names the RSA key pair in the token (import-objects.ts); the pair is destroyed after a
// successful import, which is what makes a token single-use.
import { EXTERNAL_KEY_ID } from '../keys/key-objects.js';
import type { WrappingAlgorithm, WrappingKeySpec } from './schemas.js';

const MAGIC = Buffer.from('XKIT', 'ascii');
const FORMAT = 1;
export const TOKEN_MAC_BYTES = 32;
export const WRAPPING_NONCE_BYTES = 16;

const ALGORITHMS: readonly WrappingAlgorithm[] = ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256', 'RSA_AES_KEY_WRAP_SHA_1', 'RSA_AES_KEY_WRAP_SHA_256'];
const SPECS: readonly WrappingKeySpec[] = ['RSA_2048', 'RSA_3072', 'RSA_4096'];

export interface ImportTokenFields {
  keyId: string;
  algorithm: WrappingAlgorithm;
  keySpec: WrappingKeySpec;
  expiresAt: Date;
  wrappingKeyNonce: Buffer;
}

/** The authenticated part of a token. */
export function encodeTokenBody(f: ImportTokenFields): Buffer {
  if (!EXTERNAL_KEY_ID.test(f.keyId)) throw new RangeError('not an external key id');
  if (f.wrappingKeyNonce.length !== WRAPPING_NONCE_BYTES) throw new RangeError('the wrapping key nonce is 16 bytes');
  const id = Buffer.from(f.keyId, 'ascii');
  const head = Buffer.alloc(4 + 1 + 1 + 1 + 8);
  MAGIC.copy(head, 0);
  head.writeUInt8(FORMAT, 4);
  head.writeUInt8(ALGORITHMS.indexOf(f.algorithm), 5);
  head.writeUInt8(SPECS.indexOf(f.keySpec), 6);
  head.writeBigUInt64BE(BigInt(f.expiresAt.getTime()), 7);
  return Buffer.concat([head, f.wrappingKeyNonce, Buffer.from([id.length]), id]);
}

export function sealToken(body: Buffer, mac: Buffer): Buffer {
  if (mac.length !== TOKEN_MAC_BYTES) throw new RangeError('the token MAC is 32 bytes');
  return Buffer.concat([body, mac]);
}

/** The token's parts, or undefined when it is not a well-formed token (its MAC is checked by the caller). */
export function openToken(token: Buffer): { body: Buffer; mac: Buffer; fields: ImportTokenFields } | undefined {
  const fixed = 4 + 1 + 1 + 1 + 8 + WRAPPING_NONCE_BYTES + 1;
  if (token.length < fixed + 1 + TOKEN_MAC_BYTES) return undefined;
  if (!token.subarray(0, 4).equals(MAGIC) || token[4] !== FORMAT) return undefined;
  const algorithm = ALGORITHMS[token[5]!];
  const keySpec = SPECS[token[6]!];
  const expiresMs = token.readBigUInt64BE(7);
  const idLength = token[fixed - 1]!;
  if (!algorithm || !keySpec || expiresMs > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  if (token.length !== fixed + idLength + TOKEN_MAC_BYTES) return undefined;
  const keyId = token.subarray(fixed, fixed + idLength).toString('latin1');
  if (!EXTERNAL_KEY_ID.test(keyId)) return undefined;
  return {
    body: token.subarray(0, fixed + idLength),
    mac: token.subarray(fixed + idLength),
    fields: {
      keyId,
      algorithm,
      keySpec,
      expiresAt: new Date(Number(expiresMs)),
      wrappingKeyNonce: Buffer.from(token.subarray(15, 15 + WRAPPING_NONCE_BYTES)),
    },
  };
}
