// The CLI trail's lock says who holds it; a lock whose process is gone on this host is taken over at once, a live
// holder is waited for within a bound and then refused by name. Real processes: a child that exited, one that runs.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { withTrailLock } from '../../src/audit/trail-lock.js';

const trail = () => join(mkdtempSync(join(tmpdir(), 'xks-lock-')), 'audit-h-cli.jsonl');

it('holds pid, host and start time while held, and removes it after', async () => {
  const file = trail();
  const seen = await withTrailLock(file, async () => JSON.parse(readFileSync(`${file}.lock`, 'utf8')));
  expect(seen).toMatchObject({ pid: process.pid, host: hostname(), startedAt: expect.stringMatching(/^\d{4}-/) });
  expect(existsSync(`${file}.lock`)).toBe(false);
});

it('takes over at once a lock whose process is gone', async () => {
  const file = trail();
  const dead = spawnSync('true').pid!;
  writeFileSync(`${file}.lock`, JSON.stringify({ pid: dead, host: hostname(), startedAt: new Date().toISOString() }));
  const t0 = Date.now();
  expect(await withTrailLock(file, async () => 'ran', 5_000)).toBe('ran');
  expect(Date.now() - t0).toBeLessThan(1_000);
});

it('waits for a live holder within the bound, then refuses by name', async () => {
  const file = trail();
  const holder = spawn('sleep', ['30']);
  try {
    writeFileSync(`${file}.lock`, JSON.stringify({ pid: holder.pid, host: hostname(), startedAt: new Date().toISOString() }));
    const t0 = Date.now();
    await expect(withTrailLock(file, async () => 'ran', 500)).rejects.toMatchObject({
      errorName: 'AuditTrailLocked',
      message: expect.stringMatching(new RegExp(`locked by process ${holder.pid} on ${hostname()}`)),
    });
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(existsSync(`${file}.lock`)).toBe(true); // a live holder's lock is left alone
  } finally {
    holder.kill();
  }
});

it('takes an unreadable lock (an earlier release, or cut short) as stale only after a minute', async () => {
  const file = trail();
  writeFileSync(`${file}.lock`, '');
  await expect(withTrailLock(file, async () => 'ran', 200)).rejects.toMatchObject({ errorName: 'AuditTrailLocked' });
  const old = new Date(Date.now() - 120_000);
  utimesSync(`${file}.lock`, old, old);
  expect(await withTrailLock(file, async () => 'ran', 200)).toBe('ran');
});
