// How many encryptions a key version may have made, kept in the token: NIST SP 800-38D allows at most 2^32 AES-GCM
// encryptions under one key with random IVs, and any number of stateless replicas encrypt under the same version, so
// no process can count alone. Before it encrypts, a process reserves a block of encryptions for the version by creating
// a small object that can do nothing; the sum of the blocks in the token is an upper bound of the encryptions made
// under that version by the whole fleet (a block a process did not use up is lost, which only errs on the safe side).
//
//   generic secret   CKA_LABEL "xks:u1;v=<N>;k=<hash>"   CKA_ID "xks:u1;c=<count>;n=<nonce>"
//
// The label is not the external key id, unlike every other object of a key: a busy version gathers hundreds of blocks,
// and the catalogue re-reads all objects carrying a key's label every few seconds. Under a label of their own per
// version, only a claim (one every few minutes per process) and the operator's commands read them. The label holds a
// hash of the key id, so it fits any token's label length and can never be an external key id (':' and ';').
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { HsmError } from '../hsm/errors.js';
import type { Handle, KeyStore } from '../hsm/key-store.js';
import { GENERIC_SECRET_KEY_GEN } from '../hsm/mechanisms.js';
import { inertSecretTemplate } from '../hsm/templates.js';
import { searchKeyObjects, type ExternalKey } from './catalogue.js';
import type { EncryptionLimits } from './encryption-limits.js';
import { newNonce } from './key-objects.js';

const BLOCK_LABEL = /^xks:u1;v=([1-9][0-9]{0,8});k=([0-9a-f]{24})$/;
const BLOCK_ID = /^xks:u1;c=([1-9][0-9]{0,9});n=([0-9a-f]{24})$/;

function keyHash(keyId: string): string {
  return createHash('sha256').update(keyId, 'utf8').digest('hex').slice(0, 24);
}

/** The label of every block of `version` of key `keyId`. */
export function blockLabel(keyId: string, version: number): string {
  return `xks:u1;v=${version};k=${keyHash(keyId)}`;
}

function blockId(count: number, nonce: string): Buffer {
  return Buffer.from(`xks:u1;c=${count};n=${nonce}`, 'ascii');
}

/** The encryptions a block object reserves; undefined for anything else. */
function blockCount(id: Buffer): number | undefined {
  const m = BLOCK_ID.exec(id.toString('latin1'));
  return m ? Number(m[1]) : undefined;
}

/** The blocks of one version, read from the token now. */
async function readBlocks(hsm: KeyStore, label: string): Promise<{ total: number; handles: Handle[] }> {
  let total = 0;
  const handles: Handle[] = [];
  for (const o of await searchKeyObjects(hsm, { label, keyType: 'generic-secret' })) {
    const count = blockCount(o.id);
    if (count === undefined) continue;
    total += count;
    handles.push(o.handle);
  }
  return { total, handles };
}

export interface Claim {
  /** Encryptions this claim reserved for the caller: 0 when none (see `exhausted`, `contended`). */
  granted: number;
  /** Encryptions reserved for the version by the whole fleet, this claim included. */
  reserved: number;
  /** The version has no room left: every encryption it may make is reserved. */
  exhausted: boolean;
  /** Other processes claimed the last room at the same moment, again and again: try later. */
  contended: boolean;
}

const CLAIM_ATTEMPTS = 4;

/**
 * Reserve up to `want` encryptions of a version. PKCS#11 has no compare-and-swap, so, as a rotation does
 * (lifecycle.ts), the block is created first and the blocks are read again: if the sum then passes the limit, another
 * process claimed at the same moment and this block is withdrawn, unused (whoever created second sees the first, so of
 * two racing claims that do not both fit, at most one is kept). A block is used only once that read says it fits.
 * SoftHSM's file store can hide a racing process's block from the one that just created its own (docs/key-model.md):
 * then both are kept, which is why the default limit stays some blocks below 2^32.
 */
export async function claimBlock(hsm: KeyStore, keyId: string, version: number, want: number, perVersion: number): Promise<Claim> {
  const label = blockLabel(keyId, version);
  let reserved = 0;
  for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
    if (attempt > 0) await sleep(5 + Math.random() * 20 * attempt);
    reserved = (await readBlocks(hsm, label)).total;
    const room = perVersion - reserved;
    if (room <= 0) return { granted: 0, reserved, exhausted: true, contended: false };
    const count = Math.min(want, room);
    const mine = await hsm.generateKey(inertSecretTemplate(label, blockId(count, newNonce())), GENERIC_SECRET_KEY_GEN);
    const after = await readBlocks(hsm, label);
    // A token that does not show a process its own new object: count it anyway.
    reserved = after.total + (after.handles.some((h) => h.equals(mine.handle)) ? 0 : count);
    if (reserved <= perVersion) return { granted: count, reserved, exhausted: false, contended: false };
    reserved -= count;
    await hsm.destroyObject(mine.handle).catch(() => undefined); // left behind, it only counts against the version
  }
  return { granted: 0, reserved, exhausted: false, contended: true };
}

/** Every block in the token, by key and version: one search, for the operator's commands (report, rotate-due, purge). */
export class BlockIndex {
  private constructor(private readonly byKey: Map<string, Map<number, { total: number; handles: Handle[] }>>) {}

  static async read(hsm: KeyStore): Promise<BlockIndex> {
    const byKey = new Map<string, Map<number, { total: number; handles: Handle[] }>>();
    for (const o of await searchKeyObjects(hsm, { keyType: 'generic-secret' })) {
      const m = BLOCK_LABEL.exec(o.label);
      const count = m ? blockCount(o.id) : undefined;
      if (!m || count === undefined) continue;
      const versions = byKey.get(m[2]!) ?? new Map<number, { total: number; handles: Handle[] }>();
      byKey.set(m[2]!, versions);
      const v = versions.get(Number(m[1])) ?? { total: 0, handles: [] };
      versions.set(Number(m[1]), v);
      v.total += count;
      v.handles.push(o.handle);
    }
    return new BlockIndex(byKey);
  }

  /** Encryptions reserved per version of a key (versions without blocks are absent). */
  reserved(keyId: string): Map<number, number> {
    return new Map([...(this.byKey.get(keyHash(keyId)) ?? new Map())].map(([v, b]) => [v, b.total] as const));
  }

  /** The blocks of each version of a key. */
  blocksOf(keyId: string): ReadonlyMap<number, { readonly total: number; readonly handles: readonly Handle[] }> {
    return this.byKey.get(keyHash(keyId)) ?? new Map();
  }

  /** Every block object of a key, of all its versions. */
  objects(keyId: string): Handle[] {
    return [...(this.byKey.get(keyHash(keyId))?.values() ?? [])].flatMap((b) => b.handles);
  }
}

/** A version replaced this long ago takes no new block (a process re-reads a key within 2 x keyCacheTtlMs, at most 20 min). */
const RETIRED_AFTER_MS = 86_400_000;

/**
 * Replace the blocks of each version that stopped being current more than a day ago by one block of their sum, so that
 * the token does not keep hundreds of objects per past version. Two runs at once may both do it, and the version then
 * counts twice its encryptions: only the report shows it, since a past version never encrypts again.
 */
export async function compactRetired(hsm: KeyStore, key: ExternalKey, index: BlockIndex, now: Date): Promise<number> {
  let compacted = 0;
  for (const [version, blocks] of index.blocksOf(key.id)) {
    if (blocks.handles.length < 2) continue;
    const successors = [...key.versions.values()].filter((v) => v.version > version);
    // Retired since the oldest later version was made; a later version of unknown date (adopted) proves nothing.
    if (successors.length === 0 || successors.some((v) => !v.createdAt)) continue;
    const since = Math.min(...successors.map((v) => v.createdAt!.getTime()));
    if (now.getTime() - since < RETIRED_AFTER_MS) continue;
    await hsm.generateKey(inertSecretTemplate(blockLabel(key.id, version), blockId(blocks.total, newNonce())), GENERIC_SECRET_KEY_GEN);
    await destroyBlocks(hsm, blocks.handles);
    compacted++;
  }
  return compacted;
}

/** Encryptions reserved per version of one key, read now (xks keys describe). */
export async function reservedPerVersion(hsm: KeyStore, keyId: string, versions: Iterable<number>): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const v of versions) {
    const { total } = await readBlocks(hsm, blockLabel(keyId, v));
    if (total > 0) out.set(v, total);
  }
  return out;
}

/** Destroy blocks; one another process destroyed first (two purges at once) is no failure. */
export async function destroyBlocks(hsm: KeyStore, handles: readonly Handle[]): Promise<void> {
  for (const h of handles) {
    await hsm.destroyObject(h).catch((e: unknown) => {
      if (!(e instanceof HsmError) || e.code !== 'ObjectHandleInvalid') throw e;
    });
  }
}

/** What the operator sees about a version's encryptions: nothing, due for rotation, or refused. */
export function encryptionFinding(reserved: number, limits: EncryptionLimits): string | undefined {
  if (reserved >= limits.perVersion) {
    return `${reserved} encryptions reserved, the limit of ${limits.perVersion} (NIST SP 800-38D, random IVs): Encrypt under this version is refused; rotate the key`;
  }
  if (reserved >= limits.rotateAfter) {
    return `${reserved} encryptions reserved, past ${limits.rotateAfter}: due for rotation (xks keys rotate-due), Encrypt is refused from ${limits.perVersion} (NIST SP 800-38D, random IVs)`;
  }
  return undefined;
}
