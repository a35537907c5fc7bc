// One log line per incident, not one per failing request (issue 14, finding 17): an HSM that stays gone fails every
// request the same way; the log says so once, then once per window with the count, and each request keeps its own
// request line. And no MaxListenersExceededWarning when warnings come in bursts or health probes overlap (listeners
// piled up on the log stream per warning, and on each worker per /health query). The HSM faults come from our PKCS#11
// emulator's control file (test/emulator), forwarding to SoftHSM.
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { pino } from 'pino';
import { createLogger } from '../../src/obs/logger.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import { freePort, spawnServe, type ServeProcess } from '../helpers/serve-process.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

const events = (logs: string[]) =>
  logs.map((l) => JSON.parse(l) as Record<string, any>).filter((l) => l.level >= 40); // warn and error: not request lines

describe('a burst of warnings on the buffered log stream', () => {
  it('adds no listener per warning while a write is out, and every line is written', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xks-log-'));
    const file = join(dir, 'log');
    // The stream xks serve writes to (src/obs/logger.ts), on a file instead of stdout.
    const dest = pino.destination({ dest: file, sync: false, minLength: 4096 });
    await new Promise((r) => dest.once('ready', r));
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const logger = createLogger('info', dest);
      for (let i = 0; i < 50; i++) logger.warn({ i }, 'the same warning, many times');
      expect(dest.listenerCount('drain')).toBeLessThanOrEqual(1);
      await new Promise((r) => setTimeout(r, 200));
      dest.flushSync();
      expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(50);
      expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
      dest.end();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('an HSM outage in the log', () => {
  let t: TestProxy;
  let control: EmulatorControl;

  beforeAll(async () => {
    buildEmulator();
    const token = createTestToken('incidents');
    control = emulatorControl(token);
    t = await startProxyOnToken({
      token,
      config: {
        hsm: control.hsm(),
        log: { level: 'info', repeatWindowSeconds: 1 },
      },
      keys: { foo: { encrypt: true, decrypt: true } },
    });
  }, 60_000);
  afterAll(async () => {
    await control?.set('');
    await t?.stop();
  });

  it('is one warning when it starts and one line per window with the count, while every request keeps its request line', async () => {
    const xks = xksClient(t.httpUrl);
    expect((await xks.encrypt('foo', Buffer.from('before'))).status).toBe(200);
    const before = t.logs.length;
    await control.set('fail * CKR_DEVICE_REMOVED\n');
    const statuses: number[] = [];
    for (let i = 0; i < 60; i++) statuses.push((await xks.encrypt('foo', Buffer.from('while gone'))).status);
    expect(new Set(statuses)).toEqual(new Set([503]));
    // The window (1 s here) ends: the repeats are reported in one line.
    await new Promise((r) => setTimeout(r, 1_500));
    const during = t.logs.slice(before);
    expect(during.filter((l) => l.includes('"msg":"xks request"') && l.includes('"status":503'))).toHaveLength(60);
    const lines = events(during);
    // Recovery is tried again with backoff (not once per request), each attempt a line or a count in the next one.
    const recoveries = lines.filter((l) => l.msg === 'hsm.recover');
    expect(recoveries.length, JSON.stringify(lines.map((l) => [l.msg, l.repeated]))).toBeGreaterThanOrEqual(1);
    expect(recoveries.length).toBeLessThanOrEqual(4);
    expect(recoveries[0]!.repeated).toBeUndefined();
    const attempts = 1 + recoveries.slice(1).reduce((n, l) => n + (l.repeated as number), 0);
    expect(attempts, 'fewer recoveries than failed requests').toBeLessThan(30);
    expect(lines.filter((l) => l.msg === 'hsm.unavailable'), 'one line says the HSM is away').toHaveLength(1);
    expect(lines.length, JSON.stringify(lines.map((l) => l.msg))).toBeLessThanOrEqual(8);

    // Over: a quiet window closes the incident; the HSM serves again (within the 2 s backoff at most).
    await control.set('');
    let back = false;
    for (let i = 0; i < 60 && !back; i++) {
      await new Promise((r) => setTimeout(r, 50));
      back = (await xks.encrypt('foo', Buffer.from('after'))).status === 200;
    }
    expect(back).toBe(true);
  }, 60_000);
});

describe.skipIf(TOKEN_KIND !== 'softhsm')('xks serve under bursts of warnings and of health probes', () => {
  let token: TestToken;
  let serve: ServeProcess;
  let url: string;
  let opsUrl: string;
  let control: EmulatorControl;

  beforeAll(async () => {
    ensureBuilt();
    buildEmulator();
    token = createTestToken('warning-bursts');
    control = emulatorControl(token);
    const [port, opsPort] = [await freePort(), await freePort()];
    url = `http://127.0.0.1:${port}`;
    opsUrl = `http://127.0.0.1:${opsPort}`;
    const file = writeTestConfig(token, {
      hsm: control.hsm(),
      listeners: { http: { host: '127.0.0.1', port }, ops: { host: '127.0.0.1', port: opsPort } },
    });
    const created = await runXks(['keys', 'create', 'foo'], { token, configFile: file });
    expect(created.code, created.stderr).toBe(0);
    serve = spawnServe(token, file, ['--workers', '2']);
    await serve.waitFor((out) => (out.match(/xks proxy listening/g) ?? []).length === 2, 60_000, 'both workers listening');
  }, 120_000);
  afterAll(async () => {
    await control?.set('');
    if (serve && serve.child.exitCode === null) {
      serve.child.kill('SIGTERM');
      await serve.exited;
    }
    token?.cleanup();
  });

  const get = (u: string) =>
    new Promise<number>((resolve) => {
      http.get(u, { agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      }).on('error', () => resolve(0));
    });

  it('writes no MaxListenersExceededWarning', async () => {
    // 40 readiness probes at once: the primary asks every worker for each.
    const probes = await Promise.all(Array.from({ length: 40 }, () => get(`${opsUrl}/health`)));
    expect(probes.every((s) => s === 200), String(probes)).toBe(true);
    // 300 requests at once while every HSM call fails: each failing request used to write its own warning.
    await control.set('fail * CKR_DEVICE_REMOVED\n');
    const xks = xksClient(url);
    const answers = await Promise.all(Array.from({ length: 300 }, () => xks.encrypt('foo', Buffer.from('x')).then((r) => r.status, () => 0)));
    expect(answers.filter((s) => s === 503).length).toBeGreaterThan(250);
    await control.set('');
    await Promise.all(Array.from({ length: 40 }, () => get(`${opsUrl}/health`)));
    await new Promise((r) => setTimeout(r, 500));
    expect(serve.output()).not.toMatch(/MaxListenersExceededWarning/);
  }, 60_000);
});
