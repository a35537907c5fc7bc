// The XKS operations as functions: typed request in, typed response out. No HTTP, no pkcs11js.
import { timingSafeEqual } from 'node:crypto';
import { HsmError } from '../hsm/errors.js';
import type { HsmConnection } from '../hsm/hsm-connection.js';
import type { ExternalKey, KeyCatalogue, KeyVersion } from '../keys/catalogue.js';
import { buildGcmAad } from './aad.js';
import { ciphertextDataIntegrityValue } from './cdiv.js';
import { decodeCiphertextMetadata, encodeCiphertextMetadata } from './ciphertext-metadata.js';
import { XksError } from './errors.js';
import type { DecryptRequest, EncryptRequest } from './schemas.js';

export interface XksDeps {
  hsm: HsmConnection;
  catalogue: KeyCatalogue;
}

// Each operation returns { body, keyVersion }: the response body and, for the request log, the key version used.

async function resolveKey(deps: XksDeps, keyId: string): Promise<ExternalKey> {
  const key = await deps.catalogue.resolve(keyId);
  if (!key) throw new XksError('KeyNotFoundException', `external key ${keyId} does not exist`);
  return key;
}

/** Run `op` on a key version; a stale handle (the object was replaced) re-resolves the key once. */
async function withVersion<T>(
  deps: XksDeps,
  keyId: string,
  pick: (key: ExternalKey) => KeyVersion,
  op: (v: KeyVersion) => Promise<T>,
): Promise<T> {
  let v = pick(await resolveKey(deps, keyId));
  try {
    return await op(v);
  } catch (e) {
    if (!(e instanceof HsmError) || e.kind !== 'ObjectHandleInvalid') throw e;
    deps.catalogue.invalidate(keyId);
    v = pick(await resolveKey(deps, keyId));
    return op(v);
  }
}

export async function getKeyMetadata(deps: XksDeps, keyId: string) {
  const key = await resolveKey(deps, keyId);
  const usage: string[] = [];
  if (key.current.encrypt) usage.push('ENCRYPT');
  if (key.current.decrypt) usage.push('DECRYPT');
  return {
    body: { keySpec: 'AES_256', keyUsage: usage, keyStatus: 'ENABLED' as const },
    keyVersion: key.current.version,
  };
}

export async function encrypt(deps: XksDeps, keyId: string, req: EncryptRequest) {
  const wantCdiv = req.ciphertextDataIntegrityValueAlgorithm === 'SHA_256';
  let used = 0;
  const result = await withVersion(deps, keyId, (k) => k.current, async (v) => {
    used = v.version;
    if (!v.encrypt) throw new XksError('InvalidKeyUsageException', `external key ${keyId} may not encrypt`);
    // The CDIV is proved by decrypting the fresh ciphertext, so it needs a key that may also decrypt.
    if (wantCdiv && !v.decrypt) throw new XksError('InvalidKeyUsageException', `external key ${keyId} may not decrypt, which a CDIV check needs`);
    const metadata = encodeCiphertextMetadata(v.version);
    const gcmAad = buildGcmAad(req.additionalAuthenticatedData, metadata);
    const out = await deps.hsm.encryptGcm(v.handle, req.plaintext, gcmAad);
    let cdiv: Buffer | undefined;
    if (wantCdiv) {
      cdiv = ciphertextDataIntegrityValue({ aad: req.additionalAuthenticatedData, metadata, ...out });
      const back = await deps.hsm.decryptGcm(v.handle, out.iv, out.ciphertext, out.tag, gcmAad);
      if (back.length !== req.plaintext.length || !timingSafeEqual(back, req.plaintext)) {
        throw new XksError('InternalException', 'the fresh ciphertext did not decrypt to the plaintext');
      }
    }
    return { out, metadata, cdiv };
  });
  return {
    body: {
      authenticationTag: result.out.tag.toString('base64'),
      ciphertext: result.out.ciphertext.toString('base64'),
      ...(result.cdiv ? { ciphertextDataIntegrityValue: result.cdiv.toString('base64') } : {}),
      ciphertextMetadata: result.metadata.toString('base64'),
      initializationVector: result.out.iv.toString('base64'),
    },
    keyVersion: used,
  };
}

export async function decrypt(deps: XksDeps, keyId: string, req: DecryptRequest) {
  // No metadata: a ciphertext from a proxy that does not version keys; it can only be version 1.
  const version = req.ciphertextMetadata === undefined ? 1 : decodeCiphertextMetadata(req.ciphertextMetadata);
  const bad = () => new XksError('InvalidCiphertextException', 'the ciphertext, IV, tag, AAD or metadata do not authenticate');
  if (version === undefined) throw bad();
  const gcmAad = buildGcmAad(req.additionalAuthenticatedData, req.ciphertextMetadata);
  const plaintext = await withVersion(
    deps,
    keyId,
    (k) => {
      const v = k.versions.get(version);
      if (!v) throw bad();
      return v;
    },
    async (v) => {
      if (!v.decrypt) throw new XksError('InvalidKeyUsageException', `external key ${keyId} may not decrypt`);
      return deps.hsm.decryptGcm(v.handle, req.initializationVector, req.ciphertext, req.authenticationTag, gcmAad);
    },
  );
  return { body: { plaintext: plaintext.toString('base64') }, keyVersion: version };
}
