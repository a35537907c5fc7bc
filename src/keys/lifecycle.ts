// The life of an external key: create, enable/disable, rotate, automatic rotation, scheduled deletion and purge.
// Every state lives in the token (key-objects.ts, key-record.ts); this module holds no state between calls, so any
// number of processes on one token agree. Rotation races are settled in the token too (docs/key-model.md).
import { setTimeout as sleep } from 'node:timers/promises';
import type { Handle, KeyObject, KeyStore } from '../hsm/key-store.js';
import { GENERIC_SECRET_KEY_GEN } from '../hsm/mechanisms.js';
import { aes256KeyTemplate, inertSecretTemplate, type AesKeySpec } from '../hsm/templates.js';
import { assemble, searchKeyObjects, uncommitted, usageOf, type Candidate, type ExternalKey, type KeyCatalogue, type Usage } from './catalogue.js';
import { HeldLease, LEASE_FENCE_MS, LEASE_SILENT_MS, LeaseWatch, readClaims, type ClaimView, type LeaseFields, type ReadTimes, type Verdict } from './claims.js';
import { BlockIndex, compactRetired, destroyBlocks, reservedPerVersion } from './encryption-blocks.js';
import type { EncryptionLimits } from './encryption-limits.js';
import { KeyError } from './errors.js';
import { exposedVersions } from './exposure.js';
import type { EncryptionCounts } from './key-description.js';
import { commitId, EXTERNAL_KEY_ID, materialId, newNonce, recordId } from './key-objects.js';
import { encodeRecord, PENDING_WINDOW_DAYS, ROTATION_DAYS, type KeyRecord, type KeyState, type Origin } from './key-record.js';

const DAY_MS = 86_400_000;
/**
 * A candidate without a lease (an earlier release's) older than this by its CKA_ID's time belongs to a rotation that died
 * midway (rotations take milliseconds): clear it. The only rule that reads another host's clock; a candidate with a
 * lease is judged by the lease alone (claims.ts).
 */
const CANDIDATE_STALE_MS = 60_000;
/** How long one call keeps trying before ConflictException. */
const ROTATION_BUDGET_MS = 10_000;
/**
 * An import's lease that committed is the proof that its token is spent until the token has expired (24 h) for sure;
 * judged by its t= against this host's clock, so a skew of up to an hour is allowed for.
 */
const TOKEN_LEASE_KEPT_MS = 25 * 3_600_000;

/**
 * A writer's place in line: its start time, then its nonce. Start times of two hosts are compared only here: a skewed
 * clock changes who goes first, never whether a claim is taken for dead.
 */
interface Claim {
  startedMs: number;
  /** The current attempt's nonce, carried by its candidate's CKA_ID and its lease. */
  nonce: string;
  /** performance.now() at the start: the budget runs on the real clock even when the lifecycle's clock is a fake. */
  began: number;
}

/** Whether claim `c` started before `me` (and so goes first). */
function isAhead(c: Pick<Claim, 'startedMs' | 'nonce'>, me: Claim): boolean {
  return c.startedMs < me.startedMs || (c.startedMs === me.startedMs && c.nonce < me.nonce);
}

/** Other writers' claims as one read shows them: those to reckon with. */
interface Rivals {
  live: { startedMs: number; nonce: string }[];
  /** A claim that may be cleared was not, the read being too old by then: read again. */
  blocked: boolean;
}

export interface AddVersionOptions {
  /** Called on a fresh read of the key before each attempt: throw to refuse, 'skip' when nothing is to be done. */
  check: (key: ExternalKey, claims: ClaimView) => 'go' | 'skip' | Promise<'go' | 'skip'>;
  /** Make the candidate object from this spec (label, CKA_ID, usage, exportable). */
  make: (spec: AesKeySpec) => Promise<KeyObject>;
  /** The record to store once the version is committed (default: unchanged; an adopted key gets one). */
  recordAfter?: (key: ExternalKey, version: number) => KeyRecord;
  /**
   * This very version, dated `createdAt`, rather than the next one: imported material made again. When it is present
   * already, nothing is made and only the record is written (under the claim all the same).
   */
  version?: { number: number; createdAt: Date };
  /** An import token's tag (claims.ts): claims that would spend the same token are rivals even without a candidate. */
  token?: string;
  /** After the read that cleared the claim and before the commit (an import checks its token is still unspent). */
  beforeCommit?: (claims: ClaimView) => Promise<void>;
  /** After the commit, while the claim is still held (an import spends its token). */
  afterCommit?: () => Promise<void>;
}

export interface CreateOptions {
  usage: Usage;
  /** EXTERNAL: no material yet, state PendingImport (bring your own key). */
  origin?: 'HSM' | 'EXTERNAL';
  rotationPeriodDays?: number | undefined;
  exportable?: boolean;
}

export interface LifecycleOptions {
  /** Labels no operator command may touch (the health-check key). */
  reserved: ReadonlySet<string>;
  /** The clock; tests pass a fake one to run rotate-due and purge-due. */
  now?: () => Date;
  /** When a version is due for rotation by its encryptions (rotate-due); absent: by period only. */
  encryptionLimits?: EncryptionLimits;
}

export interface RotationResult {
  KeyId: string;
  Rotated: boolean;
  Version: number;
  /** rotate-due only: why this key could not be rotated this time (the run goes on with the other keys). */
  Error?: string;
  /** rotate-due only: the encryptions reserved under the version replaced, when they made it due. */
  EncryptionsReserved?: number;
}

export class KeyLifecycle {
  private readonly now: () => Date;
  /** Other writers' leases as this process has seen them, across calls: a server can tell a claim abandoned. */
  private readonly watch = new LeaseWatch();

  constructor(
    private readonly hsm: KeyStore,
    private readonly catalogue: KeyCatalogue,
    private readonly opts: LifecycleOptions,
  ) {
    this.now = opts.now ?? (() => new Date());
  }

  /** The key as the token holds it now (never from cache). */
  async get(id: string): Promise<ExternalKey> {
    checkId(id, this.opts.reserved);
    const key = await this.catalogue.refresh(id);
    if (!key) throw new KeyError('NotFoundException', `no key "${id}" in the token`);
    return key;
  }

  list(): Promise<ExternalKey[]> {
    return this.catalogue.list().then((all) => all.filter((k) => !this.opts.reserved.has(k.id)));
  }

  /** Write the record first, then the material: a crash in between leaves a key that says it has no material. */
  async create(id: string, o: CreateOptions): Promise<ExternalKey> {
    checkId(id, this.opts.reserved);
    checkRotationDays(o.rotationPeriodDays);
    const external = o.origin === 'EXTERNAL';
    if (external && o.rotationPeriodDays !== undefined) {
      throw new KeyError('UnsupportedOperationException', 'keys with imported material rotate by importing new material, not on a schedule');
    }
    if (o.exportable === true && !this.hsm.tokenAttributes.wrapWithTrusted) {
      throw new KeyError(
        'UnsupportedOperationException',
        'this token cannot restrict wrapping to a trusted KEK (no CKA_WRAP_WITH_TRUSTED; HSM profile attributes.wrapWithTrusted): it would let any key of the user wrap an exportable key out, so none is made',
      );
    }
    if (await this.catalogue.refresh(id)) throw new KeyError('AlreadyExistsException', `a key "${id}" already exists in the token`);
    const now = this.now();
    const record: KeyRecord = {
      f: 1,
      state: external ? 'PendingImport' : 'Enabled',
      usage: usageList(o.usage),
      origin: external ? 'EXTERNAL' : 'HSM',
      created: now.toISOString(),
      exportable: o.exportable === true,
      ...(o.rotationPeriodDays !== undefined ? { rotationDays: o.rotationPeriodDays } : {}),
    };
    await this.hsm.generateKey(inertSecretTemplate(id, recordId(1, encodeRecord(record))), GENERIC_SECRET_KEY_GEN);
    if (!external) await this.generateVersion(id, 1, record, now);
    return this.get(id);
  }

  /** Finish a key whose creation stopped between its record and its first version. */
  async completeCreate(id: string): Promise<ExternalKey> {
    const key = await this.get(id);
    if (key.current || !key.record || key.origin !== 'HSM') return key;
    await this.generateVersion(id, 1, key.record, this.now());
    return this.get(id);
  }

  async enable(id: string): Promise<ExternalKey> {
    return this.changeState(id, ['Disabled'], 'Enabled', 'EnableKey');
  }

  async disable(id: string): Promise<ExternalKey> {
    return this.changeState(id, ['Enabled'], 'Disabled', 'DisableKey');
  }

  /** Start the waiting period (KMS: 7 to 30 days, default 30); the key is unusable from now on. */
  async scheduleDeletion(id: string, pendingWindowDays: number = PENDING_WINDOW_DAYS.default): Promise<ExternalKey> {
    if (!Number.isInteger(pendingWindowDays) || pendingWindowDays < PENDING_WINDOW_DAYS.min || pendingWindowDays > PENDING_WINDOW_DAYS.max) {
      throw new KeyError('ValidationException', `the pending window must be a whole number of days from ${PENDING_WINDOW_DAYS.min} to ${PENDING_WINDOW_DAYS.max}`);
    }
    const key = await this.get(id);
    if (key.state === 'PendingDeletion') throw new KeyError('KMSInvalidStateException', `key "${id}" is already pending deletion`);
    const deletionDate = new Date(this.now().getTime() + pendingWindowDays * DAY_MS).toISOString();
    await this.writeRecord(key, { ...this.recordOf(key), state: 'PendingDeletion', deletionDate });
    return this.get(id);
  }

  /** Back to Disabled, as in KMS (a key without material goes back to PendingImport). */
  async cancelDeletion(id: string): Promise<ExternalKey> {
    const key = await this.get(id);
    if (key.state !== 'PendingDeletion') throw new KeyError('KMSInvalidStateException', `key "${id}" is ${key.state}, not pending deletion`);
    const { deletionDate: _gone, ...rest } = this.recordOf(key);
    await this.writeRecord(key, { ...rest, state: key.current ? 'Disabled' : 'PendingImport' });
    return this.get(id);
  }

  async setRotation(id: string, periodDays: number | undefined): Promise<ExternalKey> {
    checkRotationDays(periodDays);
    const key = await this.get(id);
    if (periodDays !== undefined && key.origin === 'EXTERNAL') {
      throw new KeyError('UnsupportedOperationException', `key "${id}" holds imported material: rotate it by importing new material`);
    }
    if (key.state === 'PendingDeletion') throw new KeyError('KMSInvalidStateException', `key "${id}" is pending deletion`);
    const { rotationDays: _old, ...rest } = this.recordOf(key);
    await this.writeRecord(key, periodDays === undefined ? rest : { ...rest, rotationDays: periodDays });
    return this.get(id);
  }

  /**
   * Serve the key's exposed versions (material that can leave the HSM: keys/exposure.ts) anyway, by the operator's
   * choice, kept in the key's record. Only the versions exposed now: one exposed later is refused until allowed too.
   */
  async allowExposed(id: string): Promise<ExternalKey> {
    const key = await this.get(id);
    const exposed = exposedVersions(key);
    if (exposed.length === 0) throw new KeyError('KMSInvalidStateException', `key "${id}" has no version whose material can leave the HSM: nothing to allow`);
    await this.writeRecord(key, { ...this.recordOf(key), allowExposed: exposed });
    return this.get(id);
  }

  /** Withdraw allowExposed: the key's exposed versions are refused again. */
  async refuseExposed(id: string): Promise<ExternalKey> {
    const key = await this.get(id);
    if (key.record?.allowExposed === undefined) return key;
    const { allowExposed: _withdrawn, ...rest } = key.record;
    await this.writeRecord(key, rest);
    return this.get(id);
  }

  /** Rotate now: a new version generated in the HSM becomes current; every older version still decrypts. */
  rotate(id: string): Promise<RotationResult> {
    return this.rotateIf(id, () => true);
  }

  /** Encryptions reserved per version of a key, read now, with the limits that judge them (describe). */
  async encryptionCounts(key: ExternalKey): Promise<EncryptionCounts | undefined> {
    const limits = this.opts.encryptionLimits;
    return limits ? { reserved: await reservedPerVersion(this.hsm, key.id, key.versions.keys()), limits } : undefined;
  }

  /**
   * Rotate every enabled key whose rotation period has passed since its current version was made, or whose current
   * version has `encryptionLimits.rotateAfter` encryptions reserved. Safe from cron.
   */
  async rotateDue(): Promise<RotationResult[]> {
    const results: RotationResult[] = [];
    const limits = this.opts.encryptionLimits;
    const keys = await this.list();
    const blocks = limits ? await BlockIndex.read(this.hsm) : undefined;
    for (const key of keys) {
      // Upkeep: the blocks of versions replaced a day ago become one each (a failure waits for the next run).
      if (blocks) await compactRetired(this.hsm, key, blocks, this.now()).catch(() => 0);
      const worn = key.state === 'Enabled' && key.current ? (blocks?.reserved(key.id).get(key.current.version) ?? 0) : 0;
      const wornOut = limits !== undefined && worn >= limits.rotateAfter ? key.current!.version : undefined;
      if (!this.isDue(key) && wornOut === undefined) continue;
      try {
        // Still due on a fresh read: another host's rotate-due may have rotated it a moment ago.
        const r = await this.rotateIf(key.id, (k) => this.isDue(k) || (k.state === 'Enabled' && k.current?.version === wornOut));
        results.push(wornOut !== undefined && r.Rotated ? { ...r, EncryptionsReserved: worn } : r);
      } catch (e) {
        // One key that cannot be rotated now (a conflict, a state changed meanwhile) must not hold back the others.
        const name = e instanceof KeyError ? e.code : 'Error';
        results.push({ KeyId: key.id, Rotated: false, Version: key.current?.version ?? 0, Error: `${name}: ${(e as Error).message}` });
      }
    }
    return results;
  }

  /** Destroy every key whose deletion date has passed: encryption blocks, versions and candidates first, the record last. */
  async purgeDue(): Promise<string[]> {
    const purged: string[] = [];
    const now = this.now().getTime();
    let blocks: BlockIndex | undefined;
    for (const key of await this.list()) {
      if (key.state !== 'PendingDeletion' || !key.record?.deletionDate) continue;
      if (Date.parse(key.record.deletionDate) > now) continue;
      // The encryption counts go with the key: a key made again under this id is new material.
      blocks ??= await BlockIndex.read(this.hsm);
      await destroyBlocks(this.hsm, blocks.objects(key.id));
      for (const v of key.versions.values()) {
        for (const o of [v, ...v.alternates]) {
          await this.hsm.destroyObject(o.object);
          if (o.marker) await this.hsm.destroyObject(o.marker);
        }
      }
      for (const c of key.candidates) await this.hsm.destroyObject(c.object);
      for (const h of [...key.strayMarkers, ...key.leftovers]) await this.hsm.destroyObject(h);
      // Leases left by writers that stopped (claims.ts): nothing else would ever clear them once the key is gone.
      for (const l of readClaims(await searchKeyObjects(this.hsm, { label: key.id })).leases.values()) {
        for (const h of l.objects) await this.hsm.destroyObject(h).catch(() => undefined);
      }
      // A crash before this line leaves a record still pending deletion: the next purge finishes the job.
      if (key.recordObject) await this.hsm.destroyObject(key.recordObject);
      this.catalogue.invalidate(key.id);
      purged.push(key.id);
    }
    return purged;
  }

  // ---- internals ----------------------------------------------------------------------------------------------

  private isDue(key: ExternalKey): boolean {
    const days = key.record?.rotationDays;
    if (days === undefined || key.state !== 'Enabled' || !key.current) return false;
    const since = key.current.createdAt ?? (key.record ? new Date(key.record.created) : undefined);
    if (!since) return false;
    return this.now().getTime() - since.getTime() >= days * DAY_MS;
  }

  private rotateIf(id: string, stillWanted: (k: ExternalKey) => boolean): Promise<RotationResult> {
    return this.addVersion(id, {
      check: (key) => {
        if (!stillWanted(key)) return 'skip';
        if (key.state !== 'Enabled') throw new KeyError('KMSInvalidStateException', `key "${id}" is ${key.state}; only an enabled key can be rotated`);
        if (key.origin === 'EXTERNAL') {
          throw new KeyError('UnsupportedOperationException', `key "${id}" holds imported material: rotate it by importing new material`);
        }
        if (!key.current) throw new KeyError('KMSInvalidStateException', `key "${id}" has no key material`);
        return 'go';
      },
      make: (spec) => this.hsm.generateKey(aes256KeyTemplate(spec)),
    });
  }

  /**
   * Add the next version of a key: rotation (material generated in the HSM) or imported material (`make` unwraps).
   *
   * PKCS#11 has no compare-and-swap, so the new object is first a candidate claiming version N, then the key is
   * read again: a committed version at or past N, or an older rotation's candidate, and this one withdraws and
   * retries; it commits only once a read shows no other candidate at all. Of two racing writers at most one sees no
   * rival (whoever created second sees the first), so no version is ever claimed twice; only the winner commits, by
   * creating a commit marker carrying its nonce (one create: no attribute is ever rewritten, which CloudHSM forbids for
   * CKA_ID). Versions are only ever added, never replaced, so no ciphertext loses
   * its key. A call keeps its start time and nonce across attempts and yields only to older ones, so racing writers
   * go oldest first and none is overtaken again and again by newer ones (which withdraw when they see it).
   * Each attempt holds a lease (claims.ts) from before its candidate exists until it is committed or withdrawn. The
   * candidate of a writer that is gone, or silent on this process's clock, is destroyed; a writer that was only
   * stalled finds it gone and withdraws: before its commit (mayCommit), or after its marker, which it withdraws again
   * (confirmCommit). A claim on the same import token is waited for until it is gone or abandoned (claims.ts).
   * This assumes a search sees every object created before it. Across processes, SoftHSM 2.6's file store breaks that:
   * a process's own create or destroy hides from it what others created since its last search, until another process
   * writes (test/keys/rotation-race.test.ts reproduces the duplicate version that follows).
   */
  async addVersion(id: string, o: AddVersionOptions): Promise<RotationResult> {
    const me: Claim = { startedMs: this.now().getTime(), nonce: newNonce(), began: performance.now() };
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) {
        if (performance.now() - me.began > ROTATION_BUDGET_MS) break;
        await backoff(attempt);
      }
      const { objects, read } = await this.search(id);
      const key = assemble(id, objects);
      if (!key) throw new KeyError('NotFoundException', `no key "${id}" in the token`);
      const claims = readClaims(objects);
      if ((await o.check(key, claims)) === 'skip') return { KeyId: id, Rotated: false, Version: key.current?.version ?? 0 };
      const present = o.version !== undefined && key.versions.has(o.version.number);
      const rivals = await this.rivals(key.candidates, claims, me, o.token, !present, read);
      if (rivals.blocked || rivals.live.some((c) => isAhead(c, me))) continue;
      const next = o.version?.number ?? Math.max(0, ...key.versions.keys(), ...key.duplicateVersions) + 1;
      const record = this.recordOf(key);
      // A fresh nonce per attempt: the CKA_ID of a withdrawn candidate is never used again. The start time, which
      // decides the place in line, stays.
      if (attempt > 0) me.nonce = newNonce();
      const nonce = me.nonce;
      // The lease first: a candidate without one would be taken for an earlier release's, and waited for 60 s.
      const lease = new HeldLease(this.hsm, id, { startedMs: me.startedMs, nonce, token: o.token });
      let mine: Handle | undefined;
      let marking = false;
      try {
        await lease.take();
        if (!present) {
          mine = (await o.make({ label: id, id: materialId(next, me.startedMs, nonce), ...usageOf(key), exportable: record.exportable })).handle;
        }
        let cleared: { claims: ClaimView; freshAt: number } | undefined;
        for (;;) {
          cleared = await this.mayCommit(id, mine, next, o.version !== undefined, me, lease, o.token);
          if (!cleared) break;
          await o.beforeCommit?.(cleared.claims);
          // Still within the fence after that last look, or renew and read again (while the budget lasts).
          if (performance.now() - cleared.freshAt <= LEASE_FENCE_MS) break;
          if (performance.now() - me.began > ROTATION_BUDGET_MS) cleared = undefined;
          if (!cleared) break;
        }
        if (!cleared) continue;
        if (mine) {
          marking = true;
          const marker = await this.hsm.generateKey(inertSecretTemplate(id, commitId(next, o.version?.createdAt ?? this.now(), nonce)), GENERIC_SECRET_KEY_GEN);
          if (!(await this.confirmCommit(id, mine, marker.handle, cleared.freshAt, lease))) {
            marking = false;
            throw new KeyError('ConflictException', `key "${id}": another process took this change for dead and cleared its new version before it committed; try again`);
          }
        }
        const after = o.recordAfter?.(key, next) ?? record;
        // An adopted key gets its record on first rotation, so its origin and dates are kept from now on.
        if (!key.record || after !== record) await this.writeRecord(key, after, nonce);
        await o.afterCommit?.();
        this.catalogue.invalidate(id);
        return { KeyId: id, Rotated: !present, Version: next };
      } catch (e) {
        // A marker whose create failed may be in the token all the same: leave the candidate and its lease to be judged.
        if (marking) {
          await lease.release(true);
          mine = undefined;
        }
        throw e;
      } finally {
        if (!marking && mine) await this.hsm.destroyObject(mine).catch(() => undefined);
        await lease.release();
      }
    }
    throw new KeyError('ConflictException', `key "${id}" is being changed by another process; try again`);
  }

  /** The key's objects, and when the search ran on this process's clock (leases are judged by it). */
  private async search(id: string): Promise<{ objects: KeyObject[]; read: ReadTimes }> {
    checkId(id, this.opts.reserved);
    const start = performance.now();
    const objects = await searchKeyObjects(this.hsm, { label: id });
    return { objects, read: { start, end: performance.now() } };
  }

  /**
   * The other writers' claims that `me` must reckon with: candidates (when `me` makes one) and claims on the same import
   * token. What writers that are gone or silent left is destroyed on the way (a same-token claim only once it is gone
   * or abandoned), and a lease-less candidate (an earlier release's) a minute old, with finished claims' leftover leases.
   */
  private async rivals(
    candidates: readonly Candidate[],
    claims: ClaimView,
    me: Claim,
    token: string | undefined,
    making: boolean,
    read: ReadTimes,
  ): Promise<Rivals> {
    const out: Rivals = { live: [], blocked: false };
    const nowMs = this.now().getTime();
    const clearable = (lease: LeaseFields, v: Verdict) =>
      v === 'gone' || v === 'abandoned' || (v === 'silent' && (token === undefined || lease.token !== token));
    // A claim is cleared only while the read that judged it is fresh: a writer that stalled past its fence waits that
    // long before it checks that its candidate survived (confirmCommit).
    const clear = async (handles: Handle[]): Promise<boolean> => {
      if (performance.now() - read.start > LEASE_FENCE_MS) {
        out.blocked = true;
        return false;
      }
      for (const h of handles) await this.hsm.destroyObject(h).catch(() => undefined);
      return true;
    };
    const seen = new Set<string>();
    for (const c of candidates) {
      if (c.nonce === me.nonce) continue;
      seen.add(c.nonce);
      const l = claims.leases.get(c.nonce);
      // A candidate was never committed, so never used: clearing one loses nothing.
      const stale = l ? clearable(l.lease, this.watch.verdict(l.lease, read)) : Math.abs(nowMs - c.startedMs) > CANDIDATE_STALE_MS;
      if (stale) {
        await clear([c.object, ...(l?.objects ?? [])]);
        continue;
      }
      if (making || (token !== undefined && l?.lease.token === token)) out.live.push(c);
    }
    for (const [nonce, l] of claims.leases) {
      if (nonce === me.nonce || seen.has(nonce)) continue;
      const verdict = this.watch.verdict(l.lease, read);
      if (claims.committed.has(nonce)) {
        // A finished claim's lease: of an import, the proof that its token is spent, kept until the token expired.
        const proof = l.lease.token !== undefined && Math.abs(nowMs - l.lease.startedMs) <= TOKEN_LEASE_KEPT_MS;
        if (verdict !== 'live' && !proof) await clear(l.objects);
        continue;
      }
      if (clearable(l.lease, verdict)) await clear(l.objects);
      else if (token !== undefined && l.lease.token === token) out.live.push(l.lease);
    }
    return out;
  }

  /**
   * Read the key's objects until this claim may commit: a read that shows no rival claim and, when it makes candidate
   * `mine` for version `next`, no committed version at or past `next` (`exact`: at `next`). Younger rivals withdraw when
   * they see this one, so they are waited for; an older one, a newer version, `mine` gone (cleared by someone who took
   * this writer for dead) or a lease that lapsed (someone may have) means this claim withdraws: undefined. Returns that
   * read's claims, and the start of the renewal that fences it: the lease must be that fresh at that read, or an
   * observer might have taken this claim for silent meanwhile: renewed, and read again.
   */
  private async mayCommit(
    id: string,
    mine: Handle | undefined,
    next: number,
    exact: boolean,
    me: Claim,
    lease: HeldLease,
    token: string | undefined,
  ): Promise<{ claims: ClaimView; freshAt: number } | undefined> {
    for (;;) {
      if (performance.now() - lease.renewedAt > LEASE_FENCE_MS) await lease.renew();
      const freshAt = lease.renewedAt;
      let lost = false;
      let younger = false;
      const { objects, read } = await this.search(id);
      const claims = readClaims(objects);
      const candidates = uncommitted(objects);
      if (mine) {
        const key = assemble(id, objects);
        const taken = [...(key?.versions.keys() ?? []), ...(key?.duplicateVersions ?? [])];
        if (exact ? taken.includes(next) : taken.some((v) => v >= next)) lost = true;
        if (!candidates.some((c) => c.object.equals(mine))) lost = true;
      }
      // Candidates even of a key that has nothing else yet (assemble() answers undefined for such a key).
      const rivals = await this.rivals(candidates, claims, me, token, mine !== undefined, read);
      if (rivals.blocked) younger = true;
      for (const c of rivals.live) {
        if (isAhead(c, me)) lost = true;
        else younger = true;
      }
      if (lease.lapsed) lost = true;
      if (!lost && !younger) {
        if (performance.now() - freshAt <= LEASE_FENCE_MS) return { claims, freshAt };
        continue;
      }
      // Past the budget, a younger rival that does not go away is stuck: give way rather than wait.
      if (lost || performance.now() - me.began > ROTATION_BUDGET_MS) return undefined;
      await sleep(5 + Math.random() * 10);
    }
  }

  /**
   * After the commit marker: is the candidate still there? A marker that landed within LEASE_FENCE_MS of the start of
   * the renewal that fenced it (and renewals never LEASE_LAPSE_MS apart) was in the token before any observer could
   * take this writer for silent, so none will clear it. Otherwise (this writer stalled) an observer may have judged it
   * silent just before: observers clear only within LEASE_FENCE_MS of their read, so wait LEASE_SILENT_MS (that, and
   * time for its destroy to reach the HSM), then look. Material gone: the marker commits nothing; it is withdrawn and
   * the answer is false.
   */
  private async confirmCommit(id: string, mine: Handle, marker: Handle, freshAt: number, lease: HeldLease): Promise<boolean> {
    if (lease.lapsed || performance.now() - freshAt > LEASE_FENCE_MS) await sleep(LEASE_SILENT_MS);
    const objects = await searchKeyObjects(this.hsm, { label: id });
    if (objects.some((x) => x.handle.equals(mine))) return true;
    await this.hsm.destroyObject(marker).catch(() => undefined);
    this.catalogue.invalidate(id);
    return false;
  }

  /** Version 1 of a new key: no rival can claim it (creation refuses an existing key), so material, then its marker. */
  private async generateVersion(id: string, version: number, record: KeyRecord, at: Date): Promise<void> {
    const nonce = newNonce();
    await this.hsm.generateKey(
      aes256KeyTemplate({
        label: id,
        id: materialId(version, at.getTime(), nonce),
        encrypt: record.usage.includes('ENCRYPT'),
        decrypt: record.usage.includes('DECRYPT'),
        exportable: record.exportable,
      }),
    );
    await this.hsm.generateKey(inertSecretTemplate(id, commitId(version, at, nonce)), GENERIC_SECRET_KEY_GEN);
    this.catalogue.invalidate(id);
  }

  private async changeState(id: string, from: KeyState[], to: KeyState, op: string): Promise<ExternalKey> {
    const key = await this.get(id);
    if (key.state === to) return key;
    if (!from.includes(key.state)) throw new KeyError('KMSInvalidStateException', `${op} is not allowed on key "${id}": it is ${key.state}`);
    if (to === 'Enabled' && !key.current) throw new KeyError('KMSInvalidStateException', `key "${id}" has no key material`);
    await this.writeRecord(key, { ...this.recordOf(key), state: to });
    return this.get(id);
  }

  /** The stored record, or the one an adopted key implicitly has (made explicit on its first change). */
  recordOf(key: ExternalKey): KeyRecord {
    if (key.record) return key.record;
    if (key.recordObject) throw new KeyError('KMSInvalidStateException', `the record of key "${key.id}" cannot be read; see xks keys describe`);
    const origin: Origin = 'ADOPTED';
    return { f: 1, state: key.state, usage: usageList(usageOf(key)), origin, created: this.now().toISOString(), exportable: false };
  }

  /**
   * Store a new revision of the record: a new record object first, then the ones it supersedes destroyed. A writer that
   * stops in between leaves an older revision that every reader ignores and the next write destroys. Two writers at
   * once both write revision + 1: every reader takes the same one (the highest CKA_ID), so the last writer wins, as in
   * KMS. A layout 1 record (rewritten in place by earlier releases) is replaced by a layout 2 one on its first change.
   * A record written under a claim carries the claim's nonce: the proof that the claim committed (claims.ts).
   */
  async writeRecord(key: ExternalKey, record: KeyRecord, nonce?: string): Promise<void> {
    const id = recordId(key.recordRevision + 1, encodeRecord(record), nonce);
    await this.hsm.generateKey(inertSecretTemplate(key.id, id), GENERIC_SECRET_KEY_GEN);
    this.catalogue.invalidate(key.id);
    for (const old of [...(key.recordObject ? [key.recordObject] : []), ...key.leftovers]) {
      // Another writer may have destroyed it already.
      await this.hsm.destroyObject(old).catch(() => undefined);
    }
  }
}

function checkId(id: string, reserved: ReadonlySet<string>): void {
  if (!EXTERNAL_KEY_ID.test(id)) throw new KeyError('ValidationException', `"${id}" is not a valid external key id: use 1 to 128 characters of A-Za-z0-9._-`);
  if (reserved.has(id)) throw new KeyError('ValidationException', `"${id}" is reserved for the proxy's own keys (health check, audit trail)`);
}

function checkRotationDays(days: number | undefined): void {
  if (days === undefined) return;
  if (!Number.isInteger(days) || days < ROTATION_DAYS.min || days > ROTATION_DAYS.max) {
    throw new KeyError('ValidationException', `the rotation period must be a whole number of days from ${ROTATION_DAYS.min} to ${ROTATION_DAYS.max}`);
  }
}

function usageList(u: Usage): ('ENCRYPT' | 'DECRYPT')[] {
  return [...(u.encrypt ? (['ENCRYPT'] as const) : []), ...(u.decrypt ? (['DECRYPT'] as const) : [])];
}

function backoff(attempt: number): Promise<void> {
  return sleep(10 + Math.random() * Math.min(200, 20 * (attempt + 1)));
}
