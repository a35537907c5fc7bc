// How a writer opens an existing trail, on a real token: it continues only from a checkpoint the HSM vouches for
// (its anchor, or its MAC), and otherwise begins a new MACed segment that says what it does not vouch for and why.
// After each case the whole trail is verified with the HSM anchors, as `xks audit verify` does.
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ANCHOR_LABEL, AuditAnchors } from '../../src/audit/audit-anchor.js';
import { auditMacChecker, auditSigner, DEFAULT_AUDIT_KEY_LABEL } from '../../src/audit/audit-key.js';
import { anchorHash, lineHash, trailId } from '../../src/audit/audit-record.js';
import { newestRotated } from '../../src/audit/audit-resume.js';
import { AuditTrail, type AuditSigner } from '../../src/audit/audit-trail.js';
import { verifyTrail } from '../../src/audit/audit-verify.js';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { openTestHsm } from '../helpers/test-hsm.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';

let token: TestToken;
let hsm: HsmConnection;
let signer: AuditSigner;
let anchors: AuditAnchors;

beforeAll(async () => {
  token = createTestToken('audit-resume');
  hsm = await openTestHsm(token);
  signer = await auditSigner(hsm);
  anchors = new AuditAnchors(hsm);
});
afterAll(() => {
  hsm?.close();
  token?.cleanup();
});

const entry = (i: number) => ({ source: 'cli' as const, operation: 'keys rotate', keyId: `k${i}`, outcome: 'ok' as const });

async function write(file: string, from: number, n: number, maxFileBytes = 10_000_000): Promise<void> {
  const t = await AuditTrail.open({ file, signer, anchors, checkpointEvery: 3, checkpointIntervalMs: 60_000, maxFileBytes });
  for (let i = from; i < from + n; i++) t.append(entry(i));
  await t.close();
}
const lines = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean);
const parsed = (file: string) => lines(file).map((l) => JSON.parse(l));
const filesOf = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.jsonl')).map((f) => join(dir, f));
const verify = async (dir: string) => verifyTrail(filesOf(dir), auditMacChecker(hsm), { keyLabel: DEFAULT_AUDIT_KEY_LABEL, hsmAnchors: await anchors.list() });
const newTrail = () => join(mkdtempSync(join(tmpdir(), 'xks-audit-resume-')), 'audit-h-cli.jsonl');

it('continues a trail that ends with its anchored checkpoint: no segment, one chain from genesis', async () => {
  const file = newTrail();
  await write(file, 0, 4);
  await write(file, 4, 4);
  expect(parsed(file).some((l) => l.type === 'segment')).toBe(false);
  const a = await anchors.latest(trailId(file));
  expect(a).toEqual({ trail: trailId(file), seq: parsed(file).at(-1).seq, hash: anchorHash(lineHash(lines(file).at(-1)!)) });
  const r = await verify(file.replace(/\/[^/]+$/, ''));
  expect(r.problem).toBeUndefined();
  expect(r.chains[0]).toMatchObject({ firstSeq: 1, segments: 0, notVouched: [] });
  expect(r.anchoredTrails).toEqual([file]);
  // One anchor per trail is kept.
  const objects = (await hsm.findSecretKeys({ label: ANCHOR_LABEL })).filter((k) => k.id.toString().includes(`t=${trailId(file)};`));
  expect(objects).toHaveLength(1);
});

it('continues across a rotation (the current file empty, the chain ending in the rotated one)', async () => {
  const file = newTrail();
  await write(file, 0, 12, 600);
  expect(filesOf(file.replace(/\/[^/]+$/, '')).length).toBeGreaterThan(1);
  await write(file, 12, 2, 600);
  const r = await verify(file.replace(/\/[^/]+$/, ''));
  expect(r.problem, JSON.stringify(r.problem) + filesOf(file.replace(/\/[^/]+$/, '')).map((f) => f + '\n' + readFileSync(f, 'utf8')).join('\n')).toBeUndefined();
  expect(r.chains).toHaveLength(1);
  expect(r.chains[0]!.segments).toBe(0);
});

it('lines after the last checkpoint (a crash): a segment, and the lines are reported as not evidence', async () => {
  const file = newTrail();
  await write(file, 0, 3);
  const sealed = lines(file);
  const last = JSON.parse(sealed.at(-1)!);
  // What a crash leaves: an event written, its checkpoint never made.
  const orphan = JSON.stringify({ seq: last.seq + 1, time: new Date().toISOString(), prev: lineHash(sealed.at(-1)!), type: 'event', ...entry(99) });
  appendFileSync(file, orphan + '\n');
  await write(file, 3, 2);
  const segment = parsed(file)[0];
  expect(segment).toMatchObject({ type: 'segment', seq: last.seq + 2, after: { seq: last.seq }, notVouched: { fromSeq: last.seq + 1, toSeq: last.seq + 1 } });
  expect(segment.reason).toMatch(/1 line\(s\) after the last checkpoint were never sealed/);
  const r = await verify(file.replace(/\/[^/]+$/, ''));
  expect(r.problem).toBeUndefined();
  expect(r.chains).toHaveLength(1);
  expect(r.chains[0]!.notVouched).toEqual([
    expect.objectContaining({ file: expect.stringMatching(/-unsealed\.jsonl$/), fromLine: sealed.length + 1, toLine: sealed.length + 1, lines: 1 }),
  ]);
});

it('a line cut short: the file is kept as evidence (-cut), a segment continues from the last checkpoint', async () => {
  const file = newTrail();
  await write(file, 0, 3);
  appendFileSync(file, '{"seq":5,"time":"20');
  await write(file, 3, 1);
  expect(filesOf(file.replace(/\/[^/]+$/, '')).some((f) => f.endsWith('-cut.jsonl'))).toBe(true);
  expect(parsed(file)[0]).toMatchObject({ type: 'segment', reason: expect.stringMatching(/cut short/) });
  const r = await verify(file.replace(/\/[^/]+$/, ''));
  expect(r.problem).toBeUndefined();
  expect(r.chains[0]!.notVouched[0]).toMatchObject({ file: expect.stringMatching(/-cut\.jsonl$/), lines: 1 });
});

it('a checkpoint made but not yet anchored (a crash between the two): continued, and anchored then', async () => {
  const file = newTrail();
  await write(file, 0, 3);
  const first = lines(file).at(-1)!;
  await write(file, 3, 3);
  // The anchor as a crash before the second checkpoint's anchor would have left it.
  const trail = trailId(file);
  for (const k of await hsm.findSecretKeys({ label: ANCHOR_LABEL })) if (k.id.toString().includes(`t=${trail};`)) await hsm.destroyObject(k.handle);
  await anchors.record({ trail, seq: JSON.parse(first).seq, hash: anchorHash(lineHash(first)) });
  await write(file, 6, 1);
  expect(parsed(file).some((l) => l.type === 'segment')).toBe(false);
  expect((await anchors.latest(trail))!.seq).toBe(parsed(file).at(-1).seq);
  expect((await verify(file.replace(/\/[^/]+$/, ''))).problem).toBeUndefined();
});

it('a last checkpoint rewritten (not the anchored one): a segment; verify still accepts the chain up to the anchor', async () => {
  const file = newTrail();
  await write(file, 0, 3);
  const all = lines(file);
  const c = JSON.parse(all.at(-1)!);
  c.mac = '0'.repeat(64);
  writeFileSync(file, [...all.slice(0, -1), JSON.stringify(c)].map((l) => l + '\n').join(''));
  await write(file, 3, 1);
  expect(parsed(file)[0], readdirSync(file.replace(/\/[^/]+$/, '')).join() + readFileSync(file, 'utf8')).toMatchObject({ type: 'segment', reason: expect.stringMatching(/is not the one the HSM anchor records|does not verify/) });
});

it('takes the newest of two files rotated in one millisecond (`...Z-1.jsonl` after `...Z.jsonl`) as the newest', () => {
  const dir = mkdtempSync(join(tmpdir(), 'xks-audit-names-'));
  for (const n of ['audit-h-cli.2026-11-22T21-30-00-000Z.jsonl', 'audit-h-cli.2026-11-22T21-30-00-000Z-1.jsonl', 'audit-h-cli.2026-11-22T21-29-59-999Z.jsonl', 'audit-h-cli.jsonl']) {
    writeFileSync(join(dir, n), '');
  }
  expect(newestRotated(join(dir, 'audit-h-cli.jsonl'))).toBe(join(dir, 'audit-h-cli.2026-11-22T21-30-00-000Z-1.jsonl'));
});
