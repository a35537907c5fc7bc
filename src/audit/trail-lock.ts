// The lock of an audit trail file (`<trail>.lock`): one writer per file. Short-lived CLI commands take turns on the CLI
// trail with it; a serving process holds its own trail's lock for its lifetime, so that a second process started with
// the same host and role cannot resume (and rename) the live file.
//
// The lock file says who holds it: the writer as src/keys/claims.ts names it (boot id and pid namespace, pid, process
// start time), and pid, host and start time for a person. A holder in this pid namespace is judged by the kernel: gone
// (no such process, or its pid reused by a later one) is taken over at once, running is never taken over. A hostname
// proves nothing (containers share one, and a CLI in `docker run` is pid 1 in its own namespace), so a holder out of
// sight (another container or host on a shared volume) is judged by its heartbeat: the holder touches the lock's mtime
// every second, and a lock seen unchanged for LOCK_SILENT_MS on the observer's own clock belongs to a holder that
// stopped. A lock nobody can read (cut short, or of an earlier release) is taken over once it is a minute old.
//
// Taking over is serialised by a breaker mutex, `<lock>.break`, created exclusively: under it the lock is read again and
// removed only if it is still the very lock judged stale (content, mtime and inode), so a fresh lock taken meanwhile by
// another process is never removed or moved. A `.break` left by a breaker that died is judged like a lock.
import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { thisWriter, writerGone } from '../keys/claims.js';
import { AuditError } from './audit-error.js';

interface LockOwner {
  /** claims.ts thisWriter(): "<boot id and pid namespace hash>-<pid>-<start ticks>", or "x<random>" without /proc. */
  writer: string;
  pid: number;
  host: string;
  startedAt: string;
}

/** A lock file as read: its exact content, what it says, and which file it is (a lock made again is another inode). */
export interface LockSeen {
  path: string;
  raw: string;
  owner: LockOwner | undefined;
  mtimeMs: number;
  ino: number;
}

/** How often a holder touches its lock. */
export const LOCK_BEAT_MS = 1_000;
/** A lock of a holder out of sight, seen unchanged this long: its holder stopped (four heartbeats missed). */
export const LOCK_SILENT_MS = 5_000;
/** A lock nobody can read is taken as stale once it is this old. */
const UNREADABLE_STALE_MS = 60_000;

/** This process's lock: held until released; touched every LOCK_BEAT_MS meanwhile. */
export class TrailLock {
  private readonly timer: NodeJS.Timeout;
  private released = false;

  private constructor(
    readonly path: string,
    private readonly mine: string,
    onLost: (() => void) | undefined,
  ) {
    this.timer = setInterval(() => {
      if (this.held()) touch(this.path);
      else {
        // Taken over: this process was silent for LOCK_SILENT_MS (stopped, then resumed). Say so once.
        clearInterval(this.timer);
        if (!this.released) onLost?.();
      }
    }, LOCK_BEAT_MS);
    this.timer.unref();
  }

  /**
   * Take `<file>.lock`: at once when it is free or its holder is gone; otherwise wait for it, at most `waitMs`, then
   * fail with AuditTrailLocked (naming the holder). `onLost`: the lock was taken over while held.
   */
  static async acquire(file: string, opts: { waitMs?: number; onLost?: () => void } = {}): Promise<TrailLock> {
    const lock = `${file}.lock`;
    const mine = ownerText();
    const deadline = Date.now() + (opts.waitMs ?? 10_000);
    const watch = new LockWatch();
    for (;;) {
      if (tryCreate(lock, mine)) return new TrailLock(lock, mine, opts.onLost);
      const seen = readLock(lock);
      if (!seen) continue; // released meanwhile
      const verdict = watch.verdict(seen);
      if ((verdict === 'gone' || verdict === 'silent') && breakStaleLock(seen, watch)) continue;
      if (Date.now() >= deadline) {
        const h = seen.owner;
        const who = h ? `process ${h.pid} on ${h.host}, since ${h.startedAt}` : 'another process';
        throw new AuditError('AuditTrailLocked', `the audit trail ${file} is locked by ${who} (${lock}; remove it only if that process is gone)`);
      }
      await sleep(25);
    }
  }

  /** The lock file still holds this process's lock. */
  held(): boolean {
    return readRaw(this.path) === this.mine;
  }

  /** Remove the lock if it is still ours (one taken over from us is not ours to remove). */
  release(): void {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    if (this.held()) unlinkQuiet(this.path);
  }
}

/** Run `fn` holding `<file>.lock`. */
export async function withTrailLock<T>(file: string, fn: () => Promise<T>, waitMs = 10_000): Promise<T> {
  const lock = await TrailLock.acquire(file, { waitMs });
  try {
    return await fn();
  } finally {
    lock.release();
  }
}

/**
 * One observer's judgement of the locks it meets over the attempts of one acquisition: 'gone' (certain: the kernel says
 * so, or an unreadable lock a minute old), 'live' (a holder in this pid namespace that runs: never taken over),
 * 'silent' (out of sight, and unchanged for LOCK_SILENT_MS on this clock), 'wait' (not known yet).
 */
export class LockWatch {
  private readonly seen = new Map<string, { key: string; since: number }>();

  verdict(l: LockSeen): 'gone' | 'live' | 'silent' | 'wait' {
    if (!l.owner) return Date.now() - l.mtimeMs > UNREADABLE_STALE_MS ? 'gone' : 'wait';
    if (writerGone(l.owner.writer) === 'gone') return 'gone';
    if (inThisPidNamespace(l.owner.writer)) return 'live';
    const key = `${l.ino}:${l.mtimeMs}:${l.raw}`;
    const now = performance.now();
    const s = this.seen.get(l.path);
    if (!s || s.key !== key) {
      this.seen.set(l.path, { key, since: now });
      return 'wait';
    }
    return now - s.since >= LOCK_SILENT_MS ? 'silent' : 'wait';
  }
}

/**
 * Remove the lock `stale` was read from, if it is still that very lock, under the breaker mutex. False when another
 * breaker is at work (or the lock changed): the caller tries again later.
 */
export function breakStaleLock(stale: LockSeen, watch: LockWatch = new LockWatch()): boolean {
  const mutex = `${stale.path}.break`;
  const mine = ownerText();
  if (!tryCreate(mutex, mine)) {
    // Another breaker holds it for a moment, or died holding it: a dead or silent one's is removed (if unchanged).
    const held = readLock(mutex);
    if (held) {
      const v = watch.verdict(held);
      if (v === 'gone' || v === 'silent') removeIfUnchanged(held);
    }
    return false;
  }
  try {
    return removeIfUnchanged(stale);
  } finally {
    if (readRaw(mutex) === mine) unlinkQuiet(mutex);
  }
}

/** The lock file at `path` as it is now, or undefined when there is none. */
export function readLock(path: string): LockSeen | undefined {
  try {
    const st = statSync(path);
    const raw = readFileSync(path, 'utf8');
    return { path, raw, owner: parseOwner(raw), mtimeMs: st.mtimeMs, ino: st.ino };
  } catch {
    return undefined;
  }
}

function removeIfUnchanged(seen: LockSeen): boolean {
  const now = readLock(seen.path);
  if (!now || now.raw !== seen.raw || now.mtimeMs !== seen.mtimeMs || now.ino !== seen.ino) return false;
  unlinkQuiet(seen.path);
  return true;
}

/** A writer named with this process's boot id and pid namespace: the kernel can answer for it. */
function inThisPidNamespace(writer: string): boolean {
  const host = (w: string) => /^([0-9a-f]{12})-/.exec(w)?.[1];
  const mine = host(thisWriter());
  return mine !== undefined && host(writer) === mine;
}

/** This process as a lock's holder; a nonce keeps two locks of one process apart. */
function ownerText(): string {
  const owner: LockOwner & { nonce: string } = { writer: thisWriter(), pid: process.pid, host: hostname(), startedAt: new Date().toISOString(), nonce: randomBytes(6).toString('hex') };
  return JSON.stringify(owner);
}

/** Create the file with its content in one step: link a complete file into place (fails when the file exists). */
function tryCreate(path: string, content: string): boolean {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, content, { mode: 0o640 });
  try {
    linkSync(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return false;
  } finally {
    unlinkQuiet(tmp);
  }
}

function touch(path: string): void {
  try {
    const now = new Date();
    utimesSync(path, now, now);
  } catch {
    // removed meanwhile: the next beat finds it is no longer held
  }
}

function readRaw(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** The owner a lock names; undefined for one cut short or of an earlier release (no writer). */
function parseOwner(raw: string): LockOwner | undefined {
  try {
    const o = JSON.parse(raw) as Partial<LockOwner>;
    return typeof o.writer === 'string' && typeof o.pid === 'number' && typeof o.host === 'string' && typeof o.startedAt === 'string'
      ? { writer: o.writer, pid: o.pid, host: o.host, startedAt: o.startedAt }
      : undefined;
  } catch {
    return undefined;
  }
}

function unlinkQuiet(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // already gone
  }
}
