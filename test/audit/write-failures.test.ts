// A write to the trail's file that fails part-way or wholly (a full disk, an I/O error) loses nothing: the bytes not
// written are kept and written by a retry, so the file never keeps a gap or a line cut short, and a checkpoint is
// anchored in the HSM only once its line is written and fsynced. The failure is real: the file size limit of this test
// process (RLIMIT_FSIZE, lowered with prlimit) makes the kernel write part of a chunk, then refuse with EFBIG
// (Node ignores SIGXFSZ), exactly as a full disk does with ENOSPC. A rotation that fails (the current file deleted
// underneath) is reported as a write failure, and the process and the trail go on.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AuditAnchors } from '../../src/audit/audit-anchor.js';
import { auditMacChecker, auditSigner, DEFAULT_AUDIT_KEY_LABEL } from '../../src/audit/audit-key.js';
import { trailId } from '../../src/audit/audit-record.js';
import { AuditTrail } from '../../src/audit/audit-trail.js';
import { verifyTrail } from '../../src/audit/audit-verify.js';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { openTestHsm } from '../helpers/test-hsm.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';

let token: TestToken;
let hsm: HsmConnection;

beforeAll(async () => {
  token = createTestToken('audit-write-failures');
  hsm = await openTestHsm(token);
});
afterAll(() => {
  fileSizeLimit('unlimited');
  hsm?.close();
  token?.cleanup();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** This process's soft limit on the size of a file it writes (the hard limit is untouched, so it can be raised again). */
function fileSizeLimit(bytes: number | 'unlimited'): void {
  execFileSync('prlimit', ['--pid', String(process.pid), `--fsize=${bytes}:`]);
}
async function waitFor(what: string, pred: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  for (const end = Date.now() + ms; !(await pred()); await sleep(50)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }
}
const entry = (i: number) => ({ source: 'xks' as const, operation: 'Encrypt', keyId: 'foo', kmsRequestId: `req-${i}`, outcome: 'ok' as const });

it('keeps the bytes a failed write did not write, writes them on retry, and anchors a checkpoint only once it is on disk', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'xks-audit-write-')), 'audit-write.jsonl');
  const anchors = new AuditAnchors(hsm);
  const trail = resolve(file);
  const errors: string[] = [];
  const t = await AuditTrail.open({
    file,
    signer: await auditSigner(hsm),
    anchors,
    checkpointEvery: 10_000,
    checkpointIntervalMs: 300,
    maxFileBytes: 100_000_000,
    onError: (e) => errors.push(e.message),
  });
  // A trail of some size first, so that the limit below is far above what the token's own files need.
  for (let i = 0; i < 400; i++) t.append(entry(i));
  await t.checkpoint();
  await waitFor('the first anchor', async () => (await anchors.latest(trailId(trail)))?.seq === 401);
  const size = statSync(file).size;

  fileSizeLimit(size + 100); // room for part of one line
  let sealedSeq: number;
  try {
    for (let i = 400; i < 404; i++) t.append(entry(i));
    await sleep(30); // the lines are written at the end of the event-loop turn
    expect(t.status.failing).toMatch(/^write: .*EFBIG/);
    expect(statSync(file).size).toBe(size + 100); // the kernel took part of the chunk: a line is cut for now
    await t.checkpoint(); // its MAC is made in the HSM; its line cannot be written
    sealedSeq = 406;
    await sleep(100);
    // The HSM anchor still names the checkpoint that is on disk, not the one that is not.
    expect((await anchors.latest(trailId(trail)))?.seq).toBe(401);
    expect(t.status.failing).toMatch(/^write: /);
  } finally {
    fileSizeLimit('unlimited');
  }

  // No new line arrives: the retry writes what was kept, then the checkpoint is fsynced and anchored.
  await waitFor('the kept bytes written', () => t.status.failing === undefined);
  await waitFor('the anchor of the checkpoint written late', async () => (await anchors.latest(trailId(trail)))?.seq === sealedSeq);
  await t.close();
  expect(errors.length).toBeGreaterThan(0);

  const lines = readFileSync(file, 'utf8').split('\n');
  expect(lines.pop()).toBe('');
  const parsed = lines.map((l) => JSON.parse(l) as { seq: number; type: string; kmsRequestId?: string });
  expect(parsed.map((l) => l.seq)).toEqual(parsed.map((_, i) => i + 1));
  expect(parsed.filter((l) => l.type === 'event').map((l) => l.kmsRequestId)).toEqual(Array.from({ length: 404 }, (_, i) => `req-${i}`));
  const r = await verifyTrail([file], auditMacChecker(hsm), { keyLabel: DEFAULT_AUDIT_KEY_LABEL, hsmAnchors: await anchors.list() });
  expect(r.problem).toBeUndefined();
  expect(r.ok).toBe(true);
  expect(r.anchoredTrails).toEqual([file]);
});

it('survives a rotation whose file was deleted: the process goes on, the failure is reported, writing continues', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'xks-audit-rotate-'));
  const file = join(dir, 'audit-rotate.jsonl');
  const rejections: unknown[] = [];
  const onRejection = (e: unknown) => rejections.push(e);
  process.on('unhandledRejection', onRejection);
  try {
    const errors: string[] = [];
    const t = await AuditTrail.open({
      file,
      signer: await auditSigner(hsm),
      anchors: new AuditAnchors(hsm),
      checkpointEvery: 4,
      checkpointIntervalMs: 60_000,
      maxFileBytes: 400, // the first checkpoint makes the file due for rotation
      onError: (e) => errors.push(e.message),
    });
    for (let i = 0; i < 2; i++) t.append(entry(i));
    await sleep(20);
    unlinkSync(file); // the current file removed underneath: the rotation's rename finds nothing
    for (let i = 2; i < 4; i++) t.append(entry(i)); // the fourth line starts a checkpoint, which rotates
    await sleep(200);
    expect(rejections).toEqual([]);
    expect(t.status.failures.write).toBeGreaterThan(0);
    expect(errors.join('\n')).toMatch(/was removed/);

    // Writing goes on, in a new file at the current path that continues the chain, sealed and rotated as before.
    for (let i = 4; i < 8; i++) t.append(entry(i));
    await t.close();
    expect(t.status.failing).toBeUndefined();
    expect(t.status.checkpoints).toBe(2);
    expect(existsSync(file)).toBe(true);
    const files = readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort();
    expect(files).toEqual([expect.stringMatching(/^audit-rotate\.\d{4}-.*Z\.jsonl$/), 'audit-rotate.jsonl']);
    expect(readFileSync(file, 'utf8')).toBe(''); // rotated again after the second checkpoint
    const lines = readFileSync(join(dir, files[0]!), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { seq: number; type: string; kmsRequestId?: string });
    expect(lines.map((l) => l.kmsRequestId ?? l.type)).toEqual(['req-4', 'req-5', 'req-6', 'req-7', 'checkpoint']);
    expect(lines[0]!.seq).toBe(6); // after the lost seq 1..5 (four lines and the checkpoint that went with the file)
  } finally {
    process.off('unhandledRejection', onRejection);
  }
});
