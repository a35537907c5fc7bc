// Who is changing a key, and whether that writer still runs. A rotation or an import claims the next version with a
// candidate object (lifecycle.ts); while it works it also holds a lease next to it, so that whoever finds the candidate
// of a writer that was killed can tell at once, instead of waiting a minute for it:
//
//   generic secret  "xks:l2;t=<claim start, unix ms>;n=<nonce>;w=<writer>;r=<renewal>[;k=<import token tag>]"
//
// n is the nonce of the claim's candidate and of its commit marker (key-objects.ts); k ties an import's claim to its
// import token, so that a token is spent only by a commit (import-service.ts). w names the writing process: on Linux
// "<host>-<pid>-<start>", where host hashes the kernel's boot id and the process's pid namespace, and start is the
// process's start time in clock ticks, so a process on the same host and in the same pid namespace can ask the kernel:
// no such pid, or a pid reused by a process started later, is a writer that is gone, for certain. That question has no
// answer from another host or container, so the writer also renews its lease every second (a new object with r + 1,
// then the old one destroyed), and a lease seen unchanged for LEASE_SILENT_MS on the observer's own clock is a writer
// that stopped, or stalled. Liveness is judged only by durations each process measures on its own monotonic clock:
// the observer how long a lease stayed unchanged, the writer how long it went between renewals (a writer that went
// LEASE_LAPSE_MS without one may have been taken for silent, and starts its claim again) and how soon after its last
// renewal its commit landed (LEASE_FENCE_MS). t is never compared with another clock to judge a writer.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import type { Handle, KeyObject, KeyStore } from '../hsm/key-store.js';
import { GENERIC_SECRET_KEY_GEN } from '../hsm/mechanisms.js';
import { inertSecretTemplate } from '../hsm/templates.js';
import { secretObjectRole } from './key-objects.js';

/** How often a writer renews its lease. */
export const LEASE_RENEW_MS = 1_000;
/** A lease seen unchanged this long belongs to a writer that stopped, or stalled (four renewals missed). */
export const LEASE_SILENT_MS = 4_000;
/**
 * A writer whose renewals were this far apart (from the start of one to the end of the next, on its own clock) may have
 * been taken for silent: its claim is no longer trusted. LEASE_SILENT_MS less a margin for clock rates.
 */
export const LEASE_LAPSE_MS = 3_000;
/**
 * A writer's commit must land within this of the start of its last renewal, so that no observer can have taken it for
 * silent before the commit was in the token; an observer destroys a claim only within this of the read that judged it.
 */
export const LEASE_FENCE_MS = 2_000;
/**
 * A claim on the same import token as one's own is waited for even when silent (stalled, it might still commit and
 * spend the token): until its writer is gone, or its lease has been unchanged this long on the observer's own clock.
 */
export const LEASE_ABANDONED_MS = 60_000;

const LEASE_ID = /^xks:l2;t=([0-9]{1,15});n=([0-9a-f]{24});w=([0-9a-fx-]{1,48});r=([0-9]{1,9})(?:;k=([0-9a-f]{16}))?$/;
const WRITER = /^([0-9a-f]{12})-([1-9][0-9]{0,9})-([0-9]{1,20})$/;
/** A record's nonce (key-objects.ts RECORD_ID): a record written under a claim carries the claim's nonce. */
const RECORD_NONCE = /^xks:r2;s=[0-9]{1,12};n=([0-9a-f]{24});/;

export interface LeaseFields {
  startedMs: number;
  nonce: string;
  writer: string;
  renewal: number;
  /** The import token this claim would spend (importTokenTag). */
  token?: string | undefined;
}

export function leaseId(l: LeaseFields): Buffer {
  const k = l.token === undefined ? '' : `;k=${l.token}`;
  return Buffer.from(`xks:l2;t=${Math.floor(l.startedMs)};n=${l.nonce};w=${l.writer};r=${l.renewal}${k}`, 'ascii');
}

export function parseLease(id: Buffer): LeaseFields | undefined {
  const m = LEASE_ID.exec(id.toString('latin1'));
  if (!m) return undefined;
  return { startedMs: Number(m[1]), nonce: m[2]!, writer: m[3]!, renewal: Number(m[4]), token: m[5] };
}

/** An import token's tag in a lease: 64 bits of its wrapping key nonce (16 bytes), enough to tell a key's tokens apart. */
export function importTokenTag(wrappingKeyNonce: Buffer): string {
  return wrappingKeyNonce.subarray(0, 8).toString('hex');
}

// ---- the writing process --------------------------------------------------------------------------------------

interface Proc {
  state: string;
  start: string;
}

/** /proc/<pid>/stat's state and start time (field 22); the command name may hold spaces and parentheses. */
function procStat(pid: number | 'self'): Proc | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = fields[19];
    return start === undefined ? undefined : { state: fields[0]!, start };
  } catch {
    return undefined;
  }
}

let self: { writer: string; host: string | undefined } | undefined;

function me(): { writer: string; host: string | undefined } {
  if (self) return self;
  let host: string | undefined;
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
    host = createHash('sha256').update(`${boot}\n${readlinkSync('/proc/self/ns/pid')}`).digest('hex').slice(0, 12);
  } catch {
    host = undefined;
  }
  const stat = procStat('self');
  // Without /proc no other process can check on this one: a random name, and liveness by renewals alone.
  self = host && stat ? { writer: `${host}-${process.pid}-${stat.start}`, host } : { writer: `x${randomBytes(6).toString('hex')}`, host: undefined };
  return self;
}

/** This process as a writer. */
export function thisWriter(): string {
  return me().writer;
}

/**
 * 'gone' when the writer ran on this host, in this pid namespace, and its process no longer runs (or its pid now names
 * a process started later); 'unknown' otherwise, for a process that runs as for one out of sight.
 */
export function writerGone(writer: string): 'gone' | 'unknown' {
  const m = WRITER.exec(writer);
  if (!m || m[1] !== me().host) return 'unknown';
  const pid = Number(m[2]);
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return 'gone';
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return 'unknown'; // EPERM: it runs, as another user
  }
  const p = procStat(pid);
  // Unreadable (hidepid, or it exited just now): not proof of anything.
  if (!p) return 'unknown';
  return p.start !== m[3] || p.state === 'Z' || p.state === 'X' ? 'gone' : 'unknown';
}

// ---- reading the claims on a key ------------------------------------------------------------------------------

export interface LeaseSeen {
  /** The highest renewal seen (a renewal in progress leaves two objects for a moment). */
  lease: LeaseFields;
  objects: Handle[];
}

export interface ClaimView {
  /** Leases by claim nonce. */
  leases: Map<string, LeaseSeen>;
  /** Nonces whose claim committed: a commit marker carries it, or a record written under the claim. */
  committed: Set<string>;
}

/** The leases among a key's objects, and which claims committed. */
export function readClaims(objects: KeyObject[]): ClaimView {
  const view: ClaimView = { leases: new Map(), committed: new Set() };
  for (const o of objects) {
    if (o.keyType !== 'generic-secret') continue;
    const lease = parseLease(o.id);
    if (lease) {
      const seen = view.leases.get(lease.nonce);
      if (!seen) view.leases.set(lease.nonce, { lease, objects: [o.handle] });
      else {
        seen.objects.push(o.handle);
        if (lease.renewal > seen.lease.renewal) seen.lease = lease;
      }
      continue;
    }
    const role = secretObjectRole(o.id);
    if (role.role === 'commit') view.committed.add(role.nonce);
    const r = RECORD_NONCE.exec(o.id.toString('latin1'));
    if (r) view.committed.add(r[1]!);
  }
  return view;
}

/** When a search ran, on this process's performance.now() clock: it saw the token as it was somewhere in between. */
export interface ReadTimes {
  start: number;
  end: number;
}

export type Verdict = 'gone' | 'new' | 'live' | 'silent' | 'abandoned';

/** Sightings are forgotten this long after the last one (a claim is judged within one call, or across a server's calls). */
const SIGHTING_KEPT_MS = 10 * 60_000;

/**
 * One process's view of other writers, kept across calls: 'gone' (certain: the kernel says so), 'new' (seen for the
 * first time, or not yet seen renewing: nothing known), 'live' (seen renewing), 'silent' (not renewed for
 * LEASE_SILENT_MS), 'abandoned' (not renewed for LEASE_ABANDONED_MS). Silence is measured on this process's clock
 * only, and conservatively: from the end of the first read that showed the renewal to the start of the latest one.
 */
export class LeaseWatch {
  private readonly seen = new Map<string, { renewal: number; since: number; renewed: boolean; last: number }>();
  private pruned = 0;

  verdict(lease: LeaseFields, read: ReadTimes): Verdict {
    if (writerGone(lease.writer) === 'gone') return 'gone';
    this.prune(read.end);
    const s = this.seen.get(lease.nonce);
    if (!s || lease.renewal > s.renewal) {
      this.seen.set(lease.nonce, { renewal: lease.renewal, since: read.end, renewed: s !== undefined, last: read.end });
      return s ? 'live' : 'new';
    }
    s.last = Math.max(s.last, read.end);
    // An older renewal than already seen: a read that began before the newer one was made (concurrent calls).
    if (lease.renewal < s.renewal) return s.renewed ? 'live' : 'new';
    const quiet = read.start - s.since;
    if (quiet >= LEASE_ABANDONED_MS) return 'abandoned';
    if (quiet >= LEASE_SILENT_MS) return 'silent';
    return s.renewed ? 'live' : 'new';
  }

  private prune(now: number): void {
    if (now - this.pruned < 60_000) return;
    this.pruned = now;
    for (const [nonce, s] of this.seen) if (now - s.last > SIGHTING_KEPT_MS) this.seen.delete(nonce);
  }
}

// ---- holding a lease ------------------------------------------------------------------------------------------

/** This writer's lease on one claim: taken before its candidate, renewed while it works, released when it is done. */
export class HeldLease {
  private objects: Handle[] = [];
  private renewal = 0;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private ended = false;
  /** performance.now() just before the newest renewal was made: no observer can have seen it earlier. */
  renewedAt = -Infinity;
  /** Renewals went LEASE_LAPSE_MS apart at some point: an observer may have taken this claim for silent. */
  lapsed = false;

  constructor(
    private readonly hsm: KeyStore,
    private readonly label: string,
    private readonly claim: { startedMs: number; nonce: string; token?: string | undefined },
  ) {}

  async take(): Promise<void> {
    await this.renew();
    this.timer = setInterval(() => void this.renew().catch(() => undefined), LEASE_RENEW_MS);
    this.timer.unref();
  }

  /** A new lease object with the next renewal number, then the previous one destroyed. */
  renew(): Promise<void> {
    if (this.ended) return Promise.resolve();
    this.writing ??= this.write().finally(() => (this.writing = undefined));
    return this.writing;
  }

  private async write(): Promise<void> {
    const id = leaseId({ ...this.claim, writer: thisWriter(), renewal: this.renewal++ });
    const started = performance.now();
    const made = await this.hsm.generateKey(inertSecretTemplate(this.label, id), GENERIC_SECRET_KEY_GEN);
    // From the previous renewal's start to this one's end bounds the time the token held the previous one unchanged.
    if (this.renewedAt !== -Infinity && performance.now() - this.renewedAt >= LEASE_LAPSE_MS) this.lapsed = true;
    this.renewedAt = started;
    const old = this.objects;
    this.objects = [made.handle];
    for (const h of old) await this.hsm.destroyObject(h).catch(() => undefined);
  }

  /** Stop renewing; destroy the lease unless `keep` (a claim whose outcome is unknown: left for others to judge). */
  async release(keep = false): Promise<void> {
    this.ended = true;
    clearInterval(this.timer);
    await this.writing?.catch(() => undefined);
    const objects = this.objects;
    this.objects = [];
    if (!keep) for (const h of objects) await this.hsm.destroyObject(h).catch(() => undefined);
  }
}
