// The audit trail's MAC key: a generic secret that lives in the HSM (sensitive, non-extractable, sign/verify only),
// found by its label and its CKA_ID "xks:audit;n=<nonce>" (none from earlier releases), or made when a trail is first
// opened on a token without it (never later: a key not found then is a failed checkpoint). A key record or any other
// object that only carries the label is never taken for it. Checkpoints are made and checked with it inside the HSM.
import { randomBytes } from 'node:crypto';
import { HsmError } from '../hsm/errors.js';
import type { Handle, KeyStore } from '../hsm/key-store.js';
import { GENERIC_SECRET_KEY_GEN } from '../hsm/mechanisms.js';
import { hmacKeyTemplate } from '../hsm/templates.js';
import { AuditError } from './audit-error.js';
import type { AuditSigner } from './audit-trail.js';

export const DEFAULT_AUDIT_KEY_LABEL = 'xks-audit-hmac';

/** Every key carrying the label: two processes making it at the same moment may leave two; a MAC by either verifies. */
export async function findAuditKeys(hsm: KeyStore, label: string): Promise<Handle[]> {
  const found = await hsm.findSecretKeys({ label, keyType: 'generic-secret' });
  return found.filter((k) => AUDIT_KEY_ID.test(k.id.toString('latin1')) && k.attrs.sensitive && !k.attrs.extractable).map((k) => k.handle);
}

/** The audit key's CKA_ID: unique (NSS takes keys with one CKA_ID for one object); empty for keys of earlier releases. */
const AUDIT_KEY_ID = /^(?:xks:audit;n=[0-9a-f]{24})?$/;

/**
 * The signer of checkpoints. A key handle is only good for the recovery generation it was found in: after a lost
 * login or a re-initialisation the token may number its objects afresh, and the old number then names nothing
 * (CKR_OBJECT_HANDLE_INVALID) or another object. So the key is found again after every recovery, and once more when
 * its handle is refused; a MAC made while a recovery happened is not trusted and is made again.
 */
export async function auditSigner(hsm: KeyStore, label: string = DEFAULT_AUDIT_KEY_LABEL): Promise<AuditSigner> {
  let key: { handle: Handle; generation: number } | undefined;
  // Made only here, when a trail is first opened on a token without it. Not found later (destroyed, or a search that
  // saw nothing after a recovery: a lost login hides private objects) is a failed checkpoint, never a second key.
  const find = async (create: boolean) => {
    const generation = hsm.generation;
    let [handle] = await findAuditKeys(hsm, label);
    if (!handle && !create) throw new AuditError('AuditKeyNotFound', `the audit key "${label}" was not found in the token (it is never made again once a trail was opened with it)`);
    handle ??= (await hsm.generateKey(hmacKeyTemplate(label, Buffer.from(`xks:audit;n=${randomBytes(12).toString('hex')}`, 'ascii')), GENERIC_SECRET_KEY_GEN)).handle;
    return { handle, generation };
  };
  key = await find(true);
  const check = auditMacChecker(hsm);
  return {
    keyLabel: label,
    verify: (message, mac) => check(label, message, mac),
    mac: async (message) => {
      for (let attempt = 0; ; attempt++) {
        if (!key || key.generation !== hsm.generation) key = await find(false);
        const used = key;
        try {
          const mac = await hsm.hmacSha256(used.handle, message);
          if (hsm.generation === used.generation) return mac;
        } catch (e) {
          if (!(e instanceof HsmError) || (e.code !== 'ObjectHandleInvalid' && hsm.generation === used.generation) || attempt > 0) throw e;
        }
        if (attempt > 0) throw new HsmError('ObjectHandleInvalid', 'the audit key was found again, but the HSM recovered again while it was used');
        key = undefined;
      }
    },
  };
}

/** Checks a checkpoint MAC against every key with the label (found again after a recovery, as the signer does). */
export function auditMacChecker(hsm: KeyStore): (label: string, message: Buffer, mac: Buffer) => Promise<boolean> {
  const keys = new Map<string, { handles: Promise<Handle[]>; generation: number }>();
  return async (label, message, mac) => {
    for (let attempt = 0; ; attempt++) {
      let found = keys.get(label);
      if (!found || found.generation !== hsm.generation) {
        found = { handles: findAuditKeys(hsm, label), generation: hsm.generation };
        keys.set(label, found);
      }
      try {
        let ok = false;
        for (const k of await found.handles) if (!ok && (await hsm.verifyHmacSha256(k, message, mac))) ok = true;
        if (hsm.generation === found.generation) return ok;
      } catch (e) {
        if (!(e instanceof HsmError) || (e.code !== 'ObjectHandleInvalid' && hsm.generation === found.generation) || attempt > 0) throw e;
      }
      if (attempt > 0) throw new HsmError('ObjectHandleInvalid', 'the audit key was found again, but the HSM recovered again while it was used');
      keys.delete(label);
    }
  };
}
