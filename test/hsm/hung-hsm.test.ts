// An HSM that hangs (a call that does not return for seconds) costs a request at most its budget and never the event
// loop: requests get a named answer in time, /ping answers at once, GetHealthStatus says the HSM is not answering, and
// the request log shows how long requests really took. Hangs come from our emulator's control file (test/emulator).
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

/** GET /ping on the XKS listener, timed. */
function ping(url: string): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    http.get(`${url}/ping`, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 }));
    }).on('error', reject);
  });
}

async function timed<T>(p: Promise<T>): Promise<{ r: T; ms: number }> {
  const t0 = performance.now();
  const r = await p;
  return { r, ms: performance.now() - t0 };
}

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('an HSM whose calls hang', () => {
  let t: TestProxy;
  let control: EmulatorControl;
  const setControl = (text: string) => control.set(text);

  beforeAll(async () => {
    buildEmulator();
    const token = createTestToken('hung-hsm');
    control = emulatorControl(token);
    t = await startProxyOnToken({
      token,
      // The SoftHSM profile's call mode (thread) and defaults: what a proxy on SoftHSM runs with.
      config: { hsm: control.hsm() },
      keys: { foo: { encrypt: true, decrypt: true }, bar: { encrypt: true, decrypt: true } },
    });
  }, 60_000);
  afterAll(async () => {
    await control?.set('');
    await sleep(3_500); // calls still hanging return before the library is finalised
    await t?.stop();
  });

  it('C_Encrypt hanging 3 s: requests answer a named 503 within their budget, /ping and health answer at once', { timeout: 30_000 }, async () => {
    const xks = xksClient(t.httpUrl);
    expect((await xks.encrypt('foo', Buffer.from('before'))).status).toBe(200);
    expect((await xks.health()).json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
    await setControl('hang C_Encrypt 3000\n');

    // More requests than sessions (8): those that find none free are told the HSM does not answer, not "throttled".
    const requests = Array.from({ length: 12 }, () => timed(xks.encrypt('foo', randomBytes(32))));
    await sleep(50);
    const p = await ping(t.httpUrl);
    const answers = await Promise.all(requests);
    const health = await timed(xks.health());

    expect(p.status).toBe(200);
    expect(p.ms, '/ping waits for no HSM call').toBeLessThan(150);
    expect(health.ms, 'GetHealthStatus answers within KMS budget').toBeLessThan(400);
    expect(health.r.json.ekmFleetDetails[0].healthStatus, 'not ACTIVE while the HSM hangs').not.toBe('ACTIVE');
    for (const a of answers) {
      expect(a.r.status, a.r.text).toBe(503);
      expect(a.r.json.errorName).toBe('DependencyTimeoutException');
      expect(a.ms, 'a request costs at most its budget').toBeLessThan(600);
    }
    // The request log says how long each took, as the client saw it (not only the part after the event loop came back).
    const logged = t.logs
      .filter((l) => l.includes('"msg":"xks request"') && l.includes('"status":503'))
      .map((l) => (JSON.parse(l) as { ms: number }).ms);
    expect(logged.length).toBeGreaterThanOrEqual(12);
    for (const ms of logged.slice(-12)) expect(ms).toBeGreaterThan(100);

    await setControl('');
    await sleep(3_200); // the hung call returns; its session is thrown away
    let back = false;
    for (let i = 0; i < 40 && !back; i++) {
      back = (await xks.encrypt('foo', Buffer.from('after'))).status === 200;
      if (!back) await sleep(50);
    }
    expect(back).toBe(true);
  });

  it('C_FindObjectsInit hanging 3 s on a key not yet cached: a named answer in time, and other keys keep serving', { timeout: 30_000 }, async () => {
    const xks = xksClient(t.httpUrl);
    const cached = await xks.encrypt('foo', Buffer.from('cached'));
    expect(cached.status, cached.text).toBe(200);
    await setControl('hang C_FindObjectsInit 3000\n');
    const uncached = timed(xks.metadata('no-such-key-yet'));
    await sleep(50);
    const p = await ping(t.httpUrl);
    expect(p.ms, '/ping waits for no HSM call').toBeLessThan(150);
    const a = await uncached;
    expect(a.ms, 'the request is answered at its deadline').toBeLessThan(600);
    expect(a.r.status, a.r.text).toBe(503);
    await setControl('');
    await sleep(3_200);
  });

  it('a search that is slow but within its budget is not a hung HSM: GetHealthStatus stays ACTIVE', { timeout: 30_000 }, async () => {
    const xks = xksClient(t.httpUrl);
    expect((await xks.health()).json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
    await setControl('hang C_FindObjectsInit 700\n');
    const slow = xks.metadata('not-cached-either');
    await sleep(400);
    expect((await xks.health()).json.ekmFleetDetails[0].healthStatus, 'a search 400 ms in, well within its 2 s').toBe('ACTIVE');
    await slow;
    await setControl('');
  });
});
