// How an external key maps onto token objects (docs/key-model.md). Every object of a key carries CKA_LABEL = the
// external key id; CKA_ID says what the object is:
//   AES key, CKA_ID "xks:v<N>[;t=<unix seconds>][;n=<nonce>]"        version N (created at t, by the writer n), committed
//   AES key, CKA_ID "xks:c<N>;t=<unix ms>;n=<nonce>"                 a rotation's candidate for version N, not yet usable
//   AES key, any other CKA_ID (or none)                              version 1 of an adopted key (pkcs11-tool --keygen)
//   generic secret, CKA_ID "xks:key:" + JSON                         the key's record: state, usage, origin, dates
// CKA_ID is a free byte string every HSM stores and lets a user session change in place (C_SetAttributeValue), which
// data objects do not offer everywhere (SoftHSM makes CKA_VALUE read-only, CloudHSM has no data objects).

const VERSION_ID = /^xks:v([1-9][0-9]{0,8})(?:;t=([0-9]{1,12}))?(?:;n=([0-9a-f]{1,32}))?$/;
const CANDIDATE_ID = /^xks:c([1-9][0-9]{0,8});t=([0-9]{1,15});n=([0-9a-f]{1,32})$/;
const RECORD_PREFIX = 'xks:key:';

/** XKS externalKeyId: at most 128 of A-Za-z0-9._- (spec "URIs"). */
export const EXTERNAL_KEY_ID = /^[A-Za-z0-9._-]{1,128}$/;

export type AesObjectRole =
  | { role: 'version'; version: number; createdAt?: Date | undefined }
  | { role: 'candidate'; version: number; startedMs: number; nonce: string }
  | { role: 'foreign' };

/**
 * CKA_ID of a committed version; `createdAt` is kept to the second (rotation periods are counted in days). The
 * writer's nonce makes two objects committed as one version (see catalogue.ts) tell apart in every process.
 */
export function versionId(version: number, createdAt?: Date, nonce?: string): Buffer {
  const t = createdAt ? `;t=${Math.floor(createdAt.getTime() / 1000)}` : '';
  const n = nonce ? `;n=${nonce}` : '';
  return Buffer.from(`xks:v${version}${t}${n}`, 'ascii');
}

export function candidateId(version: number, startedMs: number, nonce: string): Buffer {
  return Buffer.from(`xks:c${version};t=${Math.floor(startedMs)};n=${nonce}`, 'ascii');
}

/** What an AES object with this CKA_ID is. Unknown "xks:" ids are ours but not understood: never used. */
export function aesObjectRole(id: Buffer): AesObjectRole {
  const text = id.toString('latin1');
  const v = VERSION_ID.exec(text);
  if (v) return { role: 'version', version: Number(v[1]), createdAt: v[2] ? new Date(Number(v[2]) * 1000) : undefined };
  const c = CANDIDATE_ID.exec(text);
  if (c) return { role: 'candidate', version: Number(c[1]), startedMs: Number(c[2]), nonce: c[3]! };
  if (text.startsWith('xks:')) return { role: 'foreign' };
  return { role: 'version', version: 1 };
}

export function recordId(json: string): Buffer {
  return Buffer.from(RECORD_PREFIX + json, 'utf8');
}

/** The JSON text of a record object's CKA_ID, or undefined when the object is not a record. */
export function recordJson(id: Buffer): string | undefined {
  const text = id.toString('utf8');
  return text.startsWith(RECORD_PREFIX) ? text.slice(RECORD_PREFIX.length) : undefined;
}
