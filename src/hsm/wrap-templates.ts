// Templates and mechanisms for backup by wrapping and for key-encryption keys (KEKs), every attribute spelled out
// (SoftHSM's defaults are permissive). Facts checked on SoftHSM 2.6.1 are noted where a line depends on one.
import { P, type Template } from './module.js';
import { aes256KeyTemplate, built, type AesKeySpec, type KeyTemplate } from './templates.js';

export const TRANSPORT_KEY_BITS = 3072;

/**
 * A KEK as the security officer makes it (generated, or unwrapped from a transfer): trusted, so it may wrap keys
 * marked CKA_WRAP_WITH_TRUSTED. An SO session can only make public objects, so it is public until the user seals it
 * (sealedKekCopy). Extractable only under another trusted key, for a transfer to a second HSM. Modifiable, because
 * SoftHSM refuses to copy a non-modifiable object with a changed CKA_PRIVATE.
 */
export function kekTemplate(label: string, id: Buffer, op: 'generate' | 'unwrap'): KeyTemplate {
  const t: Template = [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: false },
    { type: P.CKA_TRUSTED, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: true },
    { type: P.CKA_WRAP_WITH_TRUSTED, value: true },
    { type: P.CKA_MODIFIABLE, value: true },
    { type: P.CKA_WRAP, value: true },
    { type: P.CKA_UNWRAP, value: true },
    { type: P.CKA_ENCRYPT, value: false },
    { type: P.CKA_DECRYPT, value: false },
    { type: P.CKA_SIGN, value: false },
    { type: P.CKA_VERIFY, value: false },
    { type: P.CKA_DERIVE, value: false },
    { type: P.CKA_LABEL, value: label },
    { type: P.CKA_ID, value: id },
  ];
  // C_UnwrapKey takes the length from the blob: CKA_VALUE_LEN in its template answers CKR_ATTRIBUTE_READ_ONLY.
  if (op === 'generate') t.push({ type: P.CKA_VALUE_LEN, value: 32 });
  return built(t);
}

/**
 * The user's C_CopyObject of the SO's public KEK: private (its value encrypted under the user PIN's key, usable only
 * after login) and no longer modifiable. SoftHSM's copy keeps CKA_TRUSTED; CKA_COPYABLE cannot be changed by a copy.
 */
export const SEALED_KEK_COPY: KeyTemplate = built([
  { type: P.CKA_PRIVATE, value: true },
  { type: P.CKA_MODIFIABLE, value: false },
]);

/**
 * The receiving side's transport key pair, made by the SO (so public objects): the private half can only unwrap, is
 * sensitive and never extractable; the public half does nothing in this token (its modulus is exported).
 */
export function transportKeyPairTemplates(label: string, id: Buffer): { publicKey: KeyTemplate; privateKey: KeyTemplate } {
  return {
    publicKey: built([
      { type: P.CKA_CLASS, value: P.CKO_PUBLIC_KEY },
      { type: P.CKA_KEY_TYPE, value: P.CKK_RSA },
      { type: P.CKA_TOKEN, value: true },
      { type: P.CKA_PRIVATE, value: false },
      { type: P.CKA_MODULUS_BITS, value: TRANSPORT_KEY_BITS },
      { type: P.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
      { type: P.CKA_WRAP, value: false },
      { type: P.CKA_ENCRYPT, value: false },
      { type: P.CKA_VERIFY, value: false },
      { type: P.CKA_LABEL, value: label },
      { type: P.CKA_ID, value: id },
    ]),
    privateKey: built([
      { type: P.CKA_CLASS, value: P.CKO_PRIVATE_KEY },
      { type: P.CKA_KEY_TYPE, value: P.CKK_RSA },
      { type: P.CKA_TOKEN, value: true },
      { type: P.CKA_PRIVATE, value: false },
      { type: P.CKA_SENSITIVE, value: true },
      { type: P.CKA_EXTRACTABLE, value: false },
      { type: P.CKA_UNWRAP, value: true },
      { type: P.CKA_DECRYPT, value: false },
      { type: P.CKA_SIGN, value: false },
      { type: P.CKA_DERIVE, value: false },
      { type: P.CKA_LABEL, value: label },
      { type: P.CKA_ID, value: id },
    ]),
  };
}

/**
 * The receiving HSM's public key on the sending side, created by the SO as a session object: trusted, so the KEK
 * (CKA_WRAP_WITH_TRUSTED) may be wrapped under it; gone when the ceremony's process ends.
 */
export function trustedPublicKeyTemplate(label: string, modulus: Buffer, publicExponent: Buffer): KeyTemplate {
  return built([
    { type: P.CKA_CLASS, value: P.CKO_PUBLIC_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_RSA },
    { type: P.CKA_TOKEN, value: false },
    { type: P.CKA_PRIVATE, value: false },
    { type: P.CKA_TRUSTED, value: true },
    { type: P.CKA_WRAP, value: true },
    { type: P.CKA_ENCRYPT, value: false },
    { type: P.CKA_VERIFY, value: false },
    { type: P.CKA_MODULUS, value: modulus },
    { type: P.CKA_PUBLIC_EXPONENT, value: publicExponent },
    { type: P.CKA_LABEL, value: label },
  ]);
}

/**
 * A session key of 32 zero bytes, public knowledge: wrapping it under a KEK (KWP is deterministic) gives the KEK's
 * check value, comparable between HSMs without revealing anything about the KEK.
 */
export function checkValueKeyTemplate(): KeyTemplate {
  return built([
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_GENERIC_SECRET },
    { type: P.CKA_TOKEN, value: false },
    { type: P.CKA_PRIVATE, value: false },
    { type: P.CKA_SENSITIVE, value: false },
    { type: P.CKA_EXTRACTABLE, value: true },
    { type: P.CKA_WRAP_WITH_TRUSTED, value: false },
    { type: P.CKA_SIGN, value: false },
    { type: P.CKA_VERIFY, value: false },
    { type: P.CKA_DERIVE, value: false },
    { type: P.CKA_VALUE, value: Buffer.alloc(32) },
  ]);
}

/** The per-export HMAC key that authenticates a backup file: a session object, wrapped under the KEK into the file. */
export function backupMacKeyTemplate(): KeyTemplate {
  return built([
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_GENERIC_SECRET },
    { type: P.CKA_VALUE_LEN, value: 32 },
    { type: P.CKA_TOKEN, value: false },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: true },
    { type: P.CKA_WRAP_WITH_TRUSTED, value: true },
    { type: P.CKA_SIGN, value: true },
    { type: P.CKA_VERIFY, value: false },
    { type: P.CKA_ENCRYPT, value: false },
    { type: P.CKA_DECRYPT, value: false },
    { type: P.CKA_DERIVE, value: false },
  ]);
}

/**
 * The MAC key unwrapped on restore: a session object, never extractable again. It signs because MACs are checked by
 * C_Sign and a constant-time compare (a wrong MAC in C_Verify answers CKR_DEVICE_ERROR on NSS).
 */
export function backupMacVerifyTemplate(): KeyTemplate {
  return built([
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_GENERIC_SECRET },
    { type: P.CKA_TOKEN, value: false },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_SIGN, value: true },
    { type: P.CKA_VERIFY, value: false },
    { type: P.CKA_ENCRYPT, value: false },
    { type: P.CKA_DECRYPT, value: false },
    { type: P.CKA_DERIVE, value: false },
  ]);
}

/**
 * A key version restored from a backup: the template of an exportable generated version (sensitive, extractable
 * only under a trusted key), minus CKA_VALUE_LEN, which C_UnwrapKey takes from the blob.
 */
export function restoredAesKeyTemplate(spec: Omit<AesKeySpec, 'exportable' | 'token'>): KeyTemplate {
  return built(aes256KeyTemplate({ ...spec, token: true, exportable: true }).filter((a) => a.type !== P.CKA_VALUE_LEN));
}
