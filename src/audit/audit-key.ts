// The audit trail's MAC key: a generic secret that lives in the HSM (sensitive, non-extractable, sign/verify only),
// found by its label and its CKA_ID "xks:audit;n=<nonce>" (none from earlier releases), or made on first use. A key
// record or any other object that only carries the label is never taken for it. Checkpoints are made and checked with
// it inside the HSM.
import { randomBytes } from 'node:crypto';
import type { Handle, KeyStore } from '../hsm/key-store.js';
import { GENERIC_SECRET_KEY_GEN } from '../hsm/mechanisms.js';
import { hmacKeyTemplate } from '../hsm/templates.js';
import type { AuditSigner } from './audit-trail.js';

export const DEFAULT_AUDIT_KEY_LABEL = 'xks-audit-hmac';

/** Every key carrying the label: two processes making it at the same moment may leave two; a MAC by either verifies. */
export async function findAuditKeys(hsm: KeyStore, label: string): Promise<Handle[]> {
  const found = await hsm.findSecretKeys({ label, keyType: 'generic-secret' });
  return found.filter((k) => AUDIT_KEY_ID.test(k.id.toString('latin1')) && k.attrs.sensitive && !k.attrs.extractable).map((k) => k.handle);
}

/** The audit key's CKA_ID: unique (NSS takes keys with one CKA_ID for one object); empty for keys of earlier releases. */
const AUDIT_KEY_ID = /^(?:xks:audit;n=[0-9a-f]{24})?$/;

export async function auditSigner(hsm: KeyStore, label: string = DEFAULT_AUDIT_KEY_LABEL): Promise<AuditSigner> {
  let [key] = await findAuditKeys(hsm, label);
  key ??= (await hsm.generateKey(hmacKeyTemplate(label, Buffer.from(`xks:audit;n=${randomBytes(12).toString('hex')}`, 'ascii')), GENERIC_SECRET_KEY_GEN)).handle;
  const handle = key;
  return { keyLabel: label, mac: (message) => hsm.hmacSha256(handle, message) };
}

/** Checks a checkpoint MAC against every key with the label. */
export function auditMacChecker(hsm: KeyStore): (label: string, message: Buffer, mac: Buffer) => Promise<boolean> {
  const keys = new Map<string, Promise<Handle[]>>();
  return async (label, message, mac) => {
    if (!keys.has(label)) keys.set(label, findAuditKeys(hsm, label));
    for (const k of await keys.get(label)!) if (await hsm.verifyHmacSha256(k, message, mac)) return true;
    return false;
  };
}
