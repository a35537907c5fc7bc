// The catalogue: external key id -> token objects. C_FindObjects is linear on SoftHSM (12 ms at 500 keys), so it is
// never run per request: entries are cached, refreshed in the background when older than the TTL, re-resolved on a
// miss or a stale handle. The token stays the only store: the cache holds nothing that is not re-read from it.
import { HsmError } from '../hsm/errors.js';
import type { Handle, HsmConnection, KeyObject } from '../hsm/hsm-connection.js';
import { P } from '../hsm/module.js';
import { aes256KeyTemplate } from '../hsm/templates.js';
import { versionFromId, versionId } from './key-objects.js';

export interface KeyVersion {
  version: number;
  /** The handle crypto uses: the token object, or its session copy where the HSM profile asks for one. */
  handle: Handle;
  /** The token object itself. */
  object: Handle;
  encrypt: boolean;
  decrypt: boolean;
  /** Evidence that the material never left the HSM: CKA_LOCAL, CKA_NEVER_EXTRACTABLE, CKA_SENSITIVE, CKA_EXTRACTABLE. */
  attrs: Record<string, boolean>;
}

export interface ExternalKey {
  id: string;
  current: KeyVersion;
  versions: ReadonlyMap<number, KeyVersion>;
  /** Versions claimed by more than one token object: ambiguous, never used (shown by `xks keys describe`). */
  duplicateVersions: ReadonlySet<number>;
}

interface Entry {
  key: ExternalKey | undefined; // undefined: known absent (negative cache)
  fetchedAt: number;
  generation: number;
  refreshing?: Promise<ExternalKey | undefined> | undefined;
}

export interface CatalogueOptions {
  /** Entries older than this are refreshed in the background (another process may have changed the token). */
  ttlMs: number;
  /** How long "no such key" is remembered, so a flood of unknown ids does not become a flood of searches. */
  negativeTtlMs: number;
  /** Labels that XKS callers may never use (the health-check key). */
  reserved: ReadonlySet<string>;
  maxEntries: number;
}

export class KeyExistsError extends Error {
  override readonly name = 'KeyExistsError';
}

export class KeyCatalogue {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly hsm: HsmConnection,
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
      if (e.key) {
        if (age > this.opts.ttlMs && !e.refreshing) void this.refresh(id).catch(() => undefined);
        return e.key;
      }
      if (age <= this.opts.negativeTtlMs) return undefined;
    }
    return this.refresh(id);
  }

  /** Forget a key (after a stale handle); the next resolve reads the token again. */
  invalidate(id: string, failedHandle?: Handle): void {
    const e = this.entries.get(id);
    const versions = [...(e?.key?.versions.values() ?? [])];
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
        for (const v of before?.versions.values() ?? []) {
          if (![...(key?.versions.values() ?? [])].some((n) => n.object.equals(v.object))) this.hsm.dropCryptoHandle(v.object);
        }
        this.store(id, { key, fetchedAt: this.now(), generation });
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
    const objects = await this.hsm.findSecretKeys({ label: id, keyType: P.CKK_AES });
    const key = assemble(id, objects);
    for (const v of key?.versions.values() ?? []) v.handle = await this.hsm.cryptoHandle(v.object);
    return key;
  }

  /** Generate a new AES-256 key in the token: sensitive, non-extractable, with the usage asked for. */
  async create(id: string, usage: { encrypt: boolean; decrypt: boolean }): Promise<ExternalKey> {
    const existing = await this.refresh(id);
    if (existing) throw new KeyExistsError(`a key labelled "${id}" already exists in the token`);
    await this.hsm.generateKey(aes256KeyTemplate({ label: id, id: versionId(1), ...usage }));
    const key = await this.refresh(id);
    if (!key) throw new HsmError('Unknown', `key "${id}" was generated but cannot be found`);
    return key;
  }

  /** Every AES key in the token, grouped by label (labels in `reserved` included, so operators see them). */
  async list(): Promise<ExternalKey[]> {
    const objects = await this.hsm.findSecretKeys({ keyType: P.CKK_AES });
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

function assemble(id: string, objects: KeyObject[]): ExternalKey | undefined {
  const versions = new Map<number, KeyVersion>();
  const duplicateVersions = new Set<number>();
  for (const o of objects) {
    const version = versionFromId(o.id);
    // Two objects claiming one version (say, two `pkcs11-tool --keygen` with one label): the order C_FindObjects
    // returns them in differs between processes, so neither is used (operations refuse the version).
    if (versions.has(version)) {
      duplicateVersions.add(version);
      continue;
    }
    versions.set(version, {
      version,
      handle: o.handle,
      object: o.handle,
      encrypt: o.attrs.encrypt === true,
      decrypt: o.attrs.decrypt === true,
      attrs: o.attrs,
    });
  }
  if (versions.size === 0) return undefined;
  const current = versions.get(Math.max(...versions.keys()))!;
  return { id, current, versions, duplicateVersions };
}
