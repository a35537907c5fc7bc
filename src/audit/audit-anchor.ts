// HSM anchors of the audit trails: after each checkpoint the writer records {trail, seq, hash of the checkpoint line}
// in a token object, where someone who can rewrite the trail's files cannot reach it. A writer that opens its trail
// checks the file's tail against it (a cut after a checkpoint, a rewritten checkpoint), and `xks audit verify` checks
// that the newest anchored checkpoint of each trail is in the files given. This is what covers the CLI trail, whose
// checkpoints never reach a process log.
//
// An anchor is a generic secret that can do nothing (inertSecretTemplate, like the key model's commit markers), with
// label ANCHOR_LABEL and CKA_ID "xks:a1;t=<trail>;s=<seq>;h=<hash>": nothing is ever rewritten (no
// C_SetAttributeValue, which CloudHSM refuses for CKA_ID), no CKO_DATA (CloudHSM has none), and every CKA_ID is unique
// (NSS takes a new key with an existing CKA_ID for the same object): a new anchor is made, then the older ones of that
// trail are destroyed. A crash between the two leaves two; the highest seq wins.
import { GENERIC_SECRET_KEY_GEN } from '../hsm/mechanisms.js';
import type { KeyStore } from '../hsm/key-store.js';
import { inertSecretTemplate } from '../hsm/templates.js';

/** The label of every anchor object: reserved, never an external key id. */
export const ANCHOR_LABEL = 'xks-audit-anchor';

const ANCHOR_ID = /^xks:a1;t=([0-9a-f]{16});s=([1-9][0-9]{0,15});h=([0-9a-f]{32})$/;

export interface HsmAnchor {
  /** trailId() of the trail's current file name. */
  trail: string;
  seq: number;
  /** anchorHash() of the anchored line. */
  hash: string;
}

export function anchorObjectId(a: HsmAnchor): Buffer {
  return Buffer.from(`xks:a1;t=${a.trail};s=${a.seq};h=${a.hash}`, 'ascii');
}

export function parseAnchorObjectId(id: Buffer): HsmAnchor | undefined {
  const m = ANCHOR_ID.exec(id.toString('latin1'));
  return m ? { trail: m[1]!, seq: Number(m[2]), hash: m[3]! } : undefined;
}

export class AuditAnchors {
  constructor(private readonly hsm: KeyStore) {}

  /** Every anchor in the token, the newest (highest seq) per trail. */
  async list(): Promise<HsmAnchor[]> {
    const newest = new Map<string, HsmAnchor>();
    for (const o of await this.objects()) {
      const before = newest.get(o.anchor.trail);
      if (!before || o.anchor.seq > before.seq) newest.set(o.anchor.trail, o.anchor);
    }
    return [...newest.values()];
  }

  async latest(trail: string): Promise<HsmAnchor | undefined> {
    return (await this.list()).find((a) => a.trail === trail);
  }

  /** Anchor `a`, then remove the older anchors of its trail (a failure to remove them only leaves them behind). */
  async record(a: HsmAnchor): Promise<void> {
    const id = anchorObjectId(a).toString('latin1');
    const older = (await this.objects()).filter((o) => o.anchor.trail === a.trail);
    if (!older.some((o) => o.id === id)) await this.hsm.generateKey(inertSecretTemplate(ANCHOR_LABEL, anchorObjectId(a)), GENERIC_SECRET_KEY_GEN);
    for (const o of older) {
      if (o.id === id || o.anchor.seq > a.seq) continue;
      await this.hsm.destroyObject(o.handle).catch(() => undefined);
    }
  }

  private async objects() {
    const found = await this.hsm.findSecretKeys({ label: ANCHOR_LABEL, keyType: 'generic-secret' });
    return found.flatMap((k) => {
      const anchor = k.attrs.sensitive && !k.attrs.extractable ? parseAnchorObjectId(k.id) : undefined;
      return anchor ? [{ handle: k.handle, id: k.id.toString('latin1'), anchor }] : [];
    });
  }
}
