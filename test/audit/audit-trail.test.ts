// The audit trail against a real token: a real trail is written (with checkpoints MACed in the HSM and a file
// rotation), then copies are edited, cut, reordered, forged; `verifyTrail` must catch each and name the line.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditMacChecker, auditSigner, DEFAULT_AUDIT_KEY_LABEL, findAuditKeys } from '../../src/audit/audit-key.js';
import { lineHash } from '../../src/audit/audit-record.js';
import { AuditAnchors } from '../../src/audit/audit-anchor.js';
import { AuditTrail } from '../../src/audit/audit-trail.js';
import { readAnchors, verifyTrail as verifyWith, type MacCheck, type VerifyOptions } from '../../src/audit/audit-verify.js';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { createTestToken, type TestToken, TOKEN_FACTS } from '../helpers/test-token.js';
import { openTestHsm } from '../helpers/test-hsm.js';

let token: TestToken;
let hsm: HsmConnection;
let check: MacCheck;
/** Verify with the configured key label (the default). */
const verifyTrail = (files: string[], mac: MacCheck, opts: Partial<VerifyOptions> = {}) => verifyWith(files, mac, { keyLabel: DEFAULT_AUDIT_KEY_LABEL, ...opts });
let dir: string;
/** The trail's files, oldest first, and the lines of the current file. */
let files: string[];
/** The "audit checkpoint" log lines the writers emitted, as a process log holds them. */
let logFile: string;

const entry = (i: number) => ({
  source: 'xks' as const,
  who: 'BETWEEN2TENAND3TENCHARACTERS',
  awsPrincipalArn: `arn:aws:iam::123456789012:user/u${i % 3}`,
  kmsKeyArn: 'arn:aws:kms:us-east-1:123456789012:key/abcd',
  kmsOperation: 'Encrypt',
  kmsRequestId: `req-${i}`,
  operation: 'Encrypt',
  keyId: 'foo',
  keyVersion: 1,
  outcome: 'ok' as const,
});

beforeAll(async () => {
  token = createTestToken('audit-token');
  hsm = await openTestHsm(token);
  check = auditMacChecker(hsm);
  dir = mkdtempSync(join(tmpdir(), 'xks-audit-'));
  const file = join(dir, 'audit-test.jsonl');
  const signer = await auditSigner(hsm);
  const anchors = new AuditAnchors(hsm);
  const logged: string[] = [];
  const onCheckpoint = (c: { file: string; seq: number; hash: string }) => logged.push(JSON.stringify({ level: 30, ...c, msg: 'audit checkpoint' }));
  // Small checkpoint interval and file size: the trail gets several checkpoints and one rotation.
  const trail = await AuditTrail.open({ file, signer, anchors, checkpointEvery: 10, checkpointIntervalMs: 60_000, maxFileBytes: 8_000, onCheckpoint });
  for (let i = 0; i < 45; i++) {
    trail.append(entry(i));
    if (i % 7 === 0) await new Promise((r) => setTimeout(r, 1));
  }
  await trail.close();
  // A restart continues the same chain in the same file.
  const again = await AuditTrail.open({ file, signer, anchors, checkpointEvery: 10, checkpointIntervalMs: 60_000, maxFileBytes: 1_000_000, onCheckpoint });
  for (let i = 45; i < 52; i++) again.append(entry(i));
  await again.close();
  logFile = join(dir, 'proxy.log');
  writeFileSync(logFile, ['{"level":30,"msg":"xks request"}', ...logged, 'not json'].join('\n') + '\n');
  files = readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort((a, b) => (a === 'audit-test.jsonl' ? 1 : b === 'audit-test.jsonl' ? -1 : a.localeCompare(b)))
    .map((f) => join(dir, f));
});

afterAll(() => {
  hsm?.close();
  token?.cleanup();
});

/** A copy of the trail with the current (last) file's lines changed by `edit`. */
function tampered(edit: (lines: string[]) => string[] | string): string[] {
  const copyDir = mkdtempSync(join(tmpdir(), 'xks-audit-copy-'));
  return files.map((f, i) => {
    const target = join(copyDir, f.split('/').pop()!);
    const text = readFileSync(f, 'utf8');
    if (i < files.length - 1) writeFileSync(target, text);
    else {
      const out = edit(text.split('\n').slice(0, -1));
      writeFileSync(target, typeof out === 'string' ? out : out.map((l) => l + '\n').join(''));
    }
    return target;
  });
}

function lastFileLines(): string[] {
  return readFileSync(files[files.length - 1]!, 'utf8').split('\n').slice(0, -1);
}

describe('a trail as written', () => {
  it('rotated into more than one file, and every line carries the hash of the one before', () => {
    expect(files.length).toBeGreaterThan(1);
    const lines = files.flatMap((f) => readFileSync(f, 'utf8').split('\n').slice(0, -1));
    expect(lines.length).toBeGreaterThan(52); // 52 events plus checkpoints
    for (let i = 1; i < lines.length; i++) expect(JSON.parse(lines[i]!).prev).toBe(lineHash(lines[i - 1]!));
    expect(JSON.parse(lines[0]!)).toMatchObject({ seq: 1, type: 'event', prev: '0'.repeat(64), kmsRequestId: 'req-0' });
    expect(lines.filter((l) => JSON.parse(l).type === 'checkpoint').length).toBeGreaterThanOrEqual(5);
  });

  it('verifies, in any file order', async () => {
    const r = await verifyTrail([...files].reverse(), check);
    expect(r.problem).toBeUndefined();
    expect(r.ok).toBe(true);
    expect(r.chains).toHaveLength(1);
    expect(r.chains[0]).toMatchObject({ firstSeq: 1, segments: 0, notVouched: [] });
    expect(r.chains[0]!.startsAfter).toBeUndefined();
    expect([...r.chains[0]!.files].sort()).toEqual([...files].sort());
  });

  it('made its MAC key in the HSM: sensitive and not extractable', async () => {
    const keys = await hsm.findSecretKeys({ label: DEFAULT_AUDIT_KEY_LABEL });
    expect(keys).toHaveLength(1);
    expect(keys[0]!.attrs).toMatchObject({ sensitive: true, extractable: false });
    // Where the token reports them faithfully (its profile), the evidence it was generated there; absent otherwise.
    expect([keys[0]!.attrs.local, keys[0]!.attrs.neverExtractable]).toEqual(TOKEN_FACTS.localIsEvidence ? [true, true] : [undefined, undefined]);
    expect(await findAuditKeys(hsm, DEFAULT_AUDIT_KEY_LABEL)).toHaveLength(1);
  });

  it('holds no secret: the request fields only', () => {
    const text = files.map((f) => readFileSync(f, 'utf8')).join('');
    expect(text).not.toContain(token.userPin);
    expect(text).not.toMatch(/plaintext|secret|"pin"/i);
  });
});

describe('tampering is caught at the first line it touches', () => {
  it('an edited field', async () => {
    const r = await verifyTrail(
      tampered((l) => l.map((x, i) => (i === 3 ? x.replace('"outcome":"ok"', '"outcome":"error"') : x))),
      check,
    );
    expect(r.ok).toBe(false);
    // The edited line's own prev still matches; the next one no longer follows it.
    expect(r.problem).toMatchObject({ line: 5 });
    expect(r.problem!.reason).toMatch(/edited/);
  });

  it('a deleted line', async () => {
    const r = await verifyTrail(tampered((l) => l.filter((_, i) => i !== 2)), check);
    expect(r.problem).toMatchObject({ line: 3 });
    expect(r.problem!.reason).toMatch(/deleted/);
  });

  it('two lines swapped', async () => {
    const r = await verifyTrail(tampered((l) => l.map((x, i) => (i === 2 ? l[3]! : i === 3 ? l[2]! : x))), check);
    expect(r.problem).toMatchObject({ line: 3 });
    expect(r.problem!.reason).toMatch(/deleted|order|edited/);
  });

  it('a line cut short (truncated file)', async () => {
    const r = await verifyTrail(tampered((l) => l.slice(0, 4).join('\n') + '\n' + l[4]!.slice(0, 30)), check);
    expect(r.problem).toMatchObject({ line: 5 });
    expect(r.problem!.reason).toMatch(/cut short|truncated/);
  });

  it('the last lines removed, final checkpoint included', async () => {
    const lines = lastFileLines();
    const r = await verifyTrail(tampered((l) => l.slice(0, lines.length - 2)), check);
    expect(r.problem).toMatchObject({ line: lines.length - 2 });
    expect(r.problem!.reason).toMatch(/without a checkpoint/);
    // ... which a trail still being written may accept explicitly: the lines after its last checkpoint are not evidence.
    const copy = tampered((l) => l.slice(0, lines.length - 2));
    const open = await verifyTrail(copy, check, { allowUnsealedTail: true });
    expect(open.ok).toBe(true);
    const lastSeal = lines.slice(0, lines.length - 2).map((l) => JSON.parse(l).type).lastIndexOf('checkpoint');
    expect(open.chains[0]!.notVouched).toEqual([
      expect.objectContaining({ file: copy.at(-1), fromLine: lastSeal + 2, toLine: lines.length - 2, lines: lines.length - 3 - lastSeal, reason: expect.stringMatching(/not sealed yet/) }),
    ]);
  });

  it('--allow-unsealed-tail still needs a checkpoint: a chain of lines with none (a fabricated file) fails', async () => {
    const fabricated = join(mkdtempSync(join(tmpdir(), 'xks-audit-fabricated-')), 'audit-test.jsonl');
    let prev = '0'.repeat(64);
    const out: string[] = [];
    for (let i = 0; i < 3; i++) {
      const line = JSON.stringify({ seq: i + 1, time: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(), prev, type: 'event', ...entry(i) });
      out.push(line);
      prev = lineHash(line);
    }
    writeFileSync(fabricated, out.map((l) => l + '\n').join(''));
    const r = await verifyTrail([fabricated], check, { allowUnsealedTail: true });
    expect(r.ok).toBe(false);
    expect(r.problem).toMatchObject({ file: fabricated, line: 3, reason: expect.stringMatching(/no line of this chain is sealed by an HSM checkpoint/) });
  });

  it('a forged line with the whole chain recomputed after it: the next checkpoint MAC fails', async () => {
    const r = await verifyTrail(
      tampered((l) => {
        const out: string[] = [];
        let prev: string | undefined;
        let seq = 0;
        l.forEach((x, i) => {
          const obj = JSON.parse(x);
          if (i === 2) {
            // Insert a forged event, then re-chain and renumber everything after it.
            const forged = { ...obj, kmsRequestId: 'forged', prev };
            out.push(JSON.stringify(forged));
            prev = lineHash(out[out.length - 1]!);
            seq = forged.seq;
          }
          if (prev !== undefined && i >= 2) {
            obj.prev = prev;
            obj.seq = ++seq;
          }
          out.push(JSON.stringify(obj));
          prev = lineHash(out[out.length - 1]!);
          seq = obj.seq;
        });
        return out;
      }),
      check,
    );
    expect(r.ok).toBe(false);
    expect(r.problem!.reason).toMatch(/MAC does not verify/);
    const firstCheckpointAfter = lastFileLines().findIndex((x, i) => i >= 2 && JSON.parse(x).type === 'checkpoint');
    expect(r.problem!.line).toBe(firstCheckpointAfter + 2); // one line inserted before it, 1-based
  });

  it('a cut right after a checkpoint: caught only against the checkpoints the process logged', async () => {
    const lines = lastFileLines();
    // The last checkpoint before the final one: everything after it removed, so the trail still ends sealed.
    const checkpoints = lines.map((l, i) => (JSON.parse(l).type === 'checkpoint' ? i : -1)).filter((i) => i >= 0);
    const cutAt = checkpoints[checkpoints.length - 2]!;
    const copy = tampered((l) => l.slice(0, cutAt + 1));
    expect((await verifyTrail(copy, check)).ok).toBe(true);
    const anchors = readAnchors([logFile]);
    expect(anchors.length).toBeGreaterThanOrEqual(5);
    expect((await verifyTrail(files, check, { anchors })).ok).toBe(true);
    const r = await verifyTrail(copy, check, { anchors });
    expect(r.ok).toBe(false);
    expect(r.problem!.reason).toMatch(/not in the trail: it was cut after this line/);
    expect(r.problem!.line).toBe(cutAt + 1);
  });

  it('a missing oldest or middle file, or the oldest lines: the chain does not start at genesis', async () => {
    expect(files.length).toBeGreaterThan(1);
    const newest = await verifyTrail([files[files.length - 1]!], check);
    expect(newest.ok).toBe(false);
    expect(newest.problem!.reason).toMatch(/starts at seq \d+, after a line that is not in the files given.*--from/);
    if (files.length >= 3) {
      const r = await verifyTrail([files[0]!, ...files.slice(2)], check);
      expect(r.ok).toBe(false);
      expect(r.problem!.reason).toMatch(/after a line that is not in the files given/);
    }
    // The oldest lines of the first file deleted.
    const copyDir = mkdtempSync(join(tmpdir(), 'xks-audit-copy-'));
    const copies = files.map((f, i) => {
      const target = join(copyDir, f.split('/').pop()!);
      const text = readFileSync(f, 'utf8');
      writeFileSync(target, i === 0 ? text.split('\n').slice(3).join('\n') : text);
      return target;
    });
    const cut = await verifyTrail(copies, check);
    expect(cut.ok).toBe(false);
    expect(cut.problem).toMatchObject({ file: copies[0], line: 1 });
  });

  it('the newest file missing (rotated files given alone): verified, but incomplete by the HSM anchor of their trail', async () => {
    const hsmAnchors = await new AuditAnchors(hsm).list();
    const all = await verifyTrail(files, check, { hsmAnchors });
    expect(all.ok).toBe(true);
    expect(all.anchoredTrails).toEqual([files.at(-1)]);
    expect(all.incomplete ?? []).toEqual([]);
    const older = await verifyTrail(files.slice(0, -1), check, { hsmAnchors });
    expect(older.problem).toBeUndefined();
    expect(older.ok).toBe(true);
    const newest = JSON.parse(lastFileLines().at(-1)!) as { seq: number };
    expect(older.incomplete).toEqual([{ trail: files.at(-1), anchoredSeq: newest.seq, lastSeq: older.chains[0]!.lastSeq }]);
    expect(older.anchoredTrails).toEqual([]);
  });

  it('retention: the files after a resume point verify with --from; the resume point is the last line of the files before', async () => {
    const older = await verifyTrail(files.slice(0, -1), check);
    expect(older.ok).toBe(true);
    const point = older.chains[0]!.resumePoint;
    const lastOfOlder = readFileSync(files[files.length - 2]!, 'utf8').split('\n').slice(0, -1).at(-1)!;
    expect(point).toEqual({ seq: JSON.parse(lastOfOlder).seq, hash: lineHash(lastOfOlder) });
    const r = await verifyTrail([files[files.length - 1]!], check, { from: [point] });
    expect(r.problem).toBeUndefined();
    expect(r.chains[0]!.startsAfter).toEqual(point);
    // A resume point that is not where the chain begins does not help.
    expect((await verifyTrail([files[files.length - 1]!], check, { from: [{ ...point, seq: point.seq - 1 }] })).ok).toBe(false);
  });

  it('time going backwards', async () => {
    const r = await verifyTrail(
      tampered((l) => {
        // Line 4 dated a minute before line 3, and the chain rebuilt from there so that only the time is wrong.
        const out: string[] = [];
        l.forEach((x, i) => {
          const obj = JSON.parse(x);
          if (i > 0) obj.prev = lineHash(out[i - 1]!);
          if (i === 3) obj.time = new Date(Date.parse(JSON.parse(l[2]!).time) - 60_000).toISOString();
          out.push(i === 0 ? x : JSON.stringify(obj));
        });
        return out;
      }),
      check,
    );
    expect(r.ok).toBe(false);
    expect(r.problem).toMatchObject({ line: 4 });
    expect(r.problem!.reason).toMatch(/time goes backwards/);
  });

  it('a checkpoint made with an HSM key other than the configured one', async () => {
    const other = await auditSigner(hsm, 'another-hmac-key');
    // A chain of its own, sealed with another key that is in the same HSM: its MAC verifies, its key is not ours.
    const file = join(mkdtempSync(join(tmpdir(), 'xks-audit-other-')), 'audit-other.jsonl');
    const t = await AuditTrail.open({ file, signer: other, anchors: new AuditAnchors(hsm), checkpointEvery: 3, checkpointIntervalMs: 60_000, maxFileBytes: 1_000_000 });
    for (let i = 0; i < 3; i++) t.append(entry(i));
    await t.close();
    expect(JSON.parse(readFileSync(file, 'utf8').split('\n').at(-2)!)).toMatchObject({ type: 'checkpoint', keyLabel: 'another-hmac-key' });
    expect((await verifyTrail([file], check, { keyLabel: 'another-hmac-key' })).ok).toBe(true);
    const r = await verifyTrail([file], check);
    expect(r.ok).toBe(false);
    expect(r.problem!.reason).toMatch(/made with the HSM key "another-hmac-key", not the configured audit key "xks-audit-hmac"/);
  });

  it('a checkpoint whose MAC is not the HSM key\'s', async () => {
    const r = await verifyTrail(
      tampered((l) => l.map((x) => (JSON.parse(x).type === 'checkpoint' ? x.replace(/"mac":"([0-9a-f])/, (_m, c) => `"mac":"${c === '0' ? '1' : '0'}`) : x))),
      check,
    );
    expect(r.ok).toBe(false);
    expect(r.problem!.reason).toMatch(/MAC does not verify/);
  });
});
