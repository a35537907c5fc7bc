// Hot reload of the real `xks serve --workers 2` in a child process, while signed requests run continuously over
// keep-alive connections: a credential added by rewriting the config file (no signal) starts working within seconds;
// broken configs (a secret env var that is not set, invalid YAML) are refused with a log line and change nothing; the
// old credential removed with SIGHUP stops working while the new one goes on without a single error; a policy added
// by SIGHUP applies. No request fails with a socket error and no connection is dropped throughout.
import http from 'node:http';
import type https from 'node:https';
import type { Socket } from 'node:net';
import { readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trailFileName } from '../../src/audit/audit-trail.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { freePort, spawnServe, type ServeProcess } from '../helpers/serve-process.js';
import { ACCESS_KEY_ID, SECOND_ACCESS_KEY_ID, SECOND_SECRET, SECRET } from '../helpers/proxy.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { metadata, xksClient } from '../helpers/xks-client.js';

const THIRD_ACCESS_KEY_ID = 'THIRDCREDENTIALNEVERLOADED';
const PROBE_PRINCIPAL = 'arn:aws:iam::123456789012:role/probe';
const MAX_SOCKETS = 4;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let token: TestToken;
let file: string;
let config: any;
let serve: ServeProcess;
let url: string;
let auditDir: string;

// One keep-alive agent for every request of the test: a connection the server drops would show as a socket error or
// as a socket closed while the test runs.
const agent = new http.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS });
let socketsOpened = 0;
let socketsClosed = 0;
let stopping = false;
{
  const a = agent as unknown as { createConnection: (...args: unknown[]) => Socket };
  const create = a.createConnection.bind(agent);
  a.createConnection = (...args: unknown[]) => {
    const s = create(...args);
    socketsOpened++;
    s.on('close', () => {
      if (!stopping) socketsClosed++;
    });
    return s;
  };
}

interface Result {
  start: number;
  end: number;
  status?: number;
  errorName?: string;
  socketError?: string;
}

/** Requests in a loop, one after another, until stopped: encrypts signed with one credential. */
class Pump {
  readonly results: Result[] = [];
  private running = true;
  private readonly done: Promise<void>;

  /** `loops` requests at a time, so that several connections (spread over both workers) carry them. */
  constructor(accessKeyId: string, secret: string, principal = 'arn:aws:iam::123456789012:user/Alice', loops = 2) {
    const xks = xksClient(url, { accessKeyId, secret, agent: agent as unknown as https.Agent });
    const loop = async () => {
      while (this.running) {
        const start = Date.now();
        try {
          const r = await xks.post('keys/foo/encrypt', {
            requestMetadata: metadata('Encrypt', { awsPrincipalArn: principal }),
            plaintext: Buffer.from('reload').toString('base64'),
            encryptionAlgorithm: 'AES_GCM',
          });
          this.results.push({ start, end: Date.now(), status: r.status, errorName: r.json?.errorName });
        } catch (e) {
          this.results.push({ start, end: Date.now(), socketError: (e as Error).message });
        }
        await sleep(5);
      }
    };
    this.done = Promise.all(Array.from({ length: loops }, loop)).then(() => undefined);
  }

  since(t: number): Result[] {
    return this.results.filter((r) => r.start >= t);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

const summary = (rs: Result[]) => {
  const c: Record<string, number> = {};
  for (const r of rs) {
    const k = r.socketError ? `socket:${r.socketError}` : `${r.status}${r.errorName ? ` ${r.errorName}` : ''}`;
    c[k] = (c[k] ?? 0) + 1;
  }
  return c;
};

/** The config with `prefixes[0].credentials` set; every other field as written at the start. */
function withCredentials(...creds: object[]): any {
  const c = structuredClone(config);
  c.prefixes[0].credentials = creds;
  return c;
}
const FIRST = { accessKeyId: ACCESS_KEY_ID, secret: { file: 'secret1' } };
const SECOND = { accessKeyId: SECOND_ACCESS_KEY_ID, secret: { env: 'XKS_TEST_SECOND_SECRET' } };

/** Replace the file in one step (a rename, as a ConfigMap update does): readers never see half a file. */
function writeAtomically(text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

/** `text` padded with a YAML comment to exactly `size` bytes. */
function padded(text: string, size: number): string {
  expect(Buffer.byteLength(text) + 2).toBeLessThanOrEqual(size);
  return `${text}#${'-'.repeat(size - Buffer.byteLength(text) - 2)}\n`;
}

/** Modification time, in whole seconds (exactly representable, so it can be put back exactly). */
const FIXED_MTIME = Math.floor(Date.now() / 1000) - 60;

/** Log lines with this message written after output offset `mark`. */
function linesSince(mark: number, msg: string): any[] {
  return serve
    .output()
    .slice(mark)
    .split('\n')
    .filter((l) => l.includes(`"msg":"${msg}`))
    .map((l) => JSON.parse(l));
}

/** Waits until both workers logged `msg` after `mark`; returns when that was seen. */
async function bothWorkers(mark: number, msg: string, timeoutMs = 10_000): Promise<number> {
  await serve.waitFor(() => linesSince(mark, msg).length >= 2, timeoutMs, `"${msg}" from both workers`);
  return Date.now();
}

let pumpFirst: Pump;
let pumpSecond: Pump | undefined;
/** When both workers had taken the second credential (each worker polls the file on its own every 2 s). */
let secondEverywhere = 0;

beforeAll(async () => {
  ensureBuilt();
  token = createTestToken('reload');
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  auditDir = join(token.dir, 'audit');
  // Budgets far above KMS's: the pumps must not see a 503 on a loaded CI machine (this file is about reloads).
  file = writeTestConfig(token, {
    audit: { dir: auditDir },
    hsm: { acquireTimeoutMs: 2_000, operationTimeoutMs: 2_000 },
    limits: { requestTimeoutMs: 5_000, bodyBytes: 32 * 1024 },
  });
  config = parse(readFileSync(file, 'utf8'));
  config.listeners.http.port = port;
  config.prefixes[0].credentials = [FIRST];
  writeFileSync(file, stringify(config));
  const created = await runXks(['keys', 'create', 'foo'], { token, configFile: file });
  expect(created.code, created.stderr).toBe(0);
  serve = spawnServe(token, file, ['--workers', '2']);
  await serve.waitFor((out) => (out.match(/xks proxy listening/g) ?? []).length >= 2, 30_000, 'both workers listening');
  pumpFirst = new Pump(ACCESS_KEY_ID, SECRET);
  await sleep(500);
}, 60_000);

afterAll(async () => {
  stopping = true;
  await pumpFirst?.stop();
  await pumpSecond?.stop();
  agent.destroy();
  if (serve && serve.child.exitCode === null) {
    serve.child.kill('SIGTERM');
    await Promise.race([serve.exited, sleep(15_000)]);
    if (serve.child.exitCode === null) serve.child.kill('SIGKILL');
  }
  token?.cleanup();
});

describe('hot reload under continuous load', () => {
  it('serves the first credential before any change', () => {
    expect(pumpFirst.results.length).toBeGreaterThan(5);
    expect(summary(pumpFirst.results)).toEqual({ 200: pumpFirst.results.length });
  });

  it('(a) a credential added by rewriting the file, without a signal, starts working within a few seconds', async () => {
    pumpSecond = new Pump(SECOND_ACCESS_KEY_ID, SECOND_SECRET);
    await sleep(300);
    expect(pumpSecond.results.length).toBeGreaterThan(0);
    expect(summary(pumpSecond.results)).toEqual({ '401 AuthenticationFailedException': pumpSecond.results.length });

    const mark = serve.output().length;
    const written = Date.now();
    writeAtomically(stringify(withCredentials(FIRST, SECOND)));
    const reloaded = await bothWorkers(mark, 'configuration reloaded', 10_000);
    expect(reloaded - written).toBeLessThan(8_000); // the poll runs every 2 s
    // The primary noticed the change and signalled both workers at once (they never disagree for a poll interval). Its
    // own line may reach the output after theirs: the processes write to one pipe each.
    await serve.waitFor(() => linesSince(mark, 'configuration file changed: reloading every worker').length >= 1, 5_000, 'the primary\'s line');
    expect(linesSince(mark, 'configuration file changed: reloading every worker')).toHaveLength(1);
    expect(linesSince(mark, 'configuration reloaded').every((l) => l.why === 'SIGHUP')).toBe(true);
    secondEverywhere = reloaded;
    await sleep(1_000);
    const after = pumpSecond.since(reloaded);
    expect(after.length).toBeGreaterThan(5);
    expect(summary(after)).toEqual({ 200: after.length });
    const first = pumpFirst.since(written - 1_000);
    expect(summary(first)).toEqual({ 200: first.length });
  }, 30_000);

  it('(c) a config whose secret env var is not set is refused, and both credentials keep working', async () => {
    const mark = serve.output().length;
    const written = Date.now();
    // Would drop the first credential and add one whose secret cannot be read: none of it may apply.
    writeAtomically(stringify(withCredentials(SECOND, { accessKeyId: THIRD_ACCESS_KEY_ID, secret: { env: 'XKS_TEST_NEVER_SET' } })));
    await bothWorkers(mark, 'configuration reload refused', 10_000);
    const refused = linesSince(mark, 'configuration reload refused');
    expect(refused[0].reason).toContain('XKS_TEST_NEVER_SET');
    expect(linesSince(mark, 'configuration reloaded')).toHaveLength(0);
    await sleep(1_000);
    for (const p of [pumpFirst, pumpSecond!]) {
      const rs = p.since(written);
      expect(rs.length).toBeGreaterThan(5);
      expect(summary(rs)).toEqual({ 200: rs.length });
    }
  }, 30_000);

  it('(c) invalid YAML, announced by SIGHUP, is refused, and both credentials keep working', async () => {
    const mark = serve.output().length;
    const written = Date.now();
    writeAtomically('prefixes: [ {path: broken\nlisteners: {{{\n');
    serve.child.kill('SIGHUP');
    await bothWorkers(mark, 'configuration reload refused', 10_000);
    expect(linesSince(mark, 'configuration reload refused').some((l) => l.why === 'SIGHUP')).toBe(true);
    await sleep(2_500); // the file poll sees it too: refused again, still no change
    expect(linesSince(mark, 'configuration reloaded')).toHaveLength(0);
    for (const p of [pumpFirst, pumpSecond!]) {
      const rs = p.since(written);
      expect(summary(rs)).toEqual({ 200: rs.length });
    }
  }, 30_000);

  it('(b) the first credential removed with SIGHUP stops working; the second goes on without a single error', async () => {
    // A valid file again (noticed by the poll), of a fixed size and a whole-second modification time...
    const size = 64 + Math.max(Buffer.byteLength(stringify(withCredentials(FIRST, SECOND))), Buffer.byteLength(stringify(withCredentials(SECOND))));
    let mark = serve.output().length;
    writeAtomically(padded(stringify(withCredentials(FIRST, SECOND)), size));
    utimesSync(file, FIXED_MTIME, FIXED_MTIME);
    await bothWorkers(mark, 'configuration reloaded', 10_000);
    await sleep(2_500); // every poll since has seen the file as it is now
    const before = pumpFirst.since(Date.now() - 500);
    expect(summary(before)).toEqual({ 200: before.length });

    // ... then the removal written in place with the same size, inode and modification time: the file poll cannot
    // see it, only a SIGHUP makes the proxy read the file.
    const ino = statSync(file).ino;
    mark = serve.output().length;
    writeFileSync(file, padded(stringify(withCredentials(SECOND)), size));
    utimesSync(file, FIXED_MTIME, FIXED_MTIME);
    expect(statSync(file)).toMatchObject({ size, ino, mtimeMs: FIXED_MTIME * 1000 });
    await sleep(2_500); // the poll ran at least once: it saw nothing
    expect(linesSince(mark, 'configuration reloaded')).toHaveLength(0);
    const unchanged = pumpFirst.since(Date.now() - 500);
    expect(summary(unchanged)).toEqual({ 200: unchanged.length });

    const signalled = Date.now();
    serve.child.kill('SIGHUP');
    const reloaded = await bothWorkers(mark, 'configuration reloaded', 5_000);
    expect(linesSince(mark, 'configuration reloaded').every((l) => l.why === 'SIGHUP')).toBe(true);
    expect(reloaded - signalled).toBeLessThan(3_000);
    await sleep(1_000);
    const first = pumpFirst.since(reloaded);
    expect(first.length).toBeGreaterThan(5);
    expect(summary(first)).toEqual({ '401 AuthenticationFailedException': first.length });
    // The second credential, from the moment every worker had it to now: every request succeeded.
    const second = pumpSecond!.since(secondEverywhere);
    expect(second.length).toBeGreaterThan(50);
    expect(summary(second)).toEqual({ 200: second.length });
  }, 30_000);

  it('a policy, a new prefix and its rate limit added by SIGHUP apply to new requests at once', async () => {
    const probe = () =>
      xksClient(url, { accessKeyId: SECOND_ACCESS_KEY_ID, secret: SECOND_SECRET, agent: agent as unknown as https.Agent }).post('keys/foo/encrypt', {
        requestMetadata: metadata('Encrypt', { awsPrincipalArn: PROBE_PRINCIPAL }),
        plaintext: 'cHJvYmU=',
        encryptionAlgorithm: 'AES_GCM',
      });
    const limited = () =>
      xksClient(url, { accessKeyId: SECOND_ACCESS_KEY_ID, secret: SECOND_SECRET, agent: agent as unknown as https.Agent, prefix: 'limited' }).health();
    expect((await probe()).status).toBe(200);
    const unknown = await limited();
    expect(unknown.status).toBe(404);
    expect(unknown.json.errorName).toBe('InvalidUriPathException');
    const c = withCredentials(SECOND);
    c.prefixes[0].policy = [{ sid: 'DenyProbe', effect: 'Deny', principals: [PROBE_PRINCIPAL] }];
    c.prefixes.push({ path: 'limited', region: c.prefixes[0].region, credentials: [SECOND], rateLimit: { requestsPerSecond: 1, burst: 2 } });
    const mark = serve.output().length;
    const written = Date.now();
    writeAtomically(stringify(c));
    serve.child.kill('SIGHUP');
    await bothWorkers(mark, 'configuration reloaded', 5_000);
    for (let i = 0; i < 6; i++) {
      const r = await probe();
      expect(r.status, r.text).toBe(403);
      expect(r.json.errorName).toBe('AccessDeniedException');
    }
    // Burst 2 at 1/s for the key store (shared by the two workers): a quick run of 12 is mostly refused.
    const started = Date.now();
    const burst = [];
    for (let i = 0; i < 12; i++) burst.push(await limited());
    const seconds = (Date.now() - started) / 1000;
    const ok = burst.filter((r) => r.status === 200).length;
    expect(burst.filter((r) => r.status !== 200).every((r) => r.status === 429 && r.json.errorName === 'ThrottlingException')).toBe(true);
    expect(ok).toBeGreaterThanOrEqual(1);
    expect(ok).toBeLessThanOrEqual(2 + Math.ceil(seconds) + 1);
    expect(burst.length - ok).toBeGreaterThanOrEqual(8);
    const others = pumpSecond!.since(written);
    expect(summary(others)).toEqual({ 200: others.length });
  }, 30_000);

  it('no request failed with a socket error and no connection was dropped; no secret in the log', () => {
    const all = [...pumpFirst.results, ...pumpSecond!.results];
    expect(all.length).toBeGreaterThan(200);
    expect(all.filter((r) => r.socketError)).toEqual([]);
    expect(all.filter((r) => r.status !== 200 && r.status !== 401)).toEqual([]);
    expect(socketsOpened).toBeLessThanOrEqual(MAX_SOCKETS);
    expect(socketsClosed).toBe(0);
    // Both workers carried requests of both credentials (each worker writes its own audit trail).
    for (const slot of [1, 2]) {
      const trail = join(auditDir, trailFileName(`w${slot}`));
      const who = new Set(readFileSync(trail, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((l) => l.outcome === 'ok').map((l) => l.who));
      expect([...who].sort(), `worker ${slot}`).toEqual([ACCESS_KEY_ID, SECOND_ACCESS_KEY_ID].sort());
    }
    for (const s of [SECRET, SECOND_SECRET, token.userPin]) expect(serve.output()).not.toContain(s);
  });
});
