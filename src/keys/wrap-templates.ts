// Templates for backup by wrapping and for key-encryption keys (KEKs), every attribute spelled out
// (SoftHSM's defaults are permissive). Facts checked on SoftHSM 2.6.1 are noted where a line depends on one. They are
// the key model's specs (kek.ts, backup.ts), built by src/hsm's builders, which know attributes and no key model.
import { aes256MaterialKeyTemplate, copyTemplate, keyTemplate, type AesKeySpec, type KeyTemplate } from '../hsm/templates.js';

export const TRANSPORT_KEY_BITS = 3072;

/**
 * A KEK as the security officer makes it (generated, or unwrapped from a transfer): trusted, so it may wrap keys
 * marked CKA_WRAP_WITH_TRUSTED. An SO session can only make public objects, so it is public until the user seals it
 * (sealedKekCopy). Extractable only under another trusted key, for a transfer to a second HSM. Modifiable, because
 * SoftHSM refuses to copy a non-modifiable object with a changed CKA_PRIVATE.
 */
export function kekTemplate(label: string, id: Buffer, op: 'generate' | 'unwrap'): KeyTemplate {
  return keyTemplate({
    class: 'secret-key',
    keyType: 'aes',
    token: true,
    private: false,
    trusted: true,
    sensitive: true,
    extractable: true,
    wrapWithTrusted: true,
    modifiable: true,
    wrap: true,
    unwrap: true,
    encrypt: false,
    decrypt: false,
    sign: false,
    verify: false,
    derive: false,
    label,
    id,
    // C_UnwrapKey takes the length from the blob: CKA_VALUE_LEN in its template answers CKR_ATTRIBUTE_READ_ONLY.
    valueLen: op === 'generate' ? 32 : undefined,
  });
}

/**
 * The user's C_CopyObject of the SO's public KEK: private (its value encrypted under the user PIN's key, usable only
 * after login) and no longer modifiable. SoftHSM's copy keeps CKA_TRUSTED; CKA_COPYABLE cannot be changed by a copy.
 */
export const SEALED_KEK_COPY: KeyTemplate = copyTemplate({ private: true, modifiable: false });

/**
 * The receiving side's transport key pair, made by the SO (so public objects): the private half can only unwrap, is
 * sensitive and never extractable; the public half does nothing in this token (its modulus is exported).
 */
export function transportKeyPairTemplates(label: string, id: Buffer): { publicKey: KeyTemplate; privateKey: KeyTemplate } {
  return {
    publicKey: keyTemplate({
      class: 'public-key',
      keyType: 'rsa',
      token: true,
      private: false,
      modulusBits: TRANSPORT_KEY_BITS,
      publicExponent: Buffer.from([1, 0, 1]),
      wrap: false,
      encrypt: false,
      verify: false,
      label,
      id,
    }),
    privateKey: keyTemplate({
      class: 'private-key',
      keyType: 'rsa',
      token: true,
      private: false,
      sensitive: true,
      extractable: false,
      unwrap: true,
      decrypt: false,
      sign: false,
      derive: false,
      label,
      id,
    }),
  };
}

/**
 * The receiving HSM's public key on the sending side, created by the SO as a session object: trusted, so the KEK
 * (CKA_WRAP_WITH_TRUSTED) may be wrapped under it; gone when the ceremony's process ends.
 */
export function trustedPublicKeyTemplate(label: string, modulus: Buffer, publicExponent: Buffer): KeyTemplate {
  return keyTemplate({
    class: 'public-key',
    keyType: 'rsa',
    token: false,
    private: false,
    trusted: true,
    wrap: true,
    encrypt: false,
    verify: false,
    modulus,
    publicExponent,
    label,
  });
}

/**
 * A session key of 32 zero bytes, public knowledge: wrapping it under a KEK (KWP is deterministic) gives the KEK's
 * check value, comparable between HSMs without revealing anything about the KEK.
 */
export function checkValueKeyTemplate(): KeyTemplate {
  return keyTemplate({
    class: 'secret-key',
    keyType: 'generic-secret',
    token: false,
    private: false,
    sensitive: false,
    extractable: true,
    wrapWithTrusted: false,
    sign: false,
    verify: false,
    derive: false,
    value: Buffer.alloc(32),
  });
}

/** The per-export HMAC key that authenticates a backup file: a session object, wrapped under the KEK into the file. */
export function backupMacKeyTemplate(): KeyTemplate {
  return keyTemplate({
    class: 'secret-key',
    keyType: 'generic-secret',
    valueLen: 32,
    token: false,
    private: true,
    sensitive: true,
    extractable: true,
    wrapWithTrusted: true,
    sign: true,
    verify: false,
    encrypt: false,
    decrypt: false,
    derive: false,
  });
}

/**
 * The MAC key unwrapped on restore: a session object, never extractable again. It signs because MACs are checked by
 * C_Sign and a constant-time compare (a wrong MAC in C_Verify answers CKR_DEVICE_ERROR on NSS).
 */
export function backupMacVerifyTemplate(): KeyTemplate {
  return keyTemplate({
    class: 'secret-key',
    keyType: 'generic-secret',
    token: false,
    private: true,
    sensitive: true,
    extractable: false,
    sign: true,
    verify: false,
    encrypt: false,
    decrypt: false,
    derive: false,
  });
}

/**
 * A key version restored from a backup: the template of an exportable generated version (sensitive, extractable
 * only under a trusted key), minus CKA_VALUE_LEN, which C_UnwrapKey takes from the blob.
 */
export function restoredAesKeyTemplate(spec: Omit<AesKeySpec, 'exportable' | 'token'>): KeyTemplate {
  return aes256MaterialKeyTemplate({ ...spec, token: true, exportable: true });
}
