// The lock of a trail shared by short-lived writers (every key-changing `xks` command on a host writes the CLI trail).
// The lock file says who holds it: pid, host and start time. A lock whose process is gone on this host (a command
// killed while it held the lock) is taken over at once; any other is waited for, at most `waitMs`, then the command
// fails with a name (AuditTrailLocked) before it changes anything.
import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { AuditError } from './audit-error.js';

interface LockOwner {
  pid: number;
  host: string;
  startedAt: string;
}

/** A lock file of an earlier release (empty) or one cut short is taken as stale once it is this old. */
const UNREADABLE_STALE_MS = 60_000;

/** Run `fn` holding `<file>.lock`. */
export async function withTrailLock<T>(file: string, fn: () => Promise<T>, waitMs = 10_000): Promise<T> {
  const lock = `${file}.lock`;
  const me: LockOwner = { pid: process.pid, host: hostname(), startedAt: new Date().toISOString() };
  const mine = JSON.stringify(me);
  const deadline = Date.now() + waitMs;
  let holder: LockOwner | undefined;
  for (;;) {
    if (tryCreate(lock, mine)) break;
    holder = readOwner(lock);
    if (isStale(lock, holder)) {
      takeOver(lock, holder);
      continue;
    }
    if (Date.now() >= deadline) {
      const who = holder ? `process ${holder.pid} on ${holder.host}, since ${holder.startedAt}` : 'another process';
      throw new AuditError('AuditTrailLocked', `the audit trail ${file} is locked by ${who} (${lock})`);
    }
    await sleep(25);
  }
  try {
    return await fn();
  } finally {
    // Only our own lock: one taken over from us (we were thought dead) is not ours to remove.
    if (readRaw(lock) === mine) unlinkQuiet(lock);
  }
}

/** Create the lock with its content in one step: link a complete file into place (fails when the lock exists). */
function tryCreate(lock: string, content: string): boolean {
  const tmp = `${lock}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, content, { mode: 0o640 });
  try {
    linkSync(tmp, lock);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return false;
  } finally {
    unlinkQuiet(tmp);
  }
}

function isStale(lock: string, holder: LockOwner | undefined): boolean {
  if (!holder) {
    try {
      return Date.now() - statSync(lock).mtimeMs > UNREADABLE_STALE_MS;
    } catch {
      return false; // removed meanwhile: try again
    }
  }
  return holder.host === hostname() && !alive(holder.pid);
}

/**
 * Remove a stale lock without removing a fresh one that replaced it meanwhile: move it aside (atomic), and put it back
 * if what was moved is not the stale lock that was read.
 */
function takeOver(lock: string, stale: LockOwner | undefined): void {
  const aside = `${lock}.stale.${process.pid}.${randomBytes(4).toString('hex')}`;
  try {
    renameSync(lock, aside);
  } catch {
    return; // gone already
  }
  const moved = readOwner(aside);
  const same = stale ? moved?.pid === stale.pid && moved.startedAt === stale.startedAt && moved.host === stale.host : moved === undefined;
  if (!same) {
    try {
      linkSync(aside, lock);
    } catch {
      // another lock exists already: its holder goes first
    }
  }
  unlinkQuiet(aside);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, another user's
  }
}

function readRaw(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function readOwner(file: string): LockOwner | undefined {
  try {
    const o = JSON.parse(readRaw(file) ?? '') as Partial<LockOwner>;
    return typeof o.pid === 'number' && typeof o.host === 'string' && typeof o.startedAt === 'string' ? { pid: o.pid, host: o.host, startedAt: o.startedAt } : undefined;
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
