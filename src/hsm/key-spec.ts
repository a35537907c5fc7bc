// Typed key templates: a spec names each attribute, and the ones that decide who may see a key and what it may do are
// required fields, so no template leaves them to a token's defaults (SoftHSM's are permissive: a key made without
// explicit attributes is readable). The template lists the attributes in the spec's property order: SoftHSM applies
// them in order, and some orders matter to it (import/import-templates.ts, CKA_MODIFIABLE on unwrap). These builders
// know attributes, not the key model: the key model's templates (keys/wrap-templates.ts, import/import-templates.ts)
// are specs given to them.
import { classNumber, keyTypeNumber, type KeyType, type ObjectClass } from './attributes.js';
import { P, type Mechanism, type Template } from './module.js';

/**
 * A template made by a builder in src/hsm from a typed spec: the only kind of template a KeyStore takes, so no code
 * outside src/hsm can hand the token a template of its own.
 */
export type KeyTemplate = Template & { readonly __keyTemplate: true };

/** Marks a template as built here (copy templates, a builder's filtered output). */
export function built(t: Template): KeyTemplate {
  return t as KeyTemplate;
}

/** A template plus CKA_VALUE: material created in the token (an import's key, an RSA-AES blob's ephemeral key). */
export function withValue(template: KeyTemplate, value: Buffer): KeyTemplate {
  return built([...template, { type: P.CKA_VALUE, value }]);
}

/** Every attribute a key template may set, by name. */
interface KeyAttributes {
  class: ObjectClass;
  keyType: KeyType;
  valueLen: number;
  modulusBits: number;
  publicExponent: Buffer;
  modulus: Buffer;
  token: boolean;
  private: boolean;
  trusted: boolean;
  sensitive: boolean;
  extractable: boolean;
  wrapWithTrusted: boolean;
  modifiable: boolean;
  encrypt: boolean;
  decrypt: boolean;
  wrap: boolean;
  unwrap: boolean;
  sign: boolean;
  signRecover: boolean;
  verify: boolean;
  verifyRecover: boolean;
  derive: boolean;
  /** CKA_ALLOWED_MECHANISMS (left out by the connection where the token's objects cannot hold it). */
  allowedMechanisms: readonly (number | Mechanism)[];
  label: string;
  id: Buffer;
  value: Buffer;
}

const CKA: { readonly [K in keyof KeyAttributes]: number } = {
  class: P.CKA_CLASS,
  keyType: P.CKA_KEY_TYPE,
  valueLen: P.CKA_VALUE_LEN,
  modulusBits: P.CKA_MODULUS_BITS,
  publicExponent: P.CKA_PUBLIC_EXPONENT,
  modulus: P.CKA_MODULUS,
  token: P.CKA_TOKEN,
  private: P.CKA_PRIVATE,
  trusted: P.CKA_TRUSTED,
  sensitive: P.CKA_SENSITIVE,
  extractable: P.CKA_EXTRACTABLE,
  wrapWithTrusted: P.CKA_WRAP_WITH_TRUSTED,
  modifiable: P.CKA_MODIFIABLE,
  encrypt: P.CKA_ENCRYPT,
  decrypt: P.CKA_DECRYPT,
  wrap: P.CKA_WRAP,
  unwrap: P.CKA_UNWRAP,
  sign: P.CKA_SIGN,
  signRecover: P.CKA_SIGN_RECOVER,
  verify: P.CKA_VERIFY,
  verifyRecover: P.CKA_VERIFY_RECOVER,
  derive: P.CKA_DERIVE,
  allowedMechanisms: P.CKA_ALLOWED_MECHANISMS,
  label: P.CKA_LABEL,
  id: P.CKA_ID,
  value: P.CKA_VALUE,
};

type Spec<Required extends keyof KeyAttributes> = Pick<KeyAttributes, Required> & Partial<Omit<KeyAttributes, Required>>;

/** A secret key: who may see it (token, private, sensitive, extractable) and the usages every secret key states. */
export type SecretKeySpec = Spec<'class' | 'keyType' | 'token' | 'private' | 'sensitive' | 'extractable' | 'sign' | 'verify' | 'derive'> & { class: 'secret-key' };
/** A private key: who may see it, and whether it may unwrap, decrypt or sign. */
export type PrivateKeySpec = Spec<'class' | 'keyType' | 'token' | 'private' | 'sensitive' | 'extractable' | 'unwrap' | 'decrypt' | 'sign'> & { class: 'private-key' };
/** A public key: whether it is private to the login, and whether it may wrap, encrypt or verify. */
export type PublicKeySpec = Spec<'class' | 'keyType' | 'token' | 'private' | 'wrap' | 'encrypt' | 'verify'> & { class: 'public-key' };

export type KeySpec = SecretKeySpec | PrivateKeySpec | PublicKeySpec;

/** CKA_ALLOWED_MECHANISMS: a Buffer of CK_ULONGs in the platform's order (8 bytes, little-endian on x86-64 and arm64). */
export function allowedMechanisms(...mechanisms: readonly number[]): Buffer {
  const b = Buffer.alloc(8 * mechanisms.length);
  mechanisms.forEach((m, i) => b.writeBigUInt64LE(BigInt(m), i * 8));
  return b;
}

/** The template of a spec, attribute by attribute in the spec's property order; undefined fields are left out. */
export function keyTemplate(spec: KeySpec): KeyTemplate {
  return fromAttributes(spec);
}

/** What a C_CopyObject changes; the copy keeps every other attribute of the original. */
export type CopySpec = Partial<Pick<KeyAttributes, 'token' | 'private' | 'modifiable' | 'label' | 'id'>>;

/** The template of a copy: only the attributes it changes, in the spec's property order. */
export function copyTemplate(spec: CopySpec): KeyTemplate {
  return fromAttributes(spec);
}

function fromAttributes(spec: Partial<KeyAttributes>): KeyTemplate {
  const t: Template = [];
  for (const [name, value] of Object.entries(spec) as [keyof KeyAttributes, KeyAttributes[keyof KeyAttributes] | undefined][]) {
    if (value === undefined) continue;
    const type = CKA[name];
    if (name === 'class') t.push({ type, value: classNumber(value as ObjectClass) });
    else if (name === 'keyType') t.push({ type, value: keyTypeNumber(value as KeyType) });
    else if (name === 'allowedMechanisms') {
      const numbers = (value as readonly (number | Mechanism)[]).map((m) => (typeof m === 'number' ? m : m.mechanism));
      t.push({ type, value: allowedMechanisms(...numbers) });
    } else t.push({ type, value: value as boolean | number | string | Buffer });
  }
  return built(t);
}
