// An audit trail's lock says who holds it as src/keys/claims.ts names a writer (boot id and pid namespace, pid, start
// time): a holder in this pid namespace that is gone is taken over at once, one that runs never; a holder out of sight
// (another container on a shared volume: the same hostname, a pid that means nothing here) is judged by its heartbeat,
// never by hostname + kill(pid, 0). Taking over goes through a breaker mutex, so a lock taken by a third process after
// one breaker removed a stale lock is never removed by a second breaker. Real processes: a child that exited, one that
// runs; the race is played step by step in this process.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { breakStaleLock, readLock, TrailLock, withTrailLock } from '../../src/audit/trail-lock.js';
import { thisWriter } from '../../src/keys/claims.js';

/** LOCK_SILENT_MS: a lock out of sight that has not changed this long belongs to a holder that stopped. */
const SILENT_MS = 5_000;
const trail = () => join(mkdtempSync(join(tmpdir(), 'xks-lock-')), 'audit-h-cli.jsonl');
const myNamespace = thisWriter().split('-')[0]!;
const otherNamespace = myNamespace === '0123456789ab' ? 'ba9876543210' : '0123456789ab';
/** A writer id in this namespace, as claims.ts makes it: the start time from /proc, so a running pid reads as running. */
function writerOf(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return `${myNamespace}-${pid}-${stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]}`;
}
const lockText = (writer: string, pid: number) => JSON.stringify({ writer, pid, host: hostname(), startedAt: new Date().toISOString() });
const deadPid = () => spawnSync('true').pid!;

it('holds the writer, pid, host and start time while held, and removes it after', async () => {
  const file = trail();
  const seen = await withTrailLock(file, async () => JSON.parse(readFileSync(`${file}.lock`, 'utf8')));
  expect(seen).toMatchObject({ writer: thisWriter(), pid: process.pid, host: hostname(), startedAt: expect.stringMatching(/^\d{4}-/) });
  expect(existsSync(`${file}.lock`)).toBe(false);
});

it('takes over at once a lock whose process is gone', async () => {
  const file = trail();
  const dead = deadPid();
  writeFileSync(`${file}.lock`, lockText(`${myNamespace}-${dead}-1`, dead));
  const t0 = Date.now();
  expect(await withTrailLock(file, async () => 'ran', 5_000)).toBe('ran');
  expect(Date.now() - t0).toBeLessThan(1_000);
});

it('waits for a live holder within the bound, then refuses by name', async () => {
  const file = trail();
  const holder = spawn('sleep', ['30']);
  try {
    await new Promise((r) => holder.once('spawn', r));
    writeFileSync(`${file}.lock`, lockText(writerOf(holder.pid!), holder.pid!));
    const t0 = Date.now();
    await expect(withTrailLock(file, async () => 'ran', 500)).rejects.toMatchObject({
      code: 'AuditTrailLocked',
      message: expect.stringMatching(new RegExp(`locked by process ${holder.pid} on ${hostname()}`)),
    });
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(existsSync(`${file}.lock`)).toBe(true); // a live holder's lock is left alone
  } finally {
    holder.kill();
  }
});

it('never takes over the beating lock of a holder in another pid namespace, though its pid does not exist here', async () => {
  // A command in another container on the same volume: same hostname, and a pid that names no process here.
  const file = trail();
  const absent = deadPid();
  const text = lockText(`${otherNamespace}-${absent}-1`, absent);
  writeFileSync(`${file}.lock`, text);
  const beat = setInterval(() => utimesSync(`${file}.lock`, new Date(), new Date()), 500);
  try {
    await expect(withTrailLock(file, async () => 'ran', SILENT_MS + 2_000)).rejects.toMatchObject({ code: 'AuditTrailLocked' });
  } finally {
    clearInterval(beat);
  }
  expect(readFileSync(`${file}.lock`, 'utf8')).toBe(text);
}, 20_000);

it('takes over the lock of a holder in another pid namespace once it is silent (its pid 1 is not this namespace\'s)', async () => {
  // A CLI in `docker run` is pid 1 in its namespace; here pid 1 runs, which says nothing about that holder.
  const file = trail();
  writeFileSync(`${file}.lock`, lockText(`${otherNamespace}-1-1`, 1));
  const t0 = Date.now();
  expect(await withTrailLock(file, async () => 'ran', SILENT_MS + 4_000)).toBe('ran');
  expect(Date.now() - t0).toBeGreaterThanOrEqual(SILENT_MS - 100);
}, 20_000);

it('takes an unreadable lock (an earlier release, or cut short) as stale only after a minute', async () => {
  const file = trail();
  writeFileSync(`${file}.lock`, '');
  await expect(withTrailLock(file, async () => 'ran', 200)).rejects.toMatchObject({ code: 'AuditTrailLocked' });
  const old = new Date(Date.now() - 120_000);
  utimesSync(`${file}.lock`, old, old);
  expect(await withTrailLock(file, async () => 'ran', 200)).toBe('ran');
});

it('two breakers of one stale lock and a third taker: the second breaker leaves the third\'s lock alone', async () => {
  const file = trail();
  const lock = `${file}.lock`;
  const dead = deadPid();
  writeFileSync(lock, lockText(`${myNamespace}-${dead}-1`, dead));
  // Both breakers read the stale lock, and judge it so, at the same moment.
  const seenByA = readLock(lock)!;
  const seenByB = readLock(lock)!;
  expect(breakStaleLock(seenByA)).toBe(true);
  // A third process takes the free lock before breaker B acts on what it read.
  const third = await TrailLock.acquire(file, { waitMs: 0 });
  expect(breakStaleLock(seenByB)).toBe(false);
  expect(third.held()).toBe(true);
  await expect(withTrailLock(file, async () => 'ran', 200)).rejects.toMatchObject({ code: 'AuditTrailLocked' });
  third.release();
  expect(existsSync(lock)).toBe(false);
  expect(existsSync(`${lock}.break`)).toBe(false);
});

it('a breaker mutex held by a live breaker holds off the others; one left by a breaker that died is removed', async () => {
  const file = trail();
  const lock = `${file}.lock`;
  const dead = deadPid();
  writeFileSync(lock, lockText(`${myNamespace}-${dead}-1`, dead));
  writeFileSync(`${lock}.break`, lockText(thisWriter(), process.pid));
  await expect(withTrailLock(file, async () => 'ran', 300)).rejects.toMatchObject({ code: 'AuditTrailLocked' });
  expect(existsSync(lock)).toBe(true);
  const deadBreaker = deadPid();
  writeFileSync(`${lock}.break`, lockText(`${myNamespace}-${deadBreaker}-1`, deadBreaker));
  expect(await withTrailLock(file, async () => 'ran', 2_000)).toBe('ran');
  expect(existsSync(`${lock}.break`)).toBe(false);
  expect(existsSync(lock)).toBe(false);
});
