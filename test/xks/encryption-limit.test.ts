// NIST SP 800-38D's bound on AES-GCM with random IVs (2^32 encryptions per key), counted per key version across every
// proxy on a token: blocks of encryptions reserved in the HSM. With `encryptionLimits` made small, a few hundred
// encryptions through real servers on a real token reach it: refusal at the limit (decrypt goes on), two proxy processes
// sharing one limit, the report's flag, rotate-due rotating a worn version, the metrics, and purge taking the counts away.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import { BlockIndex } from '../../src/keys/encryption-blocks.js';
import { openLifecycle } from '../../src/proxy.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { scrape } from '../helpers/ops-metrics.js';
import { freePort, spawnServe, type ServeProcess } from '../helpers/serve-process.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { decryptFields, xksClient, type XksResponse } from '../helpers/xks-client.js';
import { decodeCiphertextMetadata } from '../../src/xks/ciphertext-metadata.js';

const LIMITS = { perVersion: 120, rotateAfter: 60, perBlock: 16 };
const CONFIG = {
  encryptionLimits: LIMITS,
  // Budgets for a machine shared with other test runs: a slow answer here is not what these tests are about.
  hsm: { keyCacheTtlMs: 200, operationTimeoutMs: 5_000, acquireTimeoutMs: 5_000 },
  limits: { requestTimeoutMs: 10_000 },
  listeners: { http: { host: '127.0.0.1', port: 0 }, ops: { host: '127.0.0.1', port: 0 } },
};

let token: TestToken;
let t: TestProxy;
let xks: ReturnType<typeof xksClient>;
let opsUrl: string;

beforeAll(async () => {
  ensureBuilt();
  token = createTestToken('enc-limit');
  t = await startProxyOnToken({ token, cleanupToken: false, config: CONFIG });
  xks = xksClient(t.httpUrl);
  opsUrl = `http://127.0.0.1:${t.proxy.opsListening!.http!.port}`;
}, 120_000);

afterAll(async () => {
  await t?.stop();
  token?.cleanup();
});

const versionOf = (r: XksResponse) => decodeCiphertextMetadata(Buffer.from(r.json.ciphertextMetadata, 'base64'));

async function encryptN(client: ReturnType<typeof xksClient>, key: string, n: number): Promise<XksResponse[]> {
  const out: XksResponse[] = [];
  // Eight at a time: requests that find the block used up wait together for the next one.
  for (let i = 0; i < n; i += 8) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(8, n - i) }, () => client.encrypt(key, Buffer.from(`p${i}`))))));
  }
  return out;
}

async function describeKey(id: string): Promise<any> {
  const r = await runXks(['keys', 'describe', id], { token, configFile: t.configFile });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

async function reportJson(): Promise<{ code: number; report: any }> {
  const r = await runXks(['report', '--json'], { token, configFile: t.configFile });
  return { code: r.code, report: JSON.parse(r.stdout) };
}

function sample(samples: { name: string; labels: Record<string, string>; value: number }[], name: string, key: string, version: number): number | undefined {
  return samples.find((s) => s.name === name && s.labels.key === key && s.labels.version === String(version))?.value;
}

describe('encryptionLimits', () => {
  const sample = readFileSync(new URL('../../config.sample.yaml', import.meta.url), 'utf8');
  const withLimits = (limits: string) => parseConfig(`${sample}\nencryptionLimits: ${limits}\n`, 'c.yaml');

  it('defaults to rotation at 2^31 and refusal 2^26 below 2^32; never above 2^32', () => {
    expect(parseConfig(sample, 'c.yaml').encryptionLimits).toEqual({ perVersion: 2 ** 32 - 2 ** 26, rotateAfter: 2 ** 31, perBlock: 2 ** 22 });
    expect(withLimits('{ perVersion: 1000, rotateAfter: 500 }').encryptionLimits).toEqual({ perVersion: 1000, rotateAfter: 500, perBlock: 2 ** 22 });
    expect(() => withLimits(`{ perVersion: ${2 ** 32 + 1} }`)).toThrow(/encryptionLimits\.perVersion/);
    expect(() => withLimits('{ perVersion: 100, rotateAfter: 200 }')).toThrow(/encryptionLimits\.rotateAfter: must not be above perVersion/);
  });
});

describe('one proxy', () => {
  it('encrypts exactly perVersion times under a version, then answers InvalidStateException; decrypt goes on', async () => {
    await t.proxy.lifecycle.create('busy', { usage: { encrypt: true, decrypt: true } });
    const first = await encryptN(xks, 'busy', LIMITS.perVersion);
    expect(first.map((r) => r.status)).toEqual(first.map(() => 200));

    const refused = await xks.encrypt('busy', Buffer.from('one too many'));
    expect(refused.status, refused.text).toBe(400);
    expect(refused.json.errorName).toBe('InvalidStateException');
    expect(refused.json.errorMessage).toMatch(/busy version 1 has reached its limit of 120 encryptions \(NIST SP 800-38D/);
    // Refused at once from then on, without a search of the token per request.
    const again = await encryptN(xks, 'busy', 16);
    expect(again.map((r) => r.json.errorName)).toEqual(again.map(() => 'InvalidStateException'));
    expect((await xks.decrypt('busy', decryptFields(first[0]!.json))).status).toBe(200);
    expect((await xks.metadata('busy')).json.keyStatus).toBe('ENABLED');
    // One log line for the incident, not one per refused request (those have their request lines).
    expect(t.logs.filter((l) => l.includes('encryption-limit-reached'))).toHaveLength(1);
  });

  it('metrics count the encryptions and the reserved total per key and version', async () => {
    const samples = await scrape(opsUrl);
    expect(sample(samples, 'xks_encryptions_total', 'busy', 1)).toBe(LIMITS.perVersion);
    expect(sample(samples, 'xks_encryptions_reserved', 'busy', 1)).toBe(LIMITS.perVersion);
  });

  it('describe and the report flag the worn version; the blocks confuse neither the key list nor the key', async () => {
    const d = await describeKey('busy');
    expect(d.Versions).toEqual([expect.objectContaining({ Version: 1, EncryptionsReserved: LIMITS.perVersion })]);
    expect(d.EncryptionLimit).toMatch(/^version 1: 120 encryptions reserved, the limit of 120 .* Encrypt under this version is refused/);
    expect(d.Problems).toBeUndefined();
    expect(d.RotationsInProgress).toBeUndefined();

    const { code, report } = await reportJson();
    expect(code).toBe(2);
    const row = report.Keys.find((k: any) => k.KeyId === 'busy');
    expect(row.Compliant).toBe(false);
    expect(row.Findings).toContainEqual({ severity: 'violation', message: expect.stringMatching(/^current version 1: 120 encryptions reserved/) });
    expect(row.Versions[0].EncryptionsReserved).toBe(LIMITS.perVersion);
    expect(report.Summary.NonCompliantKeys).toEqual(['busy']);
    const text = await runXks(['report'], { token, configFile: t.configFile });
    expect(text.code).toBe(2);
    expect(text.stdout).toMatch(/FLAG busy:/);
    expect(text.stdout).toMatch(/ENCRYPTIONS<=120/);

    const list = await runXks(['keys', 'list', '--json'], { token, configFile: t.configFile });
    expect(list.code, list.stderr).toBe(0);
    // The key and the health check's key, nothing else: the blocks carry labels of their own, which are no key.
    expect(JSON.parse(list.stdout).map((k: any) => k.KeyId)).toEqual(['busy', 'xks-proxy-health-check']);
  });

  it('rotate-due rotates the worn key once; the new version encrypts, the old one still decrypts', async () => {
    const before = await encryptN(xks, 'busy', 1);
    expect(before[0]!.status).toBe(400);
    const r = await runXks(['keys', 'rotate-due', '--json'], { token, configFile: t.configFile });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([{ KeyId: 'busy', Rotated: true, Version: 2, EncryptionsReserved: LIMITS.perVersion }]);
    const again = await runXks(['keys', 'rotate-due'], { token, configFile: t.configFile });
    expect(again.stdout.trim()).toBe('no key is due for rotation');
    // Rotated by another process: this proxy sees version 2 within 2 x keyCacheTtlMs.
    let after: XksResponse | undefined;
    for (let i = 0; i < 50 && after?.status !== 200; i++) {
      after = await xks.encrypt('busy', Buffer.from('fresh'));
      if (after.status !== 200) await sleep(50);
    }
    expect(after!.status, after!.text).toBe(200);
    expect(versionOf(after!)).toBe(2);
    const { code, report } = await reportJson();
    expect(code).toBe(0);
    const row = report.Keys.find((k: any) => k.KeyId === 'busy');
    expect(row.Versions.map((v: any) => v.EncryptionsReserved)).toEqual([LIMITS.perVersion, expect.any(Number)]);
  });

  it('a version past rotateAfter is due for rotation before it is refused', async () => {
    await t.proxy.lifecycle.create('warm', { usage: { encrypt: true, decrypt: true } });
    expect((await encryptN(xks, 'warm', 10)).every((r) => r.status === 200)).toBe(true);
    const early = await runXks(['keys', 'rotate-due', '--json'], { token, configFile: t.configFile });
    expect(JSON.parse(early.stdout)).toEqual([]);
    expect((await describeKey('warm')).EncryptionLimit).toBeUndefined();

    expect((await encryptN(xks, 'warm', LIMITS.rotateAfter)).every((r) => r.status === 200)).toBe(true);
    const d = await describeKey('warm');
    expect(d.EncryptionLimit).toMatch(/^version 1: \d+ encryptions reserved, past 60: due for rotation/);
    expect(d.Versions[0].EncryptionsReserved).toBeGreaterThanOrEqual(LIMITS.rotateAfter + 10);
    expect(d.Versions[0].EncryptionsReserved).toBeLessThan(LIMITS.perVersion);
    expect((await reportJson()).code).toBe(2);
    expect(t.logs.filter((l) => l.includes('encryption-rotation-due') && l.includes('"warm"'))).toHaveLength(1);

    const text = await runXks(['keys', 'rotate-due'], { token, configFile: t.configFile });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^rotated warm: version 2 is current \(the version before had \d+ encryptions reserved\)$/m);
    expect((await reportJson()).code).toBe(0);
  });

  it('rotate-due leaves a past version one block of its sum a day after it was replaced, and the current version alone', async () => {
    const at = (ms: number) => openLifecycle(t.proxy.hsm, t.proxy.catalogue, loadConfig(t.configFile), () => new Date(Date.now() + ms));
    const before = await BlockIndex.read(t.proxy.hsm);
    const v1 = before.blocksOf('busy').get(1)!;
    const v2 = before.blocksOf('busy').get(2)!;
    expect(v1.handles.length).toBeGreaterThan(1);
    expect(v1.total).toBe(LIMITS.perVersion);
    expect(await at(3_600_000).rotateDue()).toEqual([]);
    expect((await BlockIndex.read(t.proxy.hsm)).blocksOf('busy').get(1)!.handles).toHaveLength(v1.handles.length);

    expect(await at(25 * 3_600_000).rotateDue()).toEqual([]);
    const after = await BlockIndex.read(t.proxy.hsm);
    expect(after.blocksOf('busy').get(1)).toEqual({ total: LIMITS.perVersion, handles: [expect.any(Buffer)] });
    expect(after.blocksOf('busy').get(2)!.handles).toHaveLength(v2.handles.length);
    expect(after.blocksOf('warm').get(1)!.handles).toHaveLength(1);
    expect((await describeKey('busy')).Versions[0].EncryptionsReserved).toBe(LIMITS.perVersion);
  });
});

describe('two proxy processes on one token', () => {
  let serve: ServeProcess;
  let other: ReturnType<typeof xksClient>;
  let sharedCreatedAt = 0;

  beforeAll(async () => {
    const port = await freePort();
    const file = writeTestConfig(token, { ...CONFIG, listeners: { http: { host: '127.0.0.1', port } } }, 'second.yaml');
    serve = spawnServe(token, file, ['--workers', '1']);
    await serve.waitFor((out) => out.includes('xks proxy listening'), 30_000, 'the second proxy listening');
    other = xksClient(`http://127.0.0.1:${port}`);
  }, 60_000);

  afterAll(async () => {
    serve?.child.kill('SIGTERM');
    await serve?.exited;
  });

  it('share one limit: together they encrypt perVersion times under a version, then both refuse', async () => {
    await t.proxy.lifecycle.create('shared', { usage: { encrypt: true, decrypt: true } });
    sharedCreatedAt = Date.now();
    const served = { here: 0, there: 0 };
    const refused = { here: false, there: false };
    // Turn by turn, a few requests at a time, until both refuse: each claims blocks while the other holds some.
    for (let round = 0; round < 200 && !(refused.here && refused.there); round++) {
      for (const [name, client] of [['here', xks], ['there', other]] as const) {
        if (refused[name]) continue;
        for (const r of await Promise.all([1, 2, 3].map(() => client.encrypt('shared', Buffer.from(name))))) {
          if (r.status === 200) served[name]++;
          else if (r.json?.errorName === 'InvalidStateException') refused[name] = true;
          else expect(r.json?.errorName, r.text).toBe('ThrottlingException'); // a claim that raced the other's, retried
        }
      }
    }
    expect(refused).toEqual({ here: true, there: true });
    expect(served.here).toBeGreaterThan(0);
    expect(served.there).toBeGreaterThan(0);
    // Each refuses only once its own blocks are used up and no more can be reserved: all of the limit was used.
    expect(served.here + served.there).toBe(LIMITS.perVersion);
    expect((await describeKey('shared')).Versions[0].EncryptionsReserved).toBe(LIMITS.perVersion);
    expect(sample(await scrape(opsUrl), 'xks_encryptions_total', 'shared', 1)).toBe(served.here);
  });

  it('purge destroys the counts with the key: a key made again under the id starts from zero', async () => {
    const later = openLifecycle(t.proxy.hsm, t.proxy.catalogue, loadConfig(t.configFile), () => new Date(Date.now() + 8 * 86_400_000));
    await t.proxy.lifecycle.scheduleDeletion('shared', 7);
    expect((await BlockIndex.read(t.proxy.hsm)).objects('shared').length).toBeGreaterThan(0);
    expect(await later.purgeDue()).toEqual(['shared']);
    expect((await BlockIndex.read(t.proxy.hsm)).objects('shared')).toEqual([]);
    expect((await BlockIndex.read(t.proxy.hsm)).objects('busy').length).toBeGreaterThan(0);

    // A version's date has whole seconds (its commit marker): the key made again is younger (in real life by at least
    // the 7-day pending window), which is how a process tells its counts of the old material from the new.
    await sleep(Math.max(0, sharedCreatedAt + 1_100 - Date.now()));
    await t.proxy.lifecycle.create('shared', { usage: { encrypt: true, decrypt: true } });
    const again = await encryptN(xks, 'shared', 8);
    expect(again.map((r) => r.text)).toEqual(again.map(() => expect.stringContaining('"ciphertext"')));
    expect((await describeKey('shared')).Versions[0].EncryptionsReserved).toBeLessThan(LIMITS.perVersion);
  });
});

describe('a new version', () => {
  it("a version's first encrypt reserves one block, not a second one at once", async () => {
    const made = await runXks(['keys', 'create', 'first-block'], { token, configFile: t.configFile });
    expect(made.code, made.stderr).toBe(0);
    expect((await xks.encrypt('first-block', Buffer.from('one'))).status).toBe(200);
    await sleep(300); // a background reservation, if one were started, is done by now
    const blocks = (await BlockIndex.read(t.proxy.hsm)).reserved('first-block');
    // The first block is perBlock / 64, at least 1; a second reservation would have doubled it.
    expect([...blocks.values()]).toEqual([1]);
  });
});
