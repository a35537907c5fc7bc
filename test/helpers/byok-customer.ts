// What a customer does with WrappingPublicKey.bin, made with node:crypto (byok.md: publicEncrypt with oaepHash, and the
// id-aes256-wrap-pad cipher with IV A65959A6), and how a test proves the HSM holds exactly the customer's key: an XKS
// encrypt through the proxy, decrypted here with the known material.
import { constants, createCipheriv, createDecipheriv, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import type { WrappingAlgorithm } from '../../src/import/schemas.js';
import { buildGcmAad } from '../../src/xks/aad.js';
import { xksClient } from './xks-client.js';

export const ALGORITHMS: WrappingAlgorithm[] = ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256', 'RSA_AES_KEY_WRAP_SHA_1', 'RSA_AES_KEY_WRAP_SHA_256'];

export function kwp(key: Buffer, data: Buffer): Buffer {
  const c = createCipheriv('id-aes256-wrap-pad', key, Buffer.from('A65959A6', 'hex'));
  return Buffer.concat([c.update(data), c.final()]);
}

/** The EncryptedKeyMaterial a customer makes for `algorithm` under the wrapping public key (DER SPKI). */
export function wrapMaterial(algorithm: WrappingAlgorithm, publicKeyDer: Buffer, material: Buffer, ephemeral = randomBytes(32)): Buffer {
  const key = createPublicKey({ key: publicKeyDer, format: 'der', type: 'spki' });
  const oaepHash = algorithm.endsWith('SHA_256') ? 'sha256' : 'sha1';
  const oaep = (m: Buffer) => publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, m);
  if (algorithm.startsWith('RSAES_OAEP')) return oaep(material);
  return Buffer.concat([oaep(ephemeral), kwp(ephemeral, material)]);
}

/** Encrypt through the proxy (XKS over a socket) and decrypt in node:crypto with `material`: they must agree. */
export async function expectProxyUses(httpUrl: string, keyId: string, material: Buffer): Promise<any> {
  const xks = xksClient(httpUrl);
  const plaintext = randomBytes(48);
  const aad = Buffer.from(`aad for ${keyId}`);
  const r = await xks.encrypt(keyId, plaintext, { additionalAuthenticatedData: aad.toString('base64') });
  expect(r.status, r.text).toBe(200);
  const metadata = Buffer.from(r.json.ciphertextMetadata, 'base64');
  const d = createDecipheriv('aes-256-gcm', material, Buffer.from(r.json.initializationVector, 'base64'));
  d.setAAD(buildGcmAad(aad, metadata));
  d.setAuthTag(Buffer.from(r.json.authenticationTag, 'base64'));
  expect(Buffer.concat([d.update(Buffer.from(r.json.ciphertext, 'base64')), d.final()])).toEqual(plaintext);
  return { ...r.json, aad };
}
