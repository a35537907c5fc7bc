// The XKS operations as functions: typed request in, typed response out. No HTTP, no pkcs11js.
import { timingSafeEqual } from 'node:crypto';
import { HsmError } from '../hsm/errors.js';
import type { KeyStore } from '../hsm/key-store.js';
import { usageOf, type ExternalKey, type KeyCatalogue, type KeyVersion } from '../keys/catalogue.js';
import { refusedExposure } from '../keys/exposure.js';
import { materialExpired } from '../keys/imported-material.js';
import { buildAwsSampleAad, buildGcmAad, type AadLayout } from './aad.js';
import { ciphertextDataIntegrityValue } from './cdiv.js';
import { decodeCiphertextMetadata, encodeCiphertextMetadata } from './ciphertext-metadata.js';
import type { EncryptionBudget } from './encryption-budget.js';
import { XksError } from './errors.js';
import type { DecryptRequest, EncryptRequest } from './schemas.js';

export interface XksDeps {
  hsm: KeyStore;
  catalogue: KeyCatalogue;
  /** Counts encryptions per key version against the blocks reserved in the HSM (NIST SP 800-38D's 2^32 bound). */
  encryptions: EncryptionBudget;
  /**
   * A decrypt without this proxy's ciphertextMetadata that does not authenticate under the spec's AAD layout is tried
   * once more under AWS's sample proxy's layout (config xks.awsSampleAadFallback; absent: on, the config's default).
   */
  awsSampleAadFallback?: boolean | undefined;
}

// Each operation returns { body, keyVersion }: the response body and, for the request log, the key version used.

async function resolveKey(deps: XksDeps, keyId: string): Promise<ExternalKey> {
  const key = await deps.catalogue.resolve(keyId);
  if (!key) throw new XksError('KeyNotFoundException', `external key ${keyId} does not exist`);
  return key;
}

/** Chooses the version to use; undefined when the cached key does not have it (it may be newer than the cache). */
type ChooseVersion = (key: ExternalKey) => KeyVersion | undefined;

/** One use of a key version by an operation. */
interface VersionUse<T> {
  keyId: string;
  choose: ChooseVersion;
  /** The error when no version fits, even after the token was read again. */
  missing: () => XksError;
  run: (v: KeyVersion) => Promise<T>;
  /** The key when the caller has already resolved and checked it (decrypt does, for the spec's order of checks). */
  resolved?: ExternalKey | undefined;
}

/** Encrypt and decrypt need an enabled key (spec: InvalidStateException for a disabled one). */
function checkEnabled(keyId: string, key: ExternalKey): void {
  if (key.state !== 'Enabled') throw new XksError('InvalidStateException', `external key ${keyId} is ${key.state}`);
  if (key.problems.length > 0 && !key.record) throw new XksError('InvalidStateException', `external key ${keyId} cannot be used: ${key.problems.join('; ')}`);
  if (!key.current) throw new XksError('InvalidStateException', `external key ${keyId} has no key material`);
  // Imported material past its ValidTo is unusable at once, before a sweep destroys it.
  if (materialExpired(key.record, Date.now())) throw new XksError('InvalidStateException', `external key ${keyId} has expired key material`);
  // Material that can leave the HSM (not sensitive, or extractable to any key) is not served unless the operator chose to.
  const exposed = refusedExposure(key, key.current);
  if (exposed) throw new XksError('InvalidStateException', exposed);
}

function usable(keyId: string, key: ExternalKey, v: KeyVersion): KeyVersion {
  // Two token objects for one version: which one a process finds first differs between processes, so serving either
  // could encrypt under different material on different replicas. Refuse until an operator removes one.
  if (key.duplicateVersions.has(v.version)) {
    throw new XksError('InvalidStateException', `external key ${keyId} has more than one token object for version ${v.version}`);
  }
  if (materialExpired(key.record, Date.now(), v.version)) {
    throw new XksError('InvalidStateException', `external key ${keyId} has expired key material for version ${v.version}`);
  }
  const exposed = refusedExposure(key, v);
  if (exposed) throw new XksError('InvalidStateException', exposed);
  return v;
}

/**
 * Run `use.run` on the version `use.choose` picks. A version missing from the cache re-reads the token (another process may have added it),
 * at most once a second per key (catalogue.refreshForVersion); a stale handle (the object or its session copy was replaced) re-resolves the key once.
 */
async function withVersion<T>(deps: XksDeps, use: VersionUse<T>): Promise<T> {
  const { keyId, choose, missing, run, resolved } = use;
  let key = resolved ?? (await resolveKey(deps, keyId));
  if (!resolved) checkEnabled(keyId, key);
  let v = choose(key);
  if (!v) {
    key = (await deps.catalogue.refreshForVersion(keyId)) ?? key;
    checkEnabled(keyId, key);
    v = choose(key);
    if (!v) throw missing();
  }
  try {
    return await run(usable(keyId, key, v));
  } catch (e) {
    if (!(e instanceof HsmError) || e.code !== 'ObjectHandleInvalid') throw e;
    deps.catalogue.invalidate(keyId, v.handle);
    key = await resolveKey(deps, keyId);
    checkEnabled(keyId, key);
    const again = choose(key);
    if (!again) throw missing();
    return run(usable(keyId, key, again));
  }
}

export async function getKeyMetadata(deps: XksDeps, keyId: string) {
  const key = await resolveKey(deps, keyId);
  // Nothing the proxy can serve as AES_256 (only a key of another size carries the id): say so rather than describe it.
  if (!key.current && !key.record && key.problems.length > 0) {
    throw new XksError('InvalidStateException', `external key ${keyId} cannot be used: ${key.problems.join('; ')}`);
  }
  const { encrypt, decrypt } = usageOf(key);
  const usage: string[] = [];
  if (encrypt) usage.push('ENCRYPT');
  if (decrypt) usage.push('DECRYPT');
  // Any state but Enabled (Disabled, PendingDeletion, PendingImport) reads as DISABLED to KMS; so does a current
  // version whose material can leave the HSM, unless the operator allowed it (keys/exposure.ts).
  const enabled =
    key.state === 'Enabled' && key.current !== undefined && !materialExpired(key.record, Date.now()) && !refusedExposure(key, key.current);
  return {
    body: { keySpec: 'AES_256', keyUsage: usage, keyStatus: enabled ? ('ENABLED' as const) : ('DISABLED' as const) },
    keyVersion: key.current?.version,
  };
}

export async function encrypt(deps: XksDeps, keyId: string, req: EncryptRequest) {
  const wantCdiv = req.ciphertextDataIntegrityValueAlgorithm === 'SHA_256';
  let used = 0;
  const noKey = () => new XksError('KeyNotFoundException', `external key ${keyId} does not exist`);
  const result = await withVersion(deps, { keyId, choose: (k) => k.current, missing: noKey, run: async (v) => {
    used = v.version;
    if (!v.encrypt) throw new XksError('InvalidKeyUsageException', `external key ${keyId} may not encrypt`);
    // The CDIV is proved by decrypting the fresh ciphertext, so it needs a key that may also decrypt.
    if (wantCdiv && !v.decrypt) throw new XksError('InvalidKeyUsageException', `external key ${keyId} may not decrypt, which a CDIV check needs`);
    // Counted before the HSM call: an encryption that then fails may still have used an IV.
    const reserving = deps.encryptions.take(keyId, v);
    if (reserving) await reserving;
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
  } });
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
  const bad = () => new XksError('InvalidCiphertextException', 'the ciphertext, IV, tag, AAD or metadata do not authenticate');
  // The spec's order: the key exists (404), then may decrypt (400 usage), then the inputs authenticate.
  const key = await resolveKey(deps, keyId);
  checkEnabled(keyId, key);
  if (!usageOf(key).decrypt && ![...key.versions.values()].some((v) => v.decrypt)) throw new XksError('InvalidKeyUsageException', `external key ${keyId} may not decrypt`);
  const metadata = req.ciphertextMetadata;
  // No metadata: a ciphertext from a proxy that does not version keys; it can only be version 1.
  const version = metadata === undefined ? 1 : decodeCiphertextMetadata(metadata);
  // AWS's sample proxy wrote no metadata or a static value of its own, under its own AAD layout (aad.ts), with the key
  // that is version 1 here. Its ciphertexts must keep decrypting for as long as their data lives.
  const fallback = deps.awsSampleAadFallback !== false;
  const sample = fallback && version === undefined;
  if (version === undefined && !sample) throw bad();
  let layout: AadLayout | undefined;
  const plaintext = sample
    ? await withVersion(deps, { keyId, choose: (k) => k.versions.get(1), missing: bad, run: sampleOnly, resolved: key })
    : await withVersion(deps, { keyId, choose: (k) => k.versions.get(version!), missing: bad, run: decryptWith, resolved: key });
  return { body: { plaintext: plaintext.toString('base64') }, keyVersion: sample ? 1 : version, aadLayout: layout };

  async function decryptWith(v: KeyVersion): Promise<Buffer> {
    if (!v.decrypt) throw new XksError('InvalidKeyUsageException', `external key ${keyId} may not decrypt`);
    const gcmAad = buildGcmAad(req.additionalAuthenticatedData, metadata);
    try {
      return await deps.hsm.decryptGcm(v.handle, req.initializationVector, req.ciphertext, req.authenticationTag, gcmAad);
    } catch (e) {
      if (!badTag(e)) throw e;
      // Other objects committed as the same version (catalogue.ts): the GCM tag says which one encrypted.
      for (const alt of v.alternates) {
        try {
          return await deps.hsm.decryptGcm(alt.handle, req.initializationVector, req.ciphertext, req.authenticationTag, gcmAad);
        } catch (again) {
          if (!badTag(again)) throw again;
        }
      }
      // Only after a failed tag check, so the spec's path costs nothing more: one more HSM call, under the sample's layout.
      if (metadata !== undefined || !fallback) throw e;
      try {
        return await sampleOnly(v);
      } catch (again) {
        throw badTag(again) ? e : again;
      }
    }
  }

  async function sampleOnly(v: KeyVersion): Promise<Buffer> {
    if (!v.decrypt) throw new XksError('InvalidKeyUsageException', `external key ${keyId} may not decrypt`);
    const gcmAad = buildAwsSampleAad(req.additionalAuthenticatedData, metadata);
    const out = await deps.hsm.decryptGcm(v.handle, req.initializationVector, req.ciphertext, req.authenticationTag, gcmAad);
    layout = 'aws-sample';
    return out;
  }
}

/** A GCM tag that did not authenticate (the inputs, not the HSM, are wrong). */
function badTag(e: unknown): boolean {
  return e instanceof HsmError && e.code === 'DataInvalid';
}
