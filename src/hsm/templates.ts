// The templates of the proxy's own keys (key versions, records and commit markers, MAC keys), every attribute spelled
// out through a typed spec (key-spec.ts): SoftHSM's defaults are permissive (a key made without explicit attributes is
// readable).
import { P } from './module.js';
import { built, keyTemplate, type KeyTemplate } from './key-spec.js';

export { allowedMechanisms, built, copyTemplate, keyTemplate, withValue, type CopySpec, type KeyTemplate } from './key-spec.js';

export interface AesKeySpec {
  label: string;
  /** CKA_ID bytes: the proxy's version tag, see keys/key-objects.ts. */
  id?: Buffer | undefined;
  encrypt: boolean;
  decrypt: boolean;
  /** A token object survives the process; a session object (health checks in tests) does not. */
  token?: boolean;
  /**
   * Wrappable for backup, but only under a key the security officer marked CKA_TRUSTED (CKA_WRAP_WITH_TRUSTED):
   * a user cannot wrap it under a key of their own and read it. Always stated: false is sensitive and never extractable.
   */
  exportable: boolean;
}

/** A secret key generated in the token (C_GenerateKey): 32 bytes. */
export function aes256KeyTemplate(spec: AesKeySpec): KeyTemplate {
  return keyTemplate({
    class: 'secret-key',
    keyType: 'aes',
    valueLen: 32,
    token: spec.token ?? true,
    private: true,
    sensitive: true,
    extractable: spec.exportable === true,
    wrapWithTrusted: spec.exportable === true,
    modifiable: true,
    encrypt: spec.encrypt,
    decrypt: spec.decrypt,
    wrap: false,
    unwrap: false,
    sign: false,
    verify: false,
    derive: false,
    label: spec.label,
    id: spec.id,
  });
}

/**
 * An AES-256 key made from material (C_UnwrapKey, or C_CreateObject withValue): aes256KeyTemplate minus CKA_VALUE_LEN,
 * which the token takes from the material (SoftHSM answers CKR_ATTRIBUTE_READ_ONLY when it is given).
 */
export function aes256MaterialKeyTemplate(spec: AesKeySpec): KeyTemplate {
  return built(aes256KeyTemplate(spec).filter((a) => a.type !== P.CKA_VALUE_LEN));
}

/**
 * A key's record or a version's commit marker: a small generic secret that can do nothing (every usage false,
 * sensitive, non-extractable); only its label and CKA_ID matter. Generated rather than created so that no value passes
 * through the process.
 */
export function inertSecretTemplate(label: string, id: Buffer): KeyTemplate {
  return keyTemplate({
    class: 'secret-key',
    keyType: 'generic-secret',
    valueLen: 16,
    token: true,
    private: true,
    sensitive: true,
    extractable: false,
    modifiable: true,
    encrypt: false,
    decrypt: false,
    wrap: false,
    unwrap: false,
    sign: false,
    verify: false,
    derive: false,
    label,
    id,
  });
}

/** A MAC key that never leaves the HSM: 32-byte generic secret for CKM_SHA256_HMAC, sign and verify only. */
export function hmacKeyTemplate(label: string, id?: Buffer): KeyTemplate {
  return keyTemplate({
    class: 'secret-key',
    keyType: 'generic-secret',
    valueLen: 32,
    token: true,
    private: true,
    sensitive: true,
    extractable: false,
    modifiable: false,
    encrypt: false,
    decrypt: false,
    wrap: false,
    unwrap: false,
    sign: true,
    verify: true,
    derive: false,
    allowedMechanisms: [P.CKM_SHA256_HMAC],
    label,
    id,
  });
}
