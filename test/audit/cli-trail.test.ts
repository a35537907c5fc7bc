// What an auditor can rely on, with the built CLI only (`xks keys ...` writing the shared CLI trail, `xks audit
// verify` reading it) on a real token: a line added by hand is never sealed by the next command; a cut after a
// checkpoint is caught by the HSM anchor without any process log; a chain that does not start at genesis fails unless
// its resume point is named; time must not go backwards; checkpoints must be made with the configured key.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lineHash } from '../../src/audit/audit-record.js';
import { trailFileName } from '../../src/audit/audit-trail.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';

let token: TestToken;
let configFile: string;
let auditDir: string;
let cliTrail: string;

const xks = (args: string[], config = configFile) => runXks(args, { token, configFile: config });
const readLines = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean);
const trailFiles = (dir = auditDir) => readdirSync(dir).filter((f) => f.endsWith('.jsonl')).map((f) => join(dir, f));
const joined = (lines: string[]) => lines.map((l) => l + '\n').join('');

beforeAll(() => {
  ensureBuilt();
  token = createTestToken('audit-cli-trail');
  auditDir = join(token.dir, 'audit');
  configFile = writeTestConfig(token, { audit: { dir: auditDir } });
  cliTrail = join(auditDir, trailFileName('cli'));
}, 120_000);
afterAll(() => token?.cleanup());

describe('the CLI trail', () => {
  it('never seals a line added by hand: the next command starts a segment, and verify reports the line as not evidence', async () => {
    expect((await xks(['keys', 'create', 'forge-target'])).code).toBe(0);
    const before = readLines(cliTrail);
    const last = JSON.parse(before.at(-1)!);
    expect(last.type).toBe('checkpoint');
    // A forger with write access to the directory but no HSM: a well-formed line, chained with plain SHA-256.
    const forged = JSON.stringify({
      seq: last.seq + 1,
      time: new Date().toISOString(),
      prev: lineHash(before.at(-1)!),
      type: 'event',
      source: 'cli',
      who: 'os:someone-else',
      operation: 'keys schedule-deletion',
      keyId: 'forge-target',
      outcome: 'ok',
    });
    writeFileSync(cliTrail, joined([...before, forged]));

    expect((await xks(['keys', 'create', 'after-forgery'])).code).toBe(0);
    // No checkpoint anywhere chains over the forged line.
    for (const f of trailFiles()) {
      const lines = readLines(f);
      const i = lines.indexOf(forged);
      if (i >= 0) expect(lines.slice(i + 1), f).toEqual([]);
      for (const l of lines) expect(JSON.parse(l).prev).not.toBe(lineHash(forged));
    }
    const r = await xks(['audit', 'verify', ...trailFiles()]);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stdout).toMatch(new RegExp(`^NOT EVIDENCE \\S+ lines ${before.length + 1}\\.\\.${before.length + 1} \\(seq ${last.seq + 1}\\.\\.${last.seq + 1}\\): 1 line\\(s\\) after the last checkpoint were never sealed`, 'm'));
    expect(r.stdout).toMatch(/^OK .*1 segment\(s\)/m);
    // The new segment is on the trail, MACed, and says what it continues.
    const segment = trailFiles().map((f) => readLines(f)).find((l) => JSON.parse(l[0]!).type === 'segment')!;
    expect(JSON.parse(segment[0]!)).toMatchObject({ type: 'segment', after: { seq: last.seq, hash: lineHash(before.at(-1)!) }, notVouched: { fromSeq: last.seq + 1, toSeq: last.seq + 1 } });
  });

  it('a cut right after a checkpoint is caught by the HSM anchor, with no process log', async () => {
    expect((await xks(['keys', 'create', 'cut-target'])).code).toBe(0);
    const sealedBefore = readLines(cliTrail);
    expect((await xks(['keys', 'disable', 'cut-target'])).code).toBe(0);
    expect(readLines(cliTrail).length).toBeGreaterThan(sealedBefore.length);
    // The same trail (same file name, so the same anchor) without the last command's lines: still a sealed chain.
    const copyDir = mkdtempSync(join(tmpdir(), 'xks-audit-cut-'));
    for (const f of trailFiles()) copyFileSync(f, join(copyDir, f.split('/').pop()!));
    writeFileSync(join(copyDir, trailFileName('cli')), joined(sealedBefore));
    // Copies elsewhere: the anchors name the directory the trail was written in.
    const unanchored = await xks(['audit', 'verify', ...trailFiles(copyDir)]);
    expect(unanchored.stdout).toMatch(/^NOTE no HSM anchor names these files/m);
    const r = await xks(['audit', 'verify', '--trail-dir', auditDir, ...trailFiles(copyDir)]);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/^FAILED \S+ line \d+: the HSM anchor of this trail records the checkpoint seq \d+ .*not in the files given/m);
    const ok = await xks(['audit', 'verify', ...trailFiles()]);
    expect(ok.code, ok.stdout).toBe(2); // the forged line of the test before is still there, reported
    expect(ok.stdout).toMatch(/^OK the newest checkpoint the HSM anchored is in the files, for the trail of \S+-cli\.jsonl$/m);
  });

  it('a command after such a cut does not extend it: its segment says the anchored lines are missing', async () => {
    const lines = readLines(cliTrail);
    const checkpoints = lines.map((l, i) => (JSON.parse(l).type === 'checkpoint' ? i : -1)).filter((i) => i >= 0);
    writeFileSync(cliTrail, joined(lines.slice(0, checkpoints.at(-2)! + 1)));
    expect((await xks(['keys', 'enable', 'cut-target'])).code).toBe(0);
    const segment = JSON.parse(readLines(cliTrail)[0]!);
    expect(segment).toMatchObject({ type: 'segment', reason: expect.stringMatching(/HSM anchor says seq \d+ was sealed, but the trail ends at seq \d+/) });
    const r = await xks(['audit', 'verify', ...trailFiles()]);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stdout).toMatch(new RegExp(`^MISSING \\(seq ${segment.notVouched.fromSeq}\\.\\.${segment.notVouched.toSeq}\\): the HSM anchor says`, 'm'));
  });
});

describe('a CLI trail whose newest file was deleted', () => {
  it('verifies the rotated files, but exits 2: the HSM anchor of their trail names a checkpoint beyond them', async () => {
    const dir = join(token.dir, 'audit-3');
    const config = writeTestConfig(token, { audit: { dir } }, 'config-3.yaml');
    const current = join(dir, trailFileName('cli'));
    expect((await xks(['keys', 'create', 'n1'], config)).code).toBe(0);
    // A rotation, as the writer makes it past maxFileMB; the next command continues the chain in a new current file.
    const rotated = current.replace(/\.jsonl$/, '.2026-01-01T00-00-00-000Z.jsonl');
    renameSync(current, rotated);
    expect((await xks(['keys', 'create', 'n2'], config)).code).toBe(0);
    expect(readLines(current).length).toBeGreaterThan(0);
    const whole = await xks(['audit', 'verify', rotated, current], config);
    expect(whole.code, whole.stdout + whole.stderr).toBe(0);

    unlinkSync(current);
    const r = await xks(['audit', 'verify', rotated], config);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stdout).toMatch(/^OK /m);
    expect(r.stdout).toMatch(new RegExp(`^INCOMPLETE the trail of ${current.replace(/[.]/g, '\\.')}: the HSM anchor records the checkpoint seq \\d+, beyond the files given \\(they end at seq \\d+\\)`, 'm'));
    expect(r.stdout).not.toMatch(/^NOTE /m);
  });
});

describe('xks audit verify', () => {
  let dir: string;
  let config: string;
  beforeAll(async () => {
    dir = join(token.dir, 'audit-2');
    config = writeTestConfig(token, { audit: { dir } }, 'config-2.yaml');
    for (const id of ['v1', 'v2', 'v3']) expect((await xks(['keys', 'create', id], config)).code).toBe(0);
  });
  const copyOf = (edit: (lines: string[]) => string[]) => {
    const d = mkdtempSync(join(tmpdir(), 'xks-audit-verify-'));
    const file = join(d, 'audit-copy.jsonl');
    writeFileSync(file, joined(edit(readLines(join(dir, trailFileName('cli'))))));
    return file;
  };

  it('accepts the trail as written', async () => {
    const r = await xks(['audit', 'verify', join(dir, trailFileName('cli'))], config);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^OK .*: seq 1\.\.\d+, .*; resume point \d+:[0-9a-f]{64}$/m);
  });

  it('fails when the oldest lines were deleted, unless their resume point is named', async () => {
    const all = readLines(join(dir, trailFileName('cli')));
    const firstCheckpoint = all.findIndex((l) => JSON.parse(l).type === 'checkpoint');
    const file = copyOf((l) => l.slice(firstCheckpoint + 1));
    const r = await xks(['audit', 'verify', file], config);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/^FAILED \S+ line 1: the chain starts at seq \d+, after a line that is not in the files given/m);
    const point = `${JSON.parse(all[firstCheckpoint]!).seq}:${lineHash(all[firstCheckpoint]!)}`;
    const named = await xks(['audit', 'verify', '--from', point, file], config);
    expect(named.code, named.stdout + named.stderr).toBe(0);
    expect(named.stdout).toContain(`after the resume point ${point}`);
  });

  it('--allow-unsealed-tail: lines after the last checkpoint are not evidence (exit 2); a chain with no checkpoint fails', async () => {
    const all = readLines(join(dir, trailFileName('cli')));
    const lastCheckpoint = all.map((l) => JSON.parse(l).type).lastIndexOf('checkpoint', all.length - 2);
    const open = copyOf((l) => l.slice(0, lastCheckpoint + 2));
    const r = await xks(['audit', 'verify', '--allow-unsealed-tail', open], config);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stdout).toMatch(new RegExp(`^NOT EVIDENCE \\S+ lines ${lastCheckpoint + 2}\\.\\.${lastCheckpoint + 2} .*not sealed yet`, 'm'));
    // Only the lines before the first checkpoint: nothing in them is sealed.
    const unsealed = copyOf((l) => l.slice(0, l.findIndex((x) => JSON.parse(x).type === 'checkpoint')));
    const none = await xks(['audit', 'verify', '--allow-unsealed-tail', unsealed], config);
    expect(none.code, none.stdout + none.stderr).toBe(1);
    expect(none.stdout).toMatch(/^FAILED \S+ line \d+: no line of this chain is sealed by an HSM checkpoint/m);
  });

  it('fails on time going backwards, at the line', async () => {
    const file = copyOf((lines) => {
      const out: string[] = [];
      lines.forEach((l, i) => {
        const o = JSON.parse(l);
        if (i === 2) o.time = new Date(Date.parse(JSON.parse(lines[1]!).time) - 3_600_000).toISOString();
        if (i > 0) o.prev = lineHash(out[i - 1]!);
        out.push(i === 0 ? l : JSON.stringify(o));
      });
      return out;
    });
    const r = await xks(['audit', 'verify', file], config);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^FAILED \S+ line 3: time goes backwards/m);
  });

  it('fails on checkpoints made with an HSM key other than the configured one', async () => {
    const otherDir = join(token.dir, 'audit-other-key');
    mkdirSync(otherDir);
    const other = writeTestConfig(token, { audit: { dir: otherDir, keyLabel: 'another-audit-key' } }, 'config-other.yaml');
    expect((await xks(['keys', 'create', 'other-1'], other)).code).toBe(0);
    const file = join(otherDir, trailFileName('cli'));
    expect(readFileSync(file, 'utf8')).toContain('"keyLabel":"another-audit-key"');
    // Its own config verifies it; the config of this trail's reader names another key.
    expect((await xks(['audit', 'verify', file], other)).code).toBe(0);
    const r = await xks(['audit', 'verify', file], config);
    expect(r.code, r.stdout).toBe(1);
    expect(r.stdout).toMatch(/made with the HSM key "another-audit-key", not the configured audit key "xks-audit-hmac"/);
  });
});
