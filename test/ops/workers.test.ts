// `xks serve --workers 2` with an operations listener, the admin API and an audit trail, in a child process:
// concurrent signed load all succeeds and is served by both workers (each worker's own audit file holds its share,
// every request exactly once); a rotation made through the admin API lands on one worker and is seen through every
// worker within 5 s, while old ciphertexts still decrypt; the primary's /metrics adds up both workers and its /health
// asks both; SIGTERM ends every process within 15 s, with each audit file sealed by a checkpoint.
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import type https from 'node:https';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trailFileName } from '../../src/audit/audit-trail.js';
import { decodeCiphertextMetadata } from '../../src/xks/ciphertext-metadata.js';
import { ADMIN_ACCESS_KEY_ID, adminClient, adminConfig } from '../helpers/admin-client.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { httpGet, scrape, total } from '../helpers/ops-metrics.js';
import { freePort, spawnServe, type ServeProcess } from '../helpers/serve-process.js';
import { SECRET } from '../helpers/proxy.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { decryptFields, metadata, xksClient, type SendOptions } from '../helpers/xks-client.js';

const LOAD = 300;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let token: TestToken;
let file: string;
let serve: ServeProcess;
let url: string;
let ops: string;
let admin: ReturnType<typeof adminClient>;
let auditDir: string;
let workerPids: number[] = [];
/** Encrypts answered 200 by the proxy, all phases: what the primary's aggregated counter must show. */
let encryptsOk = 0;
/** Load ciphertexts made before the rotation (version 1), with their plaintexts. */
const before: { enc: any; pt: Buffer }[] = [];

const trail = (slot: number) => join(auditDir, trailFileName(`w${slot}`));
const events = (slot: number) =>
  existsSync(trail(slot))
    ? readFileSync(trail(slot), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
        .filter((l) => l.type === 'event')
    : [];

async function encrypt(id: string, pt: Buffer, opts: SendOptions = {}) {
  const r = await xksClient(url, opts).post('keys/shared/encrypt', {
    requestMetadata: metadata('Encrypt', { kmsRequestId: id }),
    plaintext: pt.toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
  });
  if (r.status === 200) encryptsOk++;
  return r;
}

async function decrypt(id: string, enc: any, opts: SendOptions = {}) {
  return xksClient(url, opts).post('keys/shared/decrypt', {
    requestMetadata: metadata('Decrypt', { kmsRequestId: id }),
    encryptionAlgorithm: 'AES_GCM',
    ...decryptFields(enc),
  });
}

const versionOf = (enc: any) => decodeCiphertextMetadata(Buffer.from(enc.ciphertextMetadata, 'base64'));

beforeAll(async () => {
  ensureBuilt();
  token = createTestToken('workers');
  auditDir = join(token.dir, 'audit');
  const [httpPort, opsPort, adminPort] = [await freePort(), await freePort(), await freePort()];
  url = `http://127.0.0.1:${httpPort}`;
  ops = `http://127.0.0.1:${opsPort}`;
  // Budgets far above KMS's: this file is about workers agreeing, and must not fail on a loaded CI machine.
  file = writeTestConfig(token, {
    admin: adminConfig(),
    audit: { dir: auditDir, checkpointEvery: 100 },
    hsm: { acquireTimeoutMs: 2_000, operationTimeoutMs: 2_000 },
    limits: { requestTimeoutMs: 5_000, bodyBytes: 32 * 1024 },
  });
  const config = parse(readFileSync(file, 'utf8'));
  config.listeners.http.port = httpPort;
  config.listeners.ops = { host: '127.0.0.1', port: opsPort };
  config.admin.listener.port = adminPort;
  writeFileSync(file, stringify(config));
  admin = adminClient(`http://127.0.0.1:${adminPort}`);
  const created = await runXks(['keys', 'create', 'shared'], { token, configFile: file });
  expect(created.code, created.stderr).toBe(0);
  serve = spawnServe(token, file, ['--workers', '2']);
  await serve.waitFor((out) => (out.match(/xks proxy listening/g) ?? []).length >= 2 && out.includes('operations listener'), 40_000, 'two workers and the ops listener');
  workerPids = execFileSync('ps', ['-o', 'pid=', '--ppid', String(serve.child.pid)], { encoding: 'utf8' })
    .split('\n')
    .map((s) => Number(s.trim()))
    .filter((n) => n > 0);
}, 90_000);

afterAll(() => {
  if (serve?.child.exitCode === null) serve.child.kill('SIGKILL');
  for (const pid of workerPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  token?.cleanup();
});

describe('xks serve --workers 2', () => {
  it('runs one primary and two worker processes', () => {
    expect(workerPids).toHaveLength(2);
    const listening = serve.logLines().filter((l) => l.msg === 'xks proxy listening');
    expect(new Set(listening.map((l) => l.worker)).size).toBe(2);
  });

  it(`${LOAD} concurrent signed round trips all succeed, served by both workers, each request audited exactly once`, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    try {
      const opts = { agent: agent as unknown as https.Agent };
      const results = await Promise.all(
        Array.from({ length: LOAD }, async (_, i) => {
          const pt = randomBytes(32 + (i % 200));
          const enc = await encrypt(`load-enc-${i}`, pt, opts);
          if (enc.status !== 200) return `encrypt ${enc.status} ${enc.text}`;
          const dec = await decrypt(`load-dec-${i}`, enc.json, opts);
          if (dec.status !== 200) return `decrypt ${dec.status} ${dec.text}`;
          if (!Buffer.from(dec.json.plaintext, 'base64').equals(pt)) return 'plaintext differs';
          before.push({ enc: enc.json, pt });
          return versionOf(enc.json) === 1 ? 'ok' : `version ${versionOf(enc.json)}`;
        }),
      );
      expect(results.filter((r) => r !== 'ok')).toEqual([]);
    } finally {
      agent.destroy();
    }
    // Each worker appends to its own trail, right after answering.
    const ids = (slot: number) => events(slot).map((e) => e.kmsRequestId).filter((id) => id?.startsWith('load-'));
    for (let k = 0; k < 60 && ids(1).length + ids(2).length < 2 * LOAD; k++) await sleep(50);
    const [w1, w2] = [ids(1), ids(2)];
    expect(w1.length, 'worker 1 served some').toBeGreaterThan(0);
    expect(w2.length, 'worker 2 served some').toBeGreaterThan(0);
    expect(w1.length + w2.length).toBe(2 * LOAD);
    expect(new Set([...w1, ...w2]).size).toBe(2 * LOAD);
  }, 60_000);

  it('a rotation through the admin API lands on one worker and is seen through every worker within 5 s; old ciphertexts decrypt', async () => {
    const rotatedAt = Date.now();
    const r = await admin.call('RotateKeyOnDemand', { KeyId: 'shared' });
    expect(r.status, r.text).toBe(200);
    expect(r.json).toMatchObject({ KeyId: 'shared', Version: 2 });
    // The line is appended once the answer is sent: look for it for a moment.
    const adminEvents = () => [1, 2].flatMap((slot) => events(slot).filter((e) => e.source === 'admin' && e.operation === 'RotateKeyOnDemand'));
    for (let k = 0; k < 40 && adminEvents().length === 0; k++) await sleep(50);
    expect(adminEvents()).toHaveLength(1);
    expect(adminEvents()[0]).toMatchObject({ who: ADMIN_ACCESS_KEY_ID, keyId: 'shared', outcome: 'ok' });

    // A new connection for every request (an agent without keep-alive, not the global one): the primary hands
    // connections to the workers in turn.
    const fresh = { agent: new http.Agent({ keepAlive: false }) as unknown as https.Agent };
    let streak = 0;
    let streakStart = 0;
    let i = 0;
    while (streak < 20) {
      expect(Date.now() - rotatedAt, `versions not converged; streak ${streak}`).toBeLessThan(10_000);
      const enc = await encrypt(`rot-${i++}`, Buffer.from('after the rotation'), fresh);
      expect(enc.status, enc.text).toBe(200);
      if (versionOf(enc.json) === 2) {
        if (streak++ === 0) streakStart = Date.now();
      } else {
        expect(versionOf(enc.json)).toBe(1);
        streak = 0;
      }
    }
    expect(streakStart - rotatedAt).toBeLessThan(5_000);
    // Old ciphertexts (version 1) decrypt through every worker.
    for (let j = 0; j < 20; j++) {
      const { enc, pt } = before[j]!;
      const dec = await decrypt(`old-${j}`, enc, fresh);
      expect(dec.status, dec.text).toBe(200);
      expect(Buffer.from(dec.json.plaintext, 'base64').equals(pt)).toBe(true);
    }
    for (let k = 0; k < 60 && [1, 2].flatMap((slot) => events(slot)).filter((e) => e.kmsRequestId === 'old-19').length === 0; k++) await sleep(50);
    for (const slot of [1, 2]) {
      const evs = events(slot);
      expect(
        evs.some((e) => e.kmsRequestId?.startsWith('rot-') && e.keyVersion === 2 && Date.parse(e.time) >= streakStart),
        `worker ${slot} encrypted with version 2`,
      ).toBe(true);
      expect(evs.some((e) => e.kmsRequestId?.startsWith('old-') && e.operation === 'Decrypt' && e.keyVersion === 1 && e.outcome === 'ok'), `worker ${slot} decrypted version 1`).toBe(true);
    }
  }, 30_000);

  it("the primary's /metrics adds up both workers; its /health asks both", async () => {
    const s = await scrape(ops);
    expect(total(s, 'xks_requests_total', { operation: 'Encrypt', outcome: 'ok' })).toBe(encryptsOk);
    expect(total(s, 'xks_requests_total', { operation: 'Decrypt', outcome: 'ok' })).toBe(LOAD + 20);
    expect(total(s, 'xks_request_duration_seconds_count', { operation: 'Encrypt' })).toBe(encryptsOk);
    expect(total(s, 'xks_hsm_up', { token: token.label })).toBe(1);
    // The pools of both workers: 8 sessions each.
    expect(total(s, 'xks_hsm_sessions', { state: 'size' })).toBe(16);
    // Keys by state: counted by one worker (a count searches the whole token), not added up.
    expect(total(s, 'xks_keys', { state: 'Enabled' })).toBe(1);
    const h = await httpGet(`${ops}/health`);
    expect(h.status, h.text).toBe(200);
    const body = JSON.parse(h.text);
    expect(body.status).toBe('ACTIVE');
    expect(body.workers).toHaveLength(2);
    for (const w of body.workers) expect(w).toMatchObject({ status: 'ACTIVE', token: token.label });
    expect((await httpGet(`${ops}/ping`)).status).toBe(200);
  });

  it('SIGTERM: every process exits within 15 s, the primary with 0; each audit file ends with a checkpoint and verifies', async () => {
    const started = Date.now();
    serve.child.kill('SIGTERM');
    const exit = await Promise.race([serve.exited, sleep(15_000).then(() => undefined)]);
    expect(exit, serve.output().slice(-2000)).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(15_000);
    for (const pid of workerPids) expect(() => process.kill(pid, 0), `worker ${pid} still running`).toThrow();
    // Each worker drained and stopped on its own (then sealed its trail and called C_Finalize).
    expect(serve.logLines().filter((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM')).toHaveLength(2);
    for (const slot of [1, 2]) {
      const lines = readFileSync(trail(slot), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      expect(lines.at(-1).type, `worker ${slot}`).toBe('checkpoint');
    }
    const v = await runXks(['audit', 'verify', trail(1), trail(2)], { token, configFile: file });
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout.match(/^OK \S+: seq /gm)).toHaveLength(2);
    expect(v.stdout).toMatch(/^OK the newest checkpoint the HSM anchored is in the files, for the trail of .*-w[12]\.jsonl, .*-w[12]\.jsonl$/m);
    expect(serve.output()).not.toContain(SECRET);
    expect(serve.output()).not.toContain(token.userPin);
  }, 30_000);
});
