// How an external key maps onto token objects (docs/key-model.md). Every object of a key carries CKA_LABEL = the
// external key id; CKA_ID says what the object is. Every CKA_ID the proxy writes is unique in the token (a random
// 96-bit nonce) and is never rewritten: NSS treats a new key with an existing CKA_CLASS and CKA_ID as the same object
// (and overwrites its value), and CloudHSM cannot change CKA_ID after creation. A change is a new object, then the old
// one destroyed.
//
// Layout 2 (written by this release):
//   AES key          "xks:k2;v=<N>;t=<unix ms>;n=<nonce>"     material for version N, made at t by writer n: a candidate,
//                                                             never used, until its commit marker exists
//   generic secret   "xks:m2;v=<N>[;t=<unix s>];n=<nonce>"    commits the AES object of version N with the same nonce;
//                                                             t is the version's date (absent when unknown)
//   generic secret   "xks:r2;s=<revision>;n=<nonce>;" + JSON   the key's record; the highest revision wins
// Layout 1 (earlier releases: read, never written):
//   AES key          "xks:v<N>[;t=<unix s>][;n=<nonce>]"       version N, committed
//   AES key          "xks:c<N>;t=<unix ms>;n=<nonce>"          a rotation's candidate for version N
//   generic secret   "xks:key:" + JSON                         the key's record (revision 0)
// Any layout: an AES key with any other CKA_ID (or none) is version 1 of an adopted key (pkcs11-tool --keygen); an
// unknown "xks:" id is ours but not understood (a newer layout) and never used.
import { randomBytes } from 'node:crypto';

const MATERIAL_ID = /^xks:k2;v=([1-9][0-9]{0,8});t=([0-9]{1,15});n=([0-9a-f]{24})$/;
const COMMIT_ID = /^xks:m2;v=([1-9][0-9]{0,8})(?:;t=([0-9]{1,12}))?;n=([0-9a-f]{24})$/;
const RECORD_ID = /^xks:r2;s=([0-9]{1,12});n=([0-9a-f]{24});/;
const LEGACY_VERSION_ID = /^xks:v([1-9][0-9]{0,8})(?:;t=([0-9]{1,12}))?(?:;n=([0-9a-f]{1,32}))?$/;
const LEGACY_CANDIDATE_ID = /^xks:c([1-9][0-9]{0,8});t=([0-9]{1,15});n=([0-9a-f]{1,32})$/;
const LEGACY_RECORD_PREFIX = 'xks:key:';

/** XKS externalKeyId: at most 128 of A-Za-z0-9._- (spec "URIs"). */
export const EXTERNAL_KEY_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** A writer's nonce: 96 random bits, so that no two objects ever share a CKA_ID. */
export function newNonce(): string {
  return randomBytes(12).toString('hex');
}

export type AesObjectRole =
  /** Committed by its own CKA_ID (layout 1, or an adopted key's version 1). */
  | { role: 'version'; version: number; createdAt?: Date | undefined }
  /** Material that is a version once a commit marker with its nonce exists (layout 2), else a candidate. */
  | { role: 'material'; version: number; startedMs: number; nonce: string }
  /** A layout 1 rotation's candidate. */
  | { role: 'candidate'; version: number; startedMs: number; nonce: string }
  | { role: 'foreign' };

export type SecretObjectRole =
  | { role: 'record'; revision: number; json: string }
  | { role: 'commit'; version: number; createdAt: Date | undefined; nonce: string }
  | { role: 'none' };

/** CKA_ID of new material claiming `version`, made by the writer `nonce` that started at `startedMs`. */
export function materialId(version: number, startedMs: number, nonce: string): Buffer {
  return Buffer.from(`xks:k2;v=${version};t=${Math.floor(startedMs)};n=${nonce}`, 'ascii');
}

/** CKA_ID of the marker that commits the material of `version` made by `nonce`; `at` is the version's date. */
export function commitId(version: number, at: Date | undefined, nonce: string): Buffer {
  const t = at ? `;t=${Math.floor(at.getTime() / 1000)}` : '';
  return Buffer.from(`xks:m2;v=${version}${t};n=${nonce}`, 'ascii');
}

/** CKA_ID of a record object: its revision, a nonce, then the record's JSON. */
export function recordId(revision: number, json: string, nonce: string = newNonce()): Buffer {
  return Buffer.from(`xks:r2;s=${revision};n=${nonce};${json}`, 'utf8');
}

/** What an AES object with this CKA_ID is. */
export function aesObjectRole(id: Buffer): AesObjectRole {
  const text = id.toString('latin1');
  const m = MATERIAL_ID.exec(text);
  if (m) return { role: 'material', version: Number(m[1]), startedMs: Number(m[2]), nonce: m[3]! };
  const v = LEGACY_VERSION_ID.exec(text);
  if (v) return { role: 'version', version: Number(v[1]), createdAt: v[2] ? new Date(Number(v[2]) * 1000) : undefined };
  const c = LEGACY_CANDIDATE_ID.exec(text);
  if (c) return { role: 'candidate', version: Number(c[1]), startedMs: Number(c[2]), nonce: c[3]! };
  if (text.startsWith('xks:')) return { role: 'foreign' };
  return { role: 'version', version: 1 };
}

/** What a generic secret with this CKA_ID is to a key: a record, a commit marker, or nothing of ours. */
export function secretObjectRole(id: Buffer): SecretObjectRole {
  const text = id.toString('utf8');
  const r = RECORD_ID.exec(text);
  if (r) return { role: 'record', revision: Number(r[1]), json: text.slice(r[0].length) };
  if (text.startsWith(LEGACY_RECORD_PREFIX)) return { role: 'record', revision: 0, json: text.slice(LEGACY_RECORD_PREFIX.length) };
  const m = COMMIT_ID.exec(text);
  if (m) return { role: 'commit', version: Number(m[1]), createdAt: m[2] ? new Date(Number(m[2]) * 1000) : undefined, nonce: m[3]! };
  return { role: 'none' };
}
