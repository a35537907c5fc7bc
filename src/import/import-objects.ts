// The import's own token objects. Their labels contain ':', which no external key id may, so they can never be taken
// for a key (and they are RSA keys or a generic secret without a record, which the catalogue skips anyway).
//   RSA key pair       label "xks:import-wrapping-key", CKA_ID "xks:w1;n=<nonce hex>;x=<expiry, unix ms>"
//   generic secret     label "xks:import-token-key",    CKA_ID "xks:import-token-key;n=<nonce>"   (HMAC key of import
//                                                        tokens; "xks:import-token-key:v1" from earlier releases)
// Every CKA_ID is unique: NSS takes a new key with an existing CKA_CLASS and CKA_ID for the same object.
// The expiry in the pair's CKA_ID lets any process sweep pairs past their 24 hours, including after a restart.
import { WRAPPING_NONCE_BYTES } from './import-token.js';

export const WRAPPING_KEY_LABEL = 'xks:import-wrapping-key';
export const TOKEN_KEY_LABEL = 'xks:import-token-key';
const LEGACY_TOKEN_KEY_ID = 'xks:import-token-key:v1';
const TOKEN_KEY_ID = /^xks:import-token-key;n=[0-9a-f]{24}$/;

export function tokenKeyId(nonce: string): Buffer {
  return Buffer.from(`xks:import-token-key;n=${nonce}`, 'ascii');
}

export function isTokenKeyId(id: Buffer): boolean {
  const text = id.toString('latin1');
  return text === LEGACY_TOKEN_KEY_ID || TOKEN_KEY_ID.test(text);
}

const WRAPPING_ID = /^xks:w1;n=([0-9a-f]{32});x=([0-9]{1,15})$/;

export function wrappingKeyId(nonce: Buffer, expiresAt: Date): Buffer {
  if (nonce.length !== WRAPPING_NONCE_BYTES) throw new RangeError('the wrapping key nonce is 16 bytes');
  return Buffer.from(`xks:w1;n=${nonce.toString('hex')};x=${expiresAt.getTime()}`, 'ascii');
}

export function parseWrappingKeyId(id: Buffer): { nonce: Buffer; expiresAt: Date } | undefined {
  const m = WRAPPING_ID.exec(id.toString('latin1'));
  if (!m) return undefined;
  return { nonce: Buffer.from(m[1]!, 'hex'), expiresAt: new Date(Number(m[2])) };
}
