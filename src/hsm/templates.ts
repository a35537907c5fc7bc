// Every key template spelled out: SoftHSM's defaults are permissive (a key made without explicit attributes is readable).
import { P, type Template } from './module.js';

/**
 * A template made by a builder in src/hsm from a spec whose security attributes are spelled out (sensitive,
 * extractable, usage): the only kind of template a KeyStore takes, so no caller can leave one to a token's defaults.
 */
export type KeyTemplate = Template & { readonly __keyTemplate: true };

/** Marks a builder's output; used only by the builders in src/hsm. */
export function built(t: Template): KeyTemplate {
  return t as KeyTemplate;
}

/** A template plus CKA_VALUE: material created in the token (an import's key, an RSA-AES blob's ephemeral key). */
export function withValue(template: KeyTemplate, value: Buffer): KeyTemplate {
  return built([...template, { type: P.CKA_VALUE, value }]);
}

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

export function aes256KeyTemplate(spec: AesKeySpec): KeyTemplate {
  const t: Template = [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_VALUE_LEN, value: 32 },
    { type: P.CKA_TOKEN, value: spec.token ?? true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: spec.exportable === true },
    { type: P.CKA_WRAP_WITH_TRUSTED, value: spec.exportable === true },
    { type: P.CKA_MODIFIABLE, value: true },
    { type: P.CKA_ENCRYPT, value: spec.encrypt },
    { type: P.CKA_DECRYPT, value: spec.decrypt },
    { type: P.CKA_WRAP, value: false },
    { type: P.CKA_UNWRAP, value: false },
    { type: P.CKA_SIGN, value: false },
    { type: P.CKA_VERIFY, value: false },
    { type: P.CKA_DERIVE, value: false },
    { type: P.CKA_LABEL, value: spec.label },
  ];
  if (spec.id) t.push({ type: P.CKA_ID, value: spec.id });
  return built(t);
}

/**
 * A key's record or a version's commit marker: a small generic secret that can do nothing (every usage false,
 * sensitive, non-extractable); only its label and CKA_ID matter. Generated rather than created so that no value passes
 * through the process.
 */
export function inertSecretTemplate(label: string, id: Buffer): KeyTemplate {
  return built([
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_GENERIC_SECRET },
    { type: P.CKA_VALUE_LEN, value: 16 },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_MODIFIABLE, value: true },
    { type: P.CKA_ENCRYPT, value: false },
    { type: P.CKA_DECRYPT, value: false },
    { type: P.CKA_WRAP, value: false },
    { type: P.CKA_UNWRAP, value: false },
    { type: P.CKA_SIGN, value: false },
    { type: P.CKA_VERIFY, value: false },
    { type: P.CKA_DERIVE, value: false },
    { type: P.CKA_LABEL, value: label },
    { type: P.CKA_ID, value: id },
  ]);
}

/** CKA_ALLOWED_MECHANISMS: a Buffer of CK_ULONGs in the platform's order (8 bytes, little-endian on x86-64 and arm64). */
export function allowedMechanisms(...mechanisms: number[]): Buffer {
  const b = Buffer.alloc(8 * mechanisms.length);
  mechanisms.forEach((m, i) => b.writeBigUInt64LE(BigInt(m), i * 8));
  return b;
}

/** A MAC key that never leaves the HSM: 32-byte generic secret for CKM_SHA256_HMAC, sign and verify only. */
export function hmacKeyTemplate(label: string, id?: Buffer): KeyTemplate {
  return built([
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_GENERIC_SECRET },
    { type: P.CKA_VALUE_LEN, value: 32 },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_MODIFIABLE, value: false },
    { type: P.CKA_ENCRYPT, value: false },
    { type: P.CKA_DECRYPT, value: false },
    { type: P.CKA_WRAP, value: false },
    { type: P.CKA_UNWRAP, value: false },
    { type: P.CKA_SIGN, value: true },
    { type: P.CKA_VERIFY, value: true },
    { type: P.CKA_DERIVE, value: false },
    { type: P.CKA_ALLOWED_MECHANISMS, value: allowedMechanisms(P.CKM_SHA256_HMAC) },
    { type: P.CKA_LABEL, value: label },
    ...(id ? [{ type: P.CKA_ID, value: id }] : []),
  ]);
}
