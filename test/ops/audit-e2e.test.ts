// The audit trail end to end: a real proxy (XKS and admin listeners, a real token) with an audit section; signed
// requests leave one line each with who, what and the outcome, and nothing secret; after stop() the trail is sealed by
// an HSM checkpoint; the built `xks audit verify` accepts it and names the line of every kind of tampering on a copy;
// operator commands (`xks keys ...`) append their intent and outcome to the CLI trail as `os:<user>`.
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lineHash } from '../../src/audit/audit-record.js';
import { trailFileName } from '../../src/audit/audit-trail.js';
import { ADMIN_ACCESS_KEY_ID, ADMIN_SECRET, adminClient, adminConfig } from '../helpers/admin-client.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { STALLABLE_HSM, stallThreadPool } from '../helpers/ops-stall.js';
import { ACCESS_KEY_ID, SECOND_SECRET, SECRET, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, tokenSecrets, type TestToken } from '../helpers/test-token.js';
import { decryptFields, metadata, xksClient } from '../helpers/xks-client.js';

const PLAINTEXT = Buffer.from('RECOGNISABLE-PLAINTEXT:the-merger-closes-on-friday-7f3c9d', 'utf8');
const PRINCIPAL = 'arn:aws:iam::123456789012:role/AuditedCaller';
const KMS_KEY_ARN = 'arn:aws:kms:us-east-1:123456789012:key/0d5e8c1a-aaaa-bbbb-cccc-000000000001';

let token: TestToken;
let t: TestProxy;
let auditDir: string;
let trail: string;
let text: string;
let lines: any[];
let configFile: string;
const statuses: Record<string, number> = {};

const byRequest = (id: string) => lines.filter((l) => l.type === 'event' && l.kmsRequestId === id);

beforeAll(async () => {
  ensureBuilt();
  token = createTestToken('audit-e2e');
  auditDir = join(token.dir, 'audit');
  t = await startProxyOnToken({
    token,
    cleanupToken: false,
    // Small checkpoint interval: the trail gets several checkpoints, and tampering lands between two of them.
    config: { audit: { dir: auditDir, checkpointEvery: 4 }, admin: adminConfig() },
    keys: { foo: { encrypt: true, decrypt: true } },
  });
  configFile = t.configFile;
  const xks = xksClient(t.httpUrl);
  const admin = adminClient(`http://127.0.0.1:${t.proxy.adminListening!.http!.port}`);
  const md = (op: string, id: string, extra: Record<string, unknown> = {}) =>
    metadata(op, { awsPrincipalArn: PRINCIPAL, kmsKeyArn: KMS_KEY_ARN, kmsRequestId: id, kmsViaService: 'ebs', ...extra });

  statuses.health = (await xks.post('health', { requestMetadata: { kmsRequestId: 'e2e-health', kmsOperation: 'KmsHealthCheck' } })).status;
  statuses.metadata = (await xks.post('keys/foo/metadata', { requestMetadata: md('DescribeKey', 'e2e-metadata') })).status;
  const enc = await xks.post('keys/foo/encrypt', {
    requestMetadata: md('Encrypt', 'e2e-encrypt'),
    plaintext: PLAINTEXT.toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
  });
  statuses.encrypt = enc.status;
  const dec = await xks.post('keys/foo/decrypt', { requestMetadata: md('Decrypt', 'e2e-decrypt'), encryptionAlgorithm: 'AES_GCM', ...decryptFields(enc.json) });
  statuses.decrypt = dec.status;
  expect(Buffer.from(dec.json.plaintext, 'base64').equals(PLAINTEXT)).toBe(true);
  statuses.notFound = (
    await xks.post('keys/no-such-key/encrypt', { requestMetadata: md('Encrypt', 'e2e-notfound'), plaintext: 'AAAA', encryptionAlgorithm: 'AES_GCM' })
  ).status;
  statuses.badSignature = (
    await xks.post('health', { requestMetadata: { kmsRequestId: 'e2e-badsig', kmsOperation: 'KmsHealthCheck' } }, { secret: SECOND_SECRET })
  ).status;
  statuses.rotate = (await admin.call('RotateKeyOnDemand', { KeyId: 'foo' })).status;
  const enc2 = await xks.post('keys/foo/encrypt', {
    requestMetadata: md('GenerateDataKey', 'e2e-encrypt-v2'),
    plaintext: PLAINTEXT.toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
  });
  statuses.encrypt2 = enc2.status;
  statuses.decryptOld = (
    await xks.post('keys/foo/decrypt', { requestMetadata: md('Decrypt', 'e2e-decrypt-v1'), encryptionAlgorithm: 'AES_GCM', ...decryptFields(enc.json) })
  ).status;
  statuses.adminMissing = (await admin.call('DisableKey', { KeyId: 'missing-key' })).status;

  await t.stop();
  trail = join(auditDir, trailFileName('main'));
  text = readFileSync(trail, 'utf8');
  lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
});

afterAll(() => token?.cleanup());

describe('what the proxy writes', () => {
  it('the requests answered as expected', () => {
    expect(statuses).toEqual({
      health: 200,
      metadata: 200,
      encrypt: 200,
      decrypt: 200,
      notFound: 404,
      badSignature: 401,
      rotate: 200,
      encrypt2: 200,
      decryptOld: 200,
      adminMissing: 400,
    });
  });

  it('one line per XKS request: who, principal, KMS key, operation, request id, key id and version, outcome', () => {
    const expected: [string, Record<string, unknown>][] = [
      ['e2e-health', { operation: 'GetHealthStatus', kmsOperation: 'KmsHealthCheck', who: ACCESS_KEY_ID, outcome: 'ok' }],
      ['e2e-metadata', { operation: 'GetKeyMetadata', kmsOperation: 'DescribeKey', keyId: 'foo', keyVersion: 1, outcome: 'ok' }],
      ['e2e-encrypt', { operation: 'Encrypt', kmsOperation: 'Encrypt', keyId: 'foo', keyVersion: 1, outcome: 'ok' }],
      ['e2e-decrypt', { operation: 'Decrypt', kmsOperation: 'Decrypt', keyId: 'foo', keyVersion: 1, outcome: 'ok' }],
      ['e2e-notfound', { operation: 'Encrypt', keyId: 'no-such-key', outcome: 'error', errorName: 'KeyNotFoundException' }],
      ['e2e-badsig', { operation: 'GetHealthStatus', outcome: 'error', errorName: 'AuthenticationFailedException' }],
      ['e2e-encrypt-v2', { operation: 'Encrypt', kmsOperation: 'GenerateDataKey', keyId: 'foo', keyVersion: 2, outcome: 'ok' }],
      ['e2e-decrypt-v1', { operation: 'Decrypt', keyId: 'foo', keyVersion: 1, outcome: 'ok' }],
    ];
    for (const [id, fields] of expected) {
      const found = byRequest(id);
      expect(found, id).toHaveLength(1);
      expect(found[0], id).toMatchObject({ type: 'event', source: 'xks', kmsRequestId: id, ...fields });
      expect(Date.parse(found[0].time), id).toBeGreaterThan(Date.now() - 120_000);
    }
    // Key requests carry the caller and the KMS key as KMS sent them, and the SigV4 access key that signed.
    for (const id of ['e2e-metadata', 'e2e-encrypt', 'e2e-decrypt', 'e2e-notfound', 'e2e-encrypt-v2', 'e2e-decrypt-v1']) {
      expect(byRequest(id)[0], id).toMatchObject({ who: ACCESS_KEY_ID, awsPrincipalArn: PRINCIPAL, kmsKeyArn: KMS_KEY_ARN, kmsViaService: 'ebs' });
    }
    // A request whose signature failed is recorded, but not as the key it claimed.
    expect(byRequest('e2e-badsig')[0].who).toBeUndefined();
    expect(lines.filter((l) => l.source === 'xks')).toHaveLength(expected.length);
  });

  it('one line per admin request, with the admin access key and the outcome', () => {
    const admin = lines.filter((l) => l.source === 'admin');
    expect(admin).toHaveLength(2);
    expect(admin[0]).toMatchObject({ type: 'event', who: ADMIN_ACCESS_KEY_ID, operation: 'RotateKeyOnDemand', keyId: 'foo', keyVersion: 2, outcome: 'ok' });
    expect(admin[1]).toMatchObject({ who: ADMIN_ACCESS_KEY_ID, operation: 'DisableKey', keyId: 'missing-key', outcome: 'error', errorName: 'NotFoundException' });
    for (const a of admin) expect(a.requestId).toMatch(/^[0-9a-f-]{36}$/);
    // In the order they happened: the rotation between the two encrypts.
    const seqOf = (id: string) => byRequest(id)[0].seq;
    expect(seqOf('e2e-encrypt')).toBeLessThan(admin[0].seq);
    expect(admin[0].seq).toBeLessThan(seqOf('e2e-encrypt-v2'));
  });

  it('holds no plaintext, SigV4 secret or PIN', () => {
    const all = readdirSync(auditDir).map((f) => readFileSync(join(auditDir, f), 'utf8')).join('\n');
    expect(all).toContain('e2e-encrypt'); // the files read are the trail
    for (const s of [
      PLAINTEXT.toString('utf8'),
      'RECOGNISABLE-PLAINTEXT',
      PLAINTEXT.toString('base64'),
      PLAINTEXT.toString('base64').slice(4, 40),
      PLAINTEXT.toString('hex'),
      SECRET,
      SECOND_SECRET,
      ADMIN_SECRET,
      token.userPin,
      token.soPin,
    ]) {
      expect(all, s).not.toContain(s);
    }
    expect(all).not.toMatch(/plaintext|ciphertext|"pin"|secret/i);
  });

  it('is a chain sealed by a checkpoint after stop()', () => {
    expect(lines[0]).toMatchObject({ seq: 1, prev: '0'.repeat(64) });
    const raw = text.split('\n').filter(Boolean);
    for (let i = 1; i < raw.length; i++) {
      expect(lines[i].prev, `line ${i + 1}`).toBe(lineHash(raw[i - 1]!));
      expect(lines[i].seq).toBe(i + 1);
    }
    expect(lines.at(-1)).toMatchObject({ type: 'checkpoint', keyLabel: 'xks-audit-hmac' });
    expect(lines.at(-1).mac).toMatch(/^[0-9a-f]{64}$/);
    // checkpointEvery 4 over 10 events: sealed along the way too.
    expect(lines.filter((l) => l.type === 'checkpoint').length).toBeGreaterThanOrEqual(3);
  });
});

describe('xks audit verify (the built CLI, same config)', () => {
  /** A copy of the trail with its lines changed by `edit`; the copy's path. */
  function tampered(edit: (raw: string[]) => string): string {
    const dir = mkdtempSync(join(tmpdir(), 'xks-audit-e2e-'));
    const file = join(dir, 'audit-copy.jsonl');
    writeFileSync(file, edit(text.split('\n').filter(Boolean)));
    return file;
  }
  const joined = (raw: string[]) => raw.map((l) => l + '\n').join('');
  /** 0-based indexes of event lines that have an event line after them and a checkpoint later on. */
  const events = () => lines.map((l, i) => (l.type === 'event' ? i : -1)).filter((i) => i >= 0 && i < lines.length - 2);

  async function expectFailure(file: string, line: number, reason: RegExp) {
    const r = await runXks(['audit', 'verify', file], { token, configFile });
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout.trim()).toMatch(new RegExp(`^FAILED ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} line ${line}: `));
    expect(r.stdout).toMatch(reason);
  }

  it('exits 0 on the untouched trail and says how much it checked', async () => {
    const copy = join(mkdtempSync(join(tmpdir(), 'xks-audit-e2e-')), 'audit-copy.jsonl');
    copyFileSync(trail, copy);
    const r = await runXks(['audit', 'verify', trail], { token, configFile });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const checkpoints = lines.filter((l) => l.type === 'checkpoint').length;
    expect(r.stdout).toContain(`OK ${trail}: seq 1..${lines.length}, ${lines.length} lines, ${checkpoints} checkpoints verified in the HSM`);
    const j = await runXks(['audit', 'verify', '--json', copy], { token, configFile });
    expect(j.code, j.stderr).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: true, chains: [{ firstSeq: 1, lastSeq: lines.length, checkpoints }] });
  });

  it('an edited line: named at the line that no longer follows it', async () => {
    const k = events()[2]!;
    expect(text.split('\n')[k]).toContain('"outcome":"ok"');
    const file = tampered((raw) => joined(raw.map((l, i) => (i === k ? l.replace('"outcome":"ok"', '"outcome":"error"') : l))));
    await expectFailure(file, k + 2, new RegExp(`seq ${k + 1}\\) or this one was edited`));
  });

  it('a deleted line: named where it was', async () => {
    const k = events()[3]!;
    await expectFailure(tampered((raw) => joined(raw.filter((_, i) => i !== k))), k + 1, /deleted/);
  });

  it('two lines swapped: named at the first of them', async () => {
    const k = events()[1]!;
    const file = tampered((raw) => joined(raw.map((l, i) => (i === k ? raw[k + 1]! : i === k + 1 ? raw[k]! : l))));
    await expectFailure(file, k + 1, /deleted|order|edited/);
  });

  it('the file truncated in the middle of a line: named at the cut line', async () => {
    const k = events()[4]!;
    const file = tampered((raw) => joined(raw.slice(0, k)) + raw[k]!.slice(0, 40));
    await expectFailure(file, k + 1, /cut short|truncated/);
  });

  it('the file truncated at a line boundary (final checkpoint gone): named at the last line left', async () => {
    const keep = lines.length - 2;
    const file = tampered((raw) => joined(raw.slice(0, keep)));
    await expectFailure(file, keep, /without a checkpoint/);
    // ... which a trail still being written may accept explicitly: verified, the unsealed lines listed as not evidence.
    const r = await runXks(['audit', 'verify', '--allow-unsealed-tail', file], { token, configFile });
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stdout).toMatch(/^NOT EVIDENCE .*not sealed yet/m);
  });

  it('a forged line with the chain recomputed after it: the next HSM checkpoint fails', async () => {
    const k = events()[0]!;
    const file = tampered((raw) => {
      const out: string[] = [];
      raw.forEach((l, i) => {
        const obj = JSON.parse(l);
        if (i === k) obj.outcome = obj.outcome === 'ok' ? 'error' : 'ok';
        if (i > 0) obj.prev = lineHash(out[i - 1]!);
        out.push(JSON.stringify(obj));
      });
      return joined(out);
    });
    // The forger's chain is consistent: only the HSM MAC of the next checkpoint gives it away.
    const forged = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    for (let i = 1; i < forged.length; i++) expect(JSON.parse(forged[i]!).prev).toBe(lineHash(forged[i - 1]!));
    const nextCheckpoint = lines.findIndex((l, i) => i > k && l.type === 'checkpoint');
    await expectFailure(file, nextCheckpoint + 1, /MAC does not verify/);
  });
});

describe('operator commands (xks keys ...)', () => {
  it('append to the CLI trail as os:<user>, successes and failures, sealed; both trails verify', async () => {
    const run = async (args: string[]) => {
      const r = await runXks(args, { token, configFile });
      return r.code;
    };
    expect(await run(['keys', 'create', 'cli-key'])).toBe(0);
    expect(await run(['keys', 'rotate', 'cli-key'])).toBe(0);
    expect(await run(['keys', 'disable', 'cli-key'])).toBe(0);
    expect(await run(['keys', 'create', 'cli-key'])).not.toBe(0); // exists already
    expect(await run(['keys', 'list'])).toBe(0); // reads only: not audited
    const cliTrail = join(auditDir, trailFileName('cli'));
    const cliLines = readFileSync(cliTrail, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const who = `os:${userInfo().username}`;
    // Each command's intent, sealed before it ran, then its outcome under the same call id.
    const all = cliLines.filter((l) => l.type === 'event');
    expect(all.map((e) => e.outcome)).toEqual(['started', 'ok', 'started', 'ok', 'started', 'ok', 'started', 'error']);
    for (let i = 0; i < all.length; i += 2) expect(all[i + 1].requestId).toBe(all[i].requestId);
    const events = all.filter((e) => e.outcome !== 'started');
    expect(events.map((e) => [e.operation, e.keyId, e.outcome])).toEqual([
      ['keys create', 'cli-key', 'ok'],
      ['keys rotate', 'cli-key', 'ok'],
      ['keys disable', 'cli-key', 'ok'],
      ['keys create', 'cli-key', 'error'],
    ]);
    for (const e of events) expect(e).toMatchObject({ source: 'cli', who });
    // The version each change made or left current: created at 1, rotated to 2, disabled at 2.
    expect(events.slice(0, 3).map((e) => e.keyVersion)).toEqual([1, 2, 2]);
    expect(events[3].errorName).toMatch(/AlreadyExistsException/);
    expect(cliLines.at(-1).type).toBe('checkpoint');
    const cliText = readFileSync(cliTrail, 'utf8');
    for (const s of [...tokenSecrets(token), SECRET, SECOND_SECRET, ADMIN_SECRET]) expect(cliText).not.toContain(s);

    const r = await runXks(['audit', 'verify', cliTrail, trail], { token, configFile });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout.match(/^OK \S+: seq /gm)).toHaveLength(2);
    // Both trails' newest checkpoints are anchored in the HSM, and are in the files.
    expect(r.stdout).toMatch(/^OK the newest checkpoint the HSM anchored is in the files, for the trail of .*-cli\.jsonl, .*-main\.jsonl$|^OK the newest checkpoint the HSM anchored is in the files, for the trail of .*-main\.jsonl, .*-cli\.jsonl$/m);
  });
});

describe('a restarted proxy, sealing by time', () => {
  it('continues the same chain, seals it after checkpointSeconds without a stop, and the live trail verifies', async () => {
    const old = readFileSync(trail, 'utf8').split('\n').filter(Boolean);
    const again = await startProxyOnToken({
      token,
      cleanupToken: false,
      config: { audit: { dir: auditDir, checkpointEvery: 1000, checkpointSeconds: 1 } },
    });
    try {
      const xks = xksClient(again.httpUrl);
      for (let i = 0; i < 3; i++) {
        const r = await xks.post('health', { requestMetadata: { kmsRequestId: `e2e-restart-${i}`, kmsOperation: 'KmsHealthCheck' } });
        expect(r.status).toBe(200);
      }
      const current = () => readFileSync(trail, 'utf8').split('\n').filter(Boolean);
      // Sealed by the timer (1 s after the first unsealed line), not by a stop and not by the line count.
      for (let i = 0; i < 60 && (JSON.parse(current().at(-1)!).type !== 'checkpoint' || current().length < old.length + 4); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const now = current();
      expect(now.slice(0, old.length)).toEqual(old);
      const added = now.slice(old.length).map((l) => JSON.parse(l));
      expect(added.map((l) => l.type)).toEqual(['event', 'event', 'event', 'checkpoint']);
      expect(added[0]).toMatchObject({ seq: old.length + 1, prev: lineHash(old.at(-1)!), kmsRequestId: 'e2e-restart-0' });
      const r = await runXks(['audit', 'verify', trail], { token, configFile: again.configFile });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(`seq 1..${old.length + 4}`);
    } finally {
      await again.stop();
    }
  });
});

describe('a checkpoint that fails (the HSM busy at that moment)', () => {
  it('is tried again later: an idle trail does not stay unsealed', async () => {
    const dir = join(token.dir, 'audit-busy');
    const busy = await startProxyOnToken({
      token,
      cleanupToken: false,
      // One session and no queue: while a stalled call holds it, the checkpoint's MAC cannot get a session.
      config: {
        audit: { dir, checkpointEvery: 1000, checkpointSeconds: 1 },
        hsm: { ...STALLABLE_HSM, sessionPoolSize: 1, maxQueue: 0, operationTimeoutMs: 5_000 },
        limits: { requestTimeoutMs: 300, bodyBytes: 32 * 1024 },
      },
    });
    const file = join(dir, trailFileName('main'));
    const lastType = () => JSON.parse(readFileSync(file, 'utf8').split('\n').filter(Boolean).at(-1)!).type;
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    try {
      const xks = xksClient(busy.httpUrl);
      const warm = await xks.encrypt("foo", Buffer.from("warm up"));
      expect(warm.status).toBe(200);
      for (let i = 0; i < 40 && lastType() !== 'checkpoint'; i++) await sleep(100);
      expect(lastType()).toBe('checkpoint');

      const stall = stallThreadPool(token.dir);
      try {
        await sleep(50);
        // Answered 503 at the request budget; its HSM call keeps the only session until the pool frees up.
        const stuck = await xks.encrypt('foo', Buffer.from('stuck'));
        expect(stuck.status, stuck.text).toBe(503);
        // The time-based checkpoint comes 1 s after that line, and cannot get a session.
        for (let i = 0; i < 40 && !busy.logs.some((l) => l.includes('audit trail write failed')); i++) await sleep(100);
        expect(busy.logs.some((l) => l.includes('audit trail write failed'))).toBe(true);
        expect(lastType()).toBe('event');
      } finally {
        await stall.release();
      }
      // No more requests: the trail must still be sealed within a few checkpoint intervals.
      for (let i = 0; i < 50 && lastType() !== 'checkpoint'; i++) await sleep(100);
      expect(lastType()).toBe('checkpoint');
    } finally {
      await busy.stop();
    }
    const r = await runXks(['audit', 'verify', file], { token, configFile: busy.configFile });
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });
});
