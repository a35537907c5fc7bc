// The catalogue: external key id -> token objects. C_FindObjects is linear on SoftHSM (12 ms at 500 keys), so it is
// never run per request: entries are cached, refreshed in the background when older than the TTL, re-resolved on a
// miss or a stale handle. The token stays the only store: the cache holds nothing that is not re-read from it.
import { HsmError } from '../hsm/errors.js';
import type { Handle, KeyObject, KeyStore, KeyType } from '../hsm/key-store.js';
import { aesObjectRole, secretObjectRole } from './key-objects.js';
import { decodeRecord, type KeyRecord, type KeyState, type Origin } from './key-record.js';

export interface KeyVersion {
  version: number;
  /** The handle crypto uses: the token object, or its session copy where the HSM profile asks for one. */
  handle: Handle;
  /** The token object itself. */
  object: Handle;
  /** The commit marker that made the object a version (layout 2); absent for layout 1 and adopted versions. */
  marker?: Handle | undefined;
  encrypt: boolean;
  decrypt: boolean;
  /** When the version was made (its commit marker's date, or its layout 1 CKA_ID); unknown for adopted keys. */
  createdAt?: Date | undefined;
  /** Evidence that the material never left the HSM: CKA_LOCAL, CKA_NEVER_EXTRACTABLE, CKA_SENSITIVE, CKA_EXTRACTABLE. */
  attrs: Record<string, boolean>;
  /**
   * Other objects committed as this same version by writers that could not see each other (see assemble()); decrypt
   * tries them after this one. Empty almost always.
   */
  alternates: KeyVersion[];
}

/** A rotation in progress (or one that crashed): an AES object not yet committed as a version. */
export interface Candidate {
  object: Handle;
  version: number;
  /** When its rotation started, and its nonce: racing rotations go oldest first (lifecycle.ts). */
  startedMs: number;
  nonce: string;
}

export interface ExternalKey {
  id: string;
  /** The stored record; undefined for an adopted key that no operation has touched yet. */
  record: KeyRecord | undefined;
  recordObject: Handle | undefined;
  /** The record's revision: the next write makes revision + 1 (layout 1 records are revision 0). */
  recordRevision: number;
  /** Records superseded by a higher revision (a writer stopped before destroying them): the next record write does. */
  leftovers: readonly Handle[];
  /**
   * Commit markers whose material is gone (a purge or a deletion of material that stopped midway). They commit nothing
   * and are destroyed only with the key: on SoftHSM's file store a search may miss material another process just
   * made, so a marker that looks alone is not proof that it is.
   */
  strayMarkers: readonly Handle[];
  state: KeyState;
  origin: Origin;
  /** The version new encrypts use: the highest committed one. Undefined while a key has no material. */
  current: KeyVersion | undefined;
  versions: ReadonlyMap<number, KeyVersion>;
  /** Versions claimed by more than one token object: ambiguous, never used (shown by `xks keys describe`). */
  duplicateVersions: ReadonlySet<number>;
  candidates: readonly Candidate[];
  /**
   * What is wrong with the key's objects (an unreadable record, legacy records twice, an object of the wrong size),
   * reported as violations by `xks report`. XKS refuses the key only when no record can be read (a state it cannot know);
   * with a readable record, every process picks the same one (highest revision, then CKA_ID) and serves by it. A
   * backup refuses any problem.
   */
  problems: readonly string[];
}

export interface Usage {
  encrypt: boolean;
  decrypt: boolean;
}

/** The key's usage: from its record, else from its current version's flags (an adopted key). */
export function usageOf(key: ExternalKey): Usage {
  if (key.record) return { encrypt: key.record.usage.includes('ENCRYPT'), decrypt: key.record.usage.includes('DECRYPT') };
  return { encrypt: key.current?.encrypt === true, decrypt: key.current?.decrypt === true };
}

interface Entry {
  key: ExternalKey | undefined; // undefined: known absent (negative cache)
  fetchedAt: number;
  generation: number;
  refreshing?: Promise<ExternalKey | undefined> | undefined;
  /** When a request naming a version this key lacks last made it re-read the token (refreshForVersion). */
  forcedAt?: number | undefined;
}

export interface CatalogueOptions {
  /**
   * Entries older than this are refreshed in the background (another process may have changed the token); entries
   * older than twice this are refreshed before use, so a change made elsewhere is seen within 2 x ttlMs.
   */
  ttlMs: number;
  /** How long "no such key" is remembered, so a flood of unknown ids does not become a flood of searches. */
  negativeTtlMs: number;
  /**
   * A key is re-read for a version it lacks at most once per this long: until then the read that lacked it is the
   * answer for every version it lacks, so ciphertexts naming a version that does not exist cost no search each.
   */
  versionRefreshMs: number;
  /** Labels that XKS callers may never use (the health-check key). */
  reserved: ReadonlySet<string>;
  maxEntries: number;
}

export class KeyCatalogue {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly hsm: KeyStore,
    private readonly opts: CatalogueOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /** The key, or undefined when the token has no AES key with that label. */
  resolve(id: string): Promise<ExternalKey | undefined> | ExternalKey | undefined {
    if (this.opts.reserved.has(id)) return undefined;
    const e = this.entries.get(id);
    const now = this.now();
    if (e && e.generation === this.hsm.generation) {
      const age = now - e.fetchedAt;
      if (e.key && age <= 2 * this.opts.ttlMs) {
        if (age > this.opts.ttlMs && !e.refreshing) void this.refresh(id).catch(() => undefined);
        return e.key;
      }
      if (!e.key && age <= this.opts.negativeTtlMs) return undefined;
    }
    return this.refresh(id);
  }

  /**
   * The key re-read because a request names a version the cached key lacks (another process may have rotated a moment
   * ago): at most once per versionRefreshMs per key, shared by requests at the same time. A version another process
   * adds is so found at most versionRefreshMs after the last such read.
   */
  refreshForVersion(id: string): Promise<ExternalKey | undefined> | ExternalKey | undefined {
    const e = this.entries.get(id);
    if (e?.refreshing) return e.refreshing;
    const now = this.now();
    if (e && e.generation === this.hsm.generation && now - (e.forcedAt ?? -Infinity) < this.opts.versionRefreshMs) return e.key;
    const p = this.refresh(id);
    const pending = this.entries.get(id);
    if (pending) pending.forcedAt = now;
    return p;
  }

  /** Forget a key (after a stale handle); the next resolve reads the token again. */
  invalidate(id: string, failedHandle?: Handle): void {
    const e = this.entries.get(id);
    const versions = allObjects(e?.key);
    // A request that failed on a handle another request already replaced must not throw away the new one.
    if (failedHandle && !versions.some((v) => v.handle.equals(failedHandle))) return;
    for (const v of versions) this.hsm.dropCryptoHandle(v.object);
    this.entries.delete(id);
  }

  refresh(id: string): Promise<ExternalKey | undefined> {
    const existing = this.entries.get(id);
    if (existing?.refreshing) return existing.refreshing;
    const generation = this.hsm.generation;
    const p = this.read(id).then(
      (key) => {
        // Session copies of versions that are gone from the token must not outlive them.
        const before = this.entries.get(id)?.key;
        const now = allObjects(key);
        for (const v of allObjects(before)) {
          if (!now.some((n) => n.object.equals(v.object))) this.hsm.dropCryptoHandle(v.object);
        }
        this.store(id, { key, fetchedAt: this.now(), generation, forcedAt: this.entries.get(id)?.forcedAt });
        return key;
      },
      (err) => {
        const e = this.entries.get(id);
        if (e) e.refreshing = undefined;
        throw err;
      },
    );
    if (existing) existing.refreshing = p;
    else this.store(id, { key: undefined, fetchedAt: -Infinity, generation: -1, refreshing: p });
    return p;
  }

  private store(id: string, entry: Entry): void {
    if (!this.entries.has(id) && this.entries.size >= this.opts.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(id, entry);
  }

  private async read(id: string): Promise<ExternalKey | undefined> {
    const key = assemble(id, await searchKeyObjects(this.hsm, { label: id }));
    for (const v of key?.versions.values() ?? []) {
      for (const x of [v, ...v.alternates]) x.handle = await this.hsm.cryptoHandle(x.object);
    }
    return key;
  }

  /** Every key in the token, grouped by label (labels in `reserved` included, so operators see them). */
  async list(): Promise<ExternalKey[]> {
    const objects = await searchKeyObjects(this.hsm, {});
    const byLabel = new Map<string, KeyObject[]>();
    for (const o of objects) {
      if (!o.label) continue;
      const l = byLabel.get(o.label) ?? [];
      l.push(o);
      byLabel.set(o.label, l);
    }
    return [...byLabel.entries()]
      .map(([label, objs]) => assemble(label, objs))
      .filter((k): k is ExternalKey => k !== undefined)
      .sort((a, b) => a.id.localeCompare(b.id));
  }
}

const SEARCH_ATTEMPTS = 5;

/**
 * The token's secret keys matching `match`. Another process may destroy an object between C_FindObjects and the read of
 * its attributes (a rotation withdrawing its candidate does so all the time): that read fails with a stale handle,
 * which here only means the search is out of date, so search again rather than fail a KMS request.
 */
export async function searchKeyObjects(hsm: KeyStore, match: { label?: string; keyType?: KeyType }): Promise<KeyObject[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await hsm.findSecretKeys(match);
    } catch (e) {
      if (!(e instanceof HsmError) || e.code !== 'ObjectHandleInvalid' || attempt >= SEARCH_ATTEMPTS) throw e;
    }
  }
}

/** Every version object of a key, alternates included. */
export function allObjects(key: ExternalKey | undefined): KeyVersion[] {
  return [...(key?.versions.values() ?? [])].flatMap((v) => [v, ...v.alternates]);
}

/** The candidates among a label's objects (material without a commit marker), even when the key has nothing else. */
export function uncommitted(objects: KeyObject[]): Candidate[] {
  return classify(objects).candidates;
}

interface Classified {
  byVersion: Map<number, { o: KeyObject; createdAt: Date | undefined; marker?: Handle | undefined }[]>;
  candidates: Candidate[];
  records: { object: Handle; revision: number; id: Buffer; json: string }[];
  strayMarkers: Handle[];
  /** AES objects of another size than 256 bits (`pkcs11-tool --keygen --key-type aes:16`): never served. */
  wrongSize: string[];
}

/** The proxy serves AES-256 only (XKS keySpec AES_256); a token that does not report the length (0) is taken at its word. */
const AES_256_BYTES = 32;

/** What each of a label's objects is: version material (with its marker), a candidate, a record, a stray marker. */
function classify(objects: KeyObject[]): Classified {
  const out: Classified = { byVersion: new Map(), candidates: [], records: [], strayMarkers: [], wrongSize: [] };
  const markers = new Map<string, { object: Handle; version: number; createdAt: Date | undefined }[]>();
  const addVersion = (version: number, entry: { o: KeyObject; createdAt: Date | undefined; marker?: Handle | undefined }) => {
    const group = out.byVersion.get(version) ?? [];
    group.push(entry);
    out.byVersion.set(version, group);
  };
  for (const o of objects) {
    if (o.keyType !== 'generic-secret') continue;
    const role = secretObjectRole(o.id);
    if (role.role === 'record') out.records.push({ object: o.handle, revision: role.revision, id: o.id, json: role.json });
    if (role.role === 'commit') {
      const list = markers.get(role.nonce) ?? [];
      list.push({ object: o.handle, version: role.version, createdAt: role.createdAt });
      markers.set(role.nonce, list);
    }
  }
  const usedMarkers = new Set<Handle>();
  for (const o of objects) {
    if (o.keyType !== 'aes') continue;
    if (o.valueLen !== undefined && o.valueLen !== 0 && o.valueLen !== AES_256_BYTES) {
      out.wrongSize.push(`an AES-${o.valueLen * 8} key carries this label: only AES-256 keys are served`);
      continue;
    }
    const role = aesObjectRole(o.id);
    if (role.role === 'material') {
      const marker = markers.get(role.nonce)?.find((m) => m.version === role.version);
      if (marker) {
        usedMarkers.add(marker.object);
        addVersion(role.version, { o, createdAt: marker.createdAt, marker: marker.object });
      } else {
        out.candidates.push({ object: o.handle, version: role.version, startedMs: role.startedMs, nonce: role.nonce });
      }
    } else if (role.role === 'candidate') {
      out.candidates.push({ object: o.handle, version: role.version, startedMs: role.startedMs, nonce: role.nonce });
    } else if (role.role === 'version') {
      addVersion(role.version, { o, createdAt: role.createdAt });
    }
  }
  // A marker whose material is gone (a purge or a deletion of material that stopped midway) commits nothing.
  for (const list of markers.values()) for (const m of list) if (!usedMarkers.has(m.object)) out.strayMarkers.push(m.object);
  return out;
}

/** One key from the token objects carrying its label; undefined when none of them is ours or an AES key. */
export function assemble(id: string, objects: KeyObject[]): ExternalKey | undefined {
  const versions = new Map<number, KeyVersion>();
  const duplicateVersions = new Set<number>();
  const { byVersion, candidates, records, strayMarkers, wrongSize } = classify(objects);
  const leftovers: Handle[] = [];
  for (const [version, group] of byVersion) {
    // Several objects committed as one version. Writers in separate processes can both commit one version when the
    // token hides from one the other's object (SoftHSM's file store does, after a process's own create). Each may
    // already have encrypted under its own, so none is dropped: every process encrypts with the same one (the lowest
    // CKA_ID, which carries the writer's nonce) and decrypt tries the others. Objects with the same CKA_ID (two
    // `pkcs11-tool --keygen` with one label) cannot be told apart the same way in every process: refused.
    group.sort((a, b) => Buffer.compare(a.o.id, b.o.id));
    if (group.some((g, i) => i > 0 && g.o.id.equals(group[i - 1]!.o.id))) {
      duplicateVersions.add(version);
    }
    const [first, ...rest] = group.map(({ o, createdAt, marker }): KeyVersion => ({
      version,
      handle: o.handle,
      object: o.handle,
      marker,
      encrypt: o.attrs.encrypt === true,
      decrypt: o.attrs.decrypt === true,
      createdAt,
      attrs: o.attrs,
      alternates: [],
    }));
    first!.alternates = rest;
    versions.set(version, first!);
  }
  if (versions.size === 0 && records.length === 0 && wrongSize.length === 0) return undefined;
  const problems: string[] = [...wrongSize];
  // The highest revision is the record; at one revision (two writers at once) the highest CKA_ID, in every process.
  // Lower revisions are leftovers of a writer that stopped before destroying them. Two layout 1 records (two processes
  // adopting one key at once, before revisions existed) are reported.
  records.sort((a, b) => b.revision - a.revision || Buffer.compare(b.id, a.id));
  const legacy = records.filter((r) => r.revision === 0);
  if (legacy.length > 1 && records[0]!.revision === 0) problems.push(`${legacy.length} key records carry this label`);
  const chosen = records[0];
  for (const r of records.slice(1)) leftovers.push(r.object);
  const record = chosen ? decodeRecord(chosen.json) : undefined;
  if (chosen && !record) problems.push('the key record cannot be read');
  const current = versions.size ? versions.get(Math.max(...versions.keys())) : undefined;
  return {
    id,
    record,
    recordObject: chosen?.object,
    recordRevision: chosen?.revision ?? 0,
    leftovers,
    strayMarkers,
    // A damaged record keeps the key out of use rather than guessing that it is enabled.
    state: record?.state ?? (chosen ? 'Disabled' : 'Enabled'),
    origin: record?.origin ?? 'ADOPTED',
    current,
    versions,
    duplicateVersions,
    candidates,
    problems,
  };
}
