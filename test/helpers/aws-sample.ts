// AWS's sample proxy (aws-samples/aws-kms-xks-proxy) for tests: the known answers of issue 11 and ciphertexts made the way
// that proxy makes them (its build_full_aad layout, node:crypto's AES-256-GCM with a known key).
import { createCipheriv, randomBytes } from 'node:crypto';
import { buildAwsSampleAad } from '../../src/xks/aad.js';

export const SAMPLE_KEY = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
export const SAMPLE_IV = Buffer.from(Array.from({ length: 12 }, (_, i) => i));
export const SAMPLE_PLAINTEXT = Buffer.from('Hello World!');
export const SAMPLE_AAD = Buffer.from('project=nile,department=marketing');
export const SAMPLE_CIPHERTEXT = 'D2e6d6rFlXT/LfOq';
/** The tags: with the AAD and no metadata, with metadata "v0.0.1" (djAuMC4x), with no AAD field and no metadata. */
export const SAMPLE_TAGS = { aad: 'WdOD39Mw7MOTotY7BIAKZQ==', aadAndMetadata: 'OP6HjKrcsRMadGXP9jc2ZA==', nothing: '+DX8ZJOvQVMTeK7gwOAsdg==' };

/** A ciphertext as the sample proxy returns it, under `key`, for `aad` (undefined: no AAD field) and its static metadata. */
export function sampleEncrypt(key: Buffer, plaintext: Buffer, aad: Buffer | undefined, metadata: Buffer | undefined, iv = randomBytes(12)) {
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(buildAwsSampleAad(aad, metadata));
  const ciphertext = Buffer.concat([c.update(plaintext), c.final()]);
  return {
    ciphertext: ciphertext.toString('base64'),
    initializationVector: iv.toString('base64'),
    authenticationTag: c.getAuthTag().toString('base64'),
    ...(metadata ? { ciphertextMetadata: metadata.toString('base64') } : {}),
    ...(aad ? { additionalAuthenticatedData: aad.toString('base64') } : {}),
  };
}
