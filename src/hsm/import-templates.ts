// Templates of the import of customer key material (src/import), every security attribute spelled out as in
// templates.ts: SoftHSM's defaults are permissive. Objects that hold customer material (the imported key, the probes
// and the ephemeral AES key of an RSA-AES blob) are sensitive and non-extractable from their first instant.
import { P, type Mechanism } from './module.js';
import { aes256KeyTemplate, allowedMechanisms, built, hmacKeyTemplate, type AesKeySpec, type KeyTemplate } from './templates.js';

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
  return built([
    { type: P.CKA_CLASS, value: P.CKO_PUBLIC_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_RSA },
    { type: P.CKA_TOKEN, value: spec.token },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_MODIFIABLE, value: false },
    { type: P.CKA_MODULUS_BITS, value: spec.modulusBits },
    { type: P.CKA_PUBLIC_EXPONENT, value: Buffer.from([0x01, 0x00, 0x01]) },
    { type: P.CKA_ENCRYPT, value: false },
    { type: P.CKA_WRAP, value: false },
    { type: P.CKA_VERIFY, value: false },
    { type: P.CKA_VERIFY_RECOVER, value: false },
    { type: P.CKA_DERIVE, value: false },
    { type: P.CKA_LABEL, value: spec.label },
    { type: P.CKA_ID, value: spec.id },
  ]);
}

/**
 * The private half: import-only. Either it may only unwrap with OAEP, or (where the HSM's OAEP lacks SHA-256) it may
 * only decrypt with raw RSA, whose output the proxy decodes; never sign, never anything else.
 */
export function wrappingPrivateKeyTemplate(spec: WrappingKeyPairSpec): KeyTemplate {
  const unwrap = spec.use === 'oaep-unwrap';
  return built([
    { type: P.CKA_CLASS, value: P.CKO_PRIVATE_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_RSA },
    { type: P.CKA_TOKEN, value: spec.token },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_MODIFIABLE, value: false },
    { type: P.CKA_UNWRAP, value: unwrap },
    { type: P.CKA_DECRYPT, value: !unwrap },
    { type: P.CKA_SIGN, value: false },
    { type: P.CKA_SIGN_RECOVER, value: false },
    { type: P.CKA_DERIVE, value: false },
    { type: P.CKA_ALLOWED_MECHANISMS, value: allowedMechanisms(unwrap ? P.CKM_RSA_PKCS_OAEP : P.CKM_RSA_X_509) },
    { type: P.CKA_LABEL, value: spec.label },
    { type: P.CKA_ID, value: spec.id },
  ]);
}

/** The key that authenticates import tokens: an HMAC key generated in the HSM, never readable (templates.ts). */
export function importTokenKeyTemplate(label: string, id: Buffer): KeyTemplate {
  return hmacKeyTemplate(label, id);
}

function sessionSecret(keyType: number, usage: { sign?: boolean; unwrap?: boolean }, mechanism: number): KeyTemplate {
  return built([
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: keyType },
    { type: P.CKA_TOKEN, value: false },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    // SoftHSM 2.6 answers CKR_ATTRIBUTE_READ_ONLY to a C_UnwrapKey whose template says CKA_MODIFIABLE false (it sets
    // the other attributes after that one); these objects live for one call and nothing modifies them.
    { type: P.CKA_MODIFIABLE, value: true },
    { type: P.CKA_SIGN, value: usage.sign === true },
    { type: P.CKA_VERIFY, value: false },
    { type: P.CKA_ENCRYPT, value: false },
    { type: P.CKA_DECRYPT, value: false },
    { type: P.CKA_WRAP, value: false },
    { type: P.CKA_UNWRAP, value: usage.unwrap === true },
    { type: P.CKA_DERIVE, value: false },
    { type: P.CKA_ALLOWED_MECHANISMS, value: allowedMechanisms(mechanism) },
  ]);
}

/**
 * The ephemeral AES key of an RSA-AES blob, as a session object: it may only unwrap with RFC 5649, under the number
 * the token gives it (`kwp`, capabilities.keyWrap).
 */
export function ephemeralAesKeyTemplate(kwp: Mechanism): KeyTemplate {
  return sessionSecret(P.CKK_AES, { unwrap: true }, kwp.mechanism);
}

/**
 * Short-lived session copies of imported material, for the checks made before it is committed: a generic secret that
 * may only HMAC-SHA256 (the fingerprint), and an AES key that may only AES-CMAC (the material is a valid AES key).
 */
export function hmacProbeTemplate(): KeyTemplate {
  return sessionSecret(P.CKK_GENERIC_SECRET, { sign: true }, P.CKM_SHA256_HMAC);
}

export function cmacProbeTemplate(): KeyTemplate {
  return sessionSecret(P.CKK_AES, { sign: true }, P.CKM_AES_CMAC);
}

/**
 * The imported key: the same template as a generated key (templates.ts), minus CKA_VALUE_LEN, which an unwrap or a
 * create takes from the material (SoftHSM answers CKR_ATTRIBUTE_READ_ONLY when it is given).
 */
export function importedAesKeyTemplate(spec: AesKeySpec): KeyTemplate {
  return built(aes256KeyTemplate(spec).filter((a) => a.type !== P.CKA_VALUE_LEN));
}
