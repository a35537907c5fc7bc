// Names for the PKCS#11 classes, key types and attributes the rest of the proxy matches on or reads, so that only
// src/hsm knows their numbers (pkcs11js constants). A fleet of HSMs behind one KeyStore speaks these names too.
import { P, type Template } from './module.js';

/** CKA_KEY_TYPE of the keys the proxy makes or reads. */
export type KeyType = 'aes' | 'generic-secret' | 'rsa';

/** CKA_CLASS of the objects the proxy makes or reads. */
export type ObjectClass = 'secret-key' | 'public-key' | 'private-key';

const KEY_TYPES: Readonly<Record<KeyType, number>> = { aes: P.CKK_AES, 'generic-secret': P.CKK_GENERIC_SECRET, rsa: P.CKK_RSA };
const CLASSES: Readonly<Record<ObjectClass, number>> = { 'secret-key': P.CKO_SECRET_KEY, 'public-key': P.CKO_PUBLIC_KEY, 'private-key': P.CKO_PRIVATE_KEY };
const KEY_TYPE_NAMES = new Map<number, KeyType>(Object.entries(KEY_TYPES).map(([name, n]) => [n, name as KeyType]));

export function keyTypeNumber(keyType: KeyType): number {
  return KEY_TYPES[keyType];
}

export function classNumber(cls: ObjectClass): number {
  return CLASSES[cls];
}

/** The name of a CKA_KEY_TYPE value; undefined for a type the proxy never uses (or none read). */
export function keyTypeName(value: number): KeyType | undefined {
  return KEY_TYPE_NAMES.get(value);
}

/** Attributes read by name outside src/hsm (raw bytes, or undefined where the object does not keep one). */
const ATTRIBUTES = {
  label: P.CKA_LABEL,
  id: P.CKA_ID,
  modulus: P.CKA_MODULUS,
  publicExponent: P.CKA_PUBLIC_EXPONENT,
  valueLen: P.CKA_VALUE_LEN,
  trusted: P.CKA_TRUSTED,
  private: P.CKA_PRIVATE,
  token: P.CKA_TOKEN,
  sensitive: P.CKA_SENSITIVE,
  extractable: P.CKA_EXTRACTABLE,
  modifiable: P.CKA_MODIFIABLE,
  encrypt: P.CKA_ENCRYPT,
  decrypt: P.CKA_DECRYPT,
  wrap: P.CKA_WRAP,
  unwrap: P.CKA_UNWRAP,
  sign: P.CKA_SIGN,
} as const;

export type AttributeName = keyof typeof ATTRIBUTES;

/** CKA_* numbers for names; numbers pass through (tests and src/hsm read attributes by number). */
export function attributeTypes(types: readonly (AttributeName | number)[]): number[] {
  return types.map((t) => (typeof t === 'number' ? t : ATTRIBUTES[t]));
}

/** What a search matches on; token objects only is added by the connection itself. */
export interface ObjectMatch {
  token?: boolean;
  class?: ObjectClass;
  keyType?: KeyType;
  label?: string;
  id?: Buffer;
  private?: boolean;
}

/** The C_FindObjectsInit template of a match, in a fixed order (token, class, key type, label, id, private). */
export function matchTemplate(match: ObjectMatch): Template {
  const t: Template = [];
  if (match.token !== undefined) t.push({ type: P.CKA_TOKEN, value: match.token });
  if (match.class !== undefined) t.push({ type: P.CKA_CLASS, value: CLASSES[match.class] });
  if (match.keyType !== undefined) t.push({ type: P.CKA_KEY_TYPE, value: KEY_TYPES[match.keyType] });
  if (match.label !== undefined) t.push({ type: P.CKA_LABEL, value: match.label });
  if (match.id !== undefined) t.push({ type: P.CKA_ID, value: match.id });
  if (match.private !== undefined) t.push({ type: P.CKA_PRIVATE, value: match.private });
  return t;
}
