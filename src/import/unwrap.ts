// Unwrap strategies: how a customer's blob becomes objects in the HSM, chosen from what the HSM can do.
//
//   RSAES_OAEP_*            oaep-unwrap   C_UnwrapKey(CKM_RSA_PKCS_OAEP) of the material itself, inside the HSM
//                           raw-decrypt   C_Decrypt(CKM_RSA_X_509) + OAEP decoding here: the MATERIAL passes through
//                                         process memory, so only with the operator's explicit opt-in
//   RSA_AES_KEY_WRAP_*      oaep-unwrap   C_UnwrapKey(CKM_RSA_PKCS_OAEP) of the ephemeral AES key into a session
//                                         object, then C_UnwrapKey(CKM_AES_KEY_WRAP_PAD) of the material
//                           raw-decrypt   C_Decrypt(CKM_RSA_X_509) + OAEP decoding here of the EPHEMERAL AES key only
//                                         (created as a sensitive unwrap-only session object, buffers wiped), then KWP
//
// CKM_RSA_AES_KEY_WRAP itself is never used: pkcs11js cannot pass its parameter structure, and the two steps give the
// same result (pkcs11-softhsm.md). Every failure of any step is the same InvalidCiphertextException.
import { createPublicKey, publicEncrypt, constants, randomBytes } from 'node:crypto';
import { HsmError, isHsmUnavailable } from '../hsm/errors.js';
import type { Handle, KeyStore } from '../hsm/key-store.js';
import { AES_CMAC, HMAC_SHA256, RSA_KEY_PAIR_GEN, RSA_RAW, rsaOaepMechanism as oaepMechanism, type Mechanism } from '../hsm/mechanisms.js';
import { withValue, type KeyTemplate } from '../hsm/templates.js';
import { KeyError } from '../keys/errors.js';
import { notUnwrappable } from './errors.js';
import { cmacProbeTemplate, ephemeralAesKeyTemplate, hmacProbeTemplate, wrappingPrivateKeyTemplate, wrappingPublicKeyTemplate, type WrappingKeyUse } from './import-templates.js';
import { oaepDecode, type OaepHash } from './oaep.js';
import { KEY_MATERIAL_BYTES, type WrappingAlgorithm } from './schemas.js';

export interface AlgorithmParts {
  /** direct: RSA-OAEP of the material; rsa-aes: RSA-OAEP of an ephemeral AES-256 key, then AES-KWP of the material. */
  kind: 'direct' | 'rsa-aes';
  hash: OaepHash;
}

export function algorithmParts(a: WrappingAlgorithm): AlgorithmParts {
  return {
    kind: a.startsWith('RSA_AES_KEY_WRAP') ? 'rsa-aes' : 'direct',
    hash: a.endsWith('SHA_256') ? 'sha256' : 'sha1',
  };
}

/** RFC 5649: 32 bytes of material wrap into 40. */
const KWP_OF_MATERIAL_BYTES = 8 + KEY_MATERIAL_BYTES;

/**
 * Errors that say the HSM is unavailable or busy, not that the blob is bad: passed on, so the caller may retry. A stale
 * handle is not one of them here: an import's wrapping key that vanished was used or swept by another process.
 */
export function isInfrastructure(e: unknown): boolean {
  return isHsmUnavailable(e) && e.code !== 'ObjectHandleInvalid';
}

/** Any other failure of a step on the blob becomes the one InvalidCiphertextException. */
async function orNotUnwrappable<T>(step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (e) {
    if (isInfrastructure(e)) throw e;
    // The blob unwrapped (its integrity check passed) into material of a size the key type cannot take (NSS checks an
    // AES key's length at unwrap): the material is not an AES-256 key.
    if (e instanceof HsmError && e.ckr === 'CKR_KEY_SIZE_RANGE') throw incorrectLength();
    throw notUnwrappable();
  }
}

/** The customer's material, held inside the HSM (or, opted in, in memory): each call makes one more object of it. */
export interface MaterialSource {
  materialize(template: KeyTemplate): Promise<Handle>;
  /** For KWP blobs: the wrapped length says the material is 25 to 32 bytes (RFC 5649 pads to 8). */
  readonly kwpLengthFits?: boolean;
  /** For the opted-in in-process path: the material's length, known exactly. */
  readonly knownLength?: number;
  dispose(): Promise<void>;
}

export interface OpenSourceOptions {
  hsm: KeyStore;
  privateKey: Handle;
  /** The modulus length in bytes. */
  k: number;
  algorithm: WrappingAlgorithm;
  use: WrappingKeyUse;
  blob: Buffer;
}

/** Open the blob with the strategy the wrapping key was made for. The caller has checked the in-process opt-in. */
export async function openMaterialSource(o: OpenSourceOptions): Promise<MaterialSource> {
  const { hsm, privateKey, k, blob } = o;
  const { kind, hash } = algorithmParts(o.algorithm);
  if (kind === 'direct') {
    if (blob.length !== k) throw notUnwrappable();
    if (o.use === 'oaep-unwrap') {
      return { materialize: (t) => orNotUnwrappable(() => hsm.unwrapUntrusted(oaepMechanism(hash), privateKey, blob, t)), dispose: async () => undefined };
    }
    const em = leftPad(await orNotUnwrappable(() => hsm.decryptUntrusted(RSA_RAW, privateKey, blob, k)), k);
    let material: Buffer;
    try {
      material = oaepDecode(em, k, hash);
    } catch {
      throw notUnwrappable();
    } finally {
      em.fill(0);
    }
    return {
      knownLength: material.length,
      // Only with the operator's opt-in (import.allowInProcessMaterial), logged: the material is written into the HSM,
      // never read from it, and wiped from memory by dispose().
      materialize: (t) => hsm.createObject(withValue(t, material)),
      dispose: async () => {
        material.fill(0);
      },
    };
  }

  // RSA-AES: RSA-OAEP(ephemeral AES-256 key) || AES-KWP(ephemeral key, material), split at the modulus length.
  if (blob.length < k + 16 || (blob.length - k) % 8 !== 0) throw notUnwrappable();
  const wrappedKey = blob.subarray(0, k);
  const wrappedMaterial = blob.subarray(k);
  const kwp = hsm.keyWrap();
  let ephemeral: Handle;
  let decodedBadly = false;
  if (o.use === 'oaep-unwrap') {
    ephemeral = await orNotUnwrappable(() => hsm.unwrapUntrusted(oaepMechanism(hash), privateKey, wrappedKey, ephemeralAesKeyTemplate(kwp)));
  } else {
    const em = leftPad(await orNotUnwrappable(() => hsm.decryptUntrusted(RSA_RAW, privateKey, wrappedKey, k)), k);
    let aesKey: Buffer;
    try {
      aesKey = oaepDecode(em, k, hash);
      if (aesKey.length !== 32) throw new Error('not an AES-256 key');
    } catch {
      // Carry on with a random key, so that a bad OAEP encoding fails at the KWP step like any other bad blob: the
      // answer, and the path taken to it, do not tell the two apart.
      decodedBadly = true;
      aesKey = randomBytes(32);
    } finally {
      em.fill(0);
    }
    try {
      ephemeral = await hsm.createObject(withValue(ephemeralAesKeyTemplate(kwp), aesKey));
    } finally {
      aesKey.fill(0);
    }
  }
  return {
    kwpLengthFits: wrappedMaterial.length === KWP_OF_MATERIAL_BYTES,
    materialize: async (t) => {
      const h = await orNotUnwrappable(() => hsm.unwrapUntrusted(kwp, ephemeral, wrappedMaterial, t));
      if (decodedBadly) {
        // 2^-64 (the KWP integrity check): a random key that unwrapped anyway is still not the customer's key.
        await hsm.destroyObject(h).catch(() => undefined);
        throw notUnwrappable();
      }
      return h;
    },
    dispose: () => hsm.destroyObject(ephemeral).catch(() => undefined),
  };
}

/** `b` left-padded with zeros to k bytes; a shorter `b` is wiped once copied, so the caller wipes what it gets back. */
function leftPad(b: Buffer, k: number): Buffer {
  if (b.length >= k) return b;
  const out = Buffer.alloc(k);
  b.copy(out, k - b.length);
  b.fill(0);
  return out;
}

/** HMAC-SHA256 of the material over this label, first 16 bytes: the fingerprint kept per imported version. */
export const KCV_LABEL = Buffer.from('xks-proxy import key check value v1', 'ascii');

function incorrectLength(): KeyError {
  return new KeyError('IncorrectKeyMaterialException', `the key material must be ${KEY_MATERIAL_BYTES} bytes (AES-256)`);
}

/**
 * Check inside the HSM that the material is 32 bytes, and compute its fingerprint there, on two short-lived session
 * objects of it. CKA_VALUE_LEN says the length where the HSM reports it (SoftHSM 2.6 reports 0 for unwrapped keys);
 * otherwise AES-CMAC works only for a valid AES key (16, 24 or 32 bytes) and HMAC-SHA256 only for one of at least 32
 * bytes (SoftHSM enforces the digest length): both together leave exactly 32.
 */
export async function checkMaterial(hsm: KeyStore, source: MaterialSource): Promise<Buffer> {
  if (source.knownLength !== undefined && source.knownLength !== KEY_MATERIAL_BYTES) throw incorrectLength();
  const hmacProbe = await source.materialize(hmacProbeTemplate());
  let cmacProbe: Handle | undefined;
  try {
    if (source.kwpLengthFits === false) throw incorrectLength();
    cmacProbe = await source.materialize(cmacProbeTemplate());
    const [len] = await hsm.getAttributes(hmacProbe, ['valueLen']);
    const reported = len && len.length >= 4 ? Number(len.length >= 8 ? len.readBigUInt64LE(0) : len.readUInt32LE(0)) : 0;
    if (reported !== 0 && reported !== KEY_MATERIAL_BYTES) throw incorrectLength();
    try {
      await hsm.sign(AES_CMAC, cmacProbe, Buffer.alloc(16));
    } catch (e) {
      if (isInfrastructure(e)) throw e;
      throw incorrectLength();
    }
    let mac: Buffer;
    try {
      mac = await hsm.sign(HMAC_SHA256, hmacProbe, KCV_LABEL);
    } catch (e) {
      if (isInfrastructure(e)) throw e;
      throw incorrectLength();
    }
    return mac.subarray(0, 16);
  } finally {
    await hsm.destroyObject(hmacProbe).catch(() => undefined);
    if (cmacProbe) await hsm.destroyObject(cmacProbe).catch(() => undefined);
  }
}

/** The customer's WrappingPublicKey: DER SubjectPublicKeyInfo of the pair's public half. */
export async function publicKeyDer(hsm: KeyStore, publicKey: Handle): Promise<Buffer> {
  const [n, e] = await hsm.getAttributes(publicKey, ['modulus', 'publicExponent']);
  if (!n || !e) throw new HsmError('Unknown', 'the wrapping public key has no modulus or exponent');
  return createPublicKey({ key: { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') }, format: 'jwk' }).export({ type: 'spki', format: 'der' });
}

const probes = new WeakMap<KeyStore, Promise<boolean>>();

/**
 * Whether the HSM's CKM_RSA_PKCS_OAEP takes SHA-256 (SoftHSM 2.6: no, CKR_ARGUMENTS_BAD). Mechanism lists do not say
 * which hashes a mechanism takes, so ask once per connection: a throwaway session key pair, a blob made here, one unwrap.
 */
export function nativeOaepSha256(hsm: KeyStore): Promise<boolean> {
  if (!hsm.capabilities.rsaOaepUnwrap || !hsm.capabilities.rsaKeyPairGen) return Promise.resolve(false);
  let p = probes.get(hsm);
  if (!p) {
    p = probeOaepSha256(hsm);
    probes.set(hsm, p);
    // An HSM that was unavailable says nothing about its mechanisms: ask again next time.
    p.catch(() => probes.delete(hsm));
  }
  return p;
}

async function probeOaepSha256(hsm: KeyStore): Promise<boolean> {
  const spec = { label: 'xks:import-probe', id: Buffer.from('probe'), modulusBits: 2048, use: 'oaep-unwrap' as const, token: false };
  const pair = await hsm.generateKeyPair(RSA_KEY_PAIR_GEN, wrappingPublicKeyTemplate(spec), wrappingPrivateKeyTemplate(spec));
  try {
    const der = await publicKeyDer(hsm, pair.publicKey);
    const blob = publicEncrypt({ key: createPublicKey({ key: der, format: 'der', type: 'spki' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, randomBytes(32));
    try {
      const h = await hsm.unwrapUntrusted(oaepMechanism('sha256'), pair.privateKey, blob, hmacProbeTemplate());
      await hsm.destroyObject(h).catch(() => undefined);
      return true;
    } catch (e) {
      if (isInfrastructure(e)) throw e;
      return false;
    }
  } finally {
    await hsm.destroyObject(pair.privateKey).catch(() => undefined);
    await hsm.destroyObject(pair.publicKey).catch(() => undefined);
  }
}
