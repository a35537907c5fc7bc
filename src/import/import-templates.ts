// Templates of the import of customer key material, every security attribute spelled out as in hsm/templates.ts:
// SoftHSM's defaults are permissive. Objects that hold customer material (the imported key, the probes and the
// ephemeral AES key of an RSA-AES blob) are sensitive and non-extractable from their first instant. They are the
// import's specs, built by src/hsm's builders, which know attributes and no key model.
import type { KeyType } from '../hsm/key-store.js';
import { AES_CMAC, HMAC_SHA256, RSA_OAEP, RSA_RAW, type Mechanism } from '../hsm/mechanisms.js';
import { aes256MaterialKeyTemplate, hmacKeyTemplate, keyTemplate, type AesKeySpec, type KeyTemplate } from '../hsm/templates.js';

/** How the wrapping private key is used: unwrap by CKM_RSA_PKCS_OAEP in the HSM, or raw RSA decrypt (CKM_RSA_X_509). */
export type WrappingKeyUse = 'oaep-unwrap' | 'raw-decrypt';

export interface WrappingKeyPairSpec {
  label: string;
  id: Buffer;
  modulusBits: number;
  use: WrappingKeyUse;
  /** Token objects survive a restart for their 24 hours; the capability probe uses session objects. */
  token: boolean;
}

/** The public half: its only job is to be read out as the customer's WrappingPublicKey. */
export function wrappingPublicKeyTemplate(spec: WrappingKeyPairSpec): KeyTemplate {
  return keyTemplate({
    class: 'public-key',
    keyType: 'rsa',
    token: spec.token,
    private: true,
    modifiable: false,
    modulusBits: spec.modulusBits,
    publicExponent: Buffer.from([0x01, 0x00, 0x01]),
    encrypt: false,
    wrap: false,
    verify: false,
    verifyRecover: false,
    derive: false,
    label: spec.label,
    id: spec.id,
  });
}

/**
 * The private half: import-only. Either it may only unwrap with OAEP, or (where the HSM's OAEP lacks SHA-256) it may
 * only decrypt with raw RSA, whose output the proxy decodes; never sign, never anything else.
 */
export function wrappingPrivateKeyTemplate(spec: WrappingKeyPairSpec): KeyTemplate {
  const unwrap = spec.use === 'oaep-unwrap';
  return keyTemplate({
    class: 'private-key',
    keyType: 'rsa',
    token: spec.token,
    private: true,
    sensitive: true,
    extractable: false,
    modifiable: false,
    unwrap,
    decrypt: !unwrap,
    sign: false,
    signRecover: false,
    derive: false,
    allowedMechanisms: [unwrap ? RSA_OAEP : RSA_RAW],
    label: spec.label,
    id: spec.id,
  });
}

/** The key that authenticates import tokens: an HMAC key generated in the HSM, never readable (hsm/templates.ts). */
export function importTokenKeyTemplate(label: string, id: Buffer): KeyTemplate {
  return hmacKeyTemplate(label, id);
}

function sessionSecret(keyType: KeyType, usage: { sign?: boolean; unwrap?: boolean }, mechanism: Mechanism): KeyTemplate {
  return keyTemplate({
    class: 'secret-key',
    keyType,
    token: false,
    private: true,
    sensitive: true,
    extractable: false,
    // SoftHSM 2.6 answers CKR_ATTRIBUTE_READ_ONLY to a C_UnwrapKey whose template says CKA_MODIFIABLE false (it sets
    // the other attributes after that one); these objects live for one call and nothing modifies them.
    modifiable: true,
    sign: usage.sign === true,
    verify: false,
    encrypt: false,
    decrypt: false,
    wrap: false,
    unwrap: usage.unwrap === true,
    derive: false,
    allowedMechanisms: [mechanism],
  });
}

/**
 * The ephemeral AES key of an RSA-AES blob, as a session object: it may only unwrap with RFC 5649, under the number
 * the token gives it (`kwp`, capabilities.keyWrap).
 */
export function ephemeralAesKeyTemplate(kwp: Mechanism): KeyTemplate {
  return sessionSecret('aes', { unwrap: true }, kwp);
}

/**
 * Short-lived session copies of imported material, for the checks made before it is committed: a generic secret that
 * may only HMAC-SHA256 (the fingerprint), and an AES key that may only AES-CMAC (the material is a valid AES key).
 */
export function hmacProbeTemplate(): KeyTemplate {
  return sessionSecret('generic-secret', { sign: true }, HMAC_SHA256);
}

export function cmacProbeTemplate(): KeyTemplate {
  return sessionSecret('aes', { sign: true }, AES_CMAC);
}

/**
 * The imported key: the same template as a generated key (hsm/templates.ts), minus CKA_VALUE_LEN, which an unwrap or
 * a create takes from the material (SoftHSM answers CKR_ATTRIBUTE_READ_ONLY when it is given).
 */
export function importedAesKeyTemplate(spec: AesKeySpec): KeyTemplate {
  return aes256MaterialKeyTemplate(spec);
}
