// Throttling and overload through a real proxy: a per-prefix rate limit answers 429 ThrottlingException to a burst
// and refills; a full HSM queue answers 429 at once (never a 5xx, never a wait); a stalled HSM answers 503
// DependencyTimeoutException within the request budget, and the server recovers once the HSM answers again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseMetrics, total } from '../helpers/ops-metrics.js';
import { STALLABLE_HSM, stallThreadPool } from '../helpers/ops-stall.js';
import { ACCESS_KEY_ID, REGION, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { metadata, signedRequest, xksClient, type XksResponse } from '../helpers/xks-client.js';

const credentials = [{ accessKeyId: ACCESS_KEY_ID, secret: { file: 'secret1' } }];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let token: TestToken;
beforeAll(() => {
  token = createTestToken('throttling');
});
afterAll(() => token?.cleanup());

/** A proxy on this file's token with `config` merged in, and the key `foo` (made by whichever proxy runs first). */
async function start(config: Record<string, unknown> = {}): Promise<TestProxy> {
  const t = await startProxyOnToken({ token, cleanupToken: false, config });
  if (!(await t.proxy.catalogue.resolve('foo'))) await t.proxy.lifecycle.create('foo', { usage: { encrypt: true, decrypt: true } });
  return t;
}

let n = 0;
/** A signed encrypt of `foo` on `prefix`, with its kmsRequestId and the time the client waited. */
async function encrypt(t: TestProxy, prefix: string, opts: { secret?: string } = {}): Promise<XksResponse & { id: string; ms: number }> {
  const id = `thr-${++n}`;
  const started = performance.now();
  const r = await xksClient(t.httpUrl, { prefix }).post(
    'keys/foo/encrypt',
    { requestMetadata: metadata('Encrypt', { kmsRequestId: id }), plaintext: Buffer.from('throttle me').toString('base64'), encryptionAlgorithm: 'AES_GCM' },
    opts,
  );
  return Object.assign(r, { id, ms: performance.now() - started });
}

function statuses(rs: XksResponse[]): Record<number, number> {
  const c: Record<number, number> = {};
  for (const r of rs) c[r.status] = (c[r.status] ?? 0) + 1;
  return c;
}

/** The server's own log line of a request (its `ms` is the time the server held it). */
function logOf(t: TestProxy, id: string): any {
  return t.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'xks request' && l.kmsRequestId === id);
}

describe('a per-prefix rate limit (5 requests/s, burst 10)', () => {
  let t: TestProxy;
  beforeAll(async () => {
    t = await start({
      prefixes: [
        { path: 'limited', region: REGION, credentials, rateLimit: { requestsPerSecond: 5, burst: 10 } },
        { path: 'unlimited', region: REGION, credentials },
      ],
    });
  });
  afterAll(async () => t?.stop());

  it('a burst of 40 gets the burst plus what refilled meanwhile; the rest are 429 ThrottlingException; other prefixes are not limited', async () => {
    await sleep(2_100); // a full bucket
    const started = performance.now();
    const [limited, unlimited] = await Promise.all([
      Promise.all(Array.from({ length: 40 }, () => encrypt(t, 'limited'))),
      Promise.all(Array.from({ length: 40 }, () => encrypt(t, 'unlimited'))),
    ]);
    const seconds = (performance.now() - started) / 1000;
    const ok = limited.filter((r) => r.status === 200).length;
    const throttled = limited.filter((r) => r.status === 429);
    expect(ok + throttled.length, JSON.stringify(statuses(limited))).toBe(40);
    expect(ok).toBeGreaterThanOrEqual(10);
    expect(ok).toBeLessThanOrEqual(10 + Math.ceil(seconds * 5) + 1);
    expect(throttled.length).toBeGreaterThanOrEqual(40 - 10 - Math.ceil(seconds * 5) - 1);
    for (const r of throttled) {
      expect(r.json.errorName).toBe('ThrottlingException');
      expect(r.json.errorMessage).toMatch(/rate/);
      expect(logOf(t, r.id)).toMatchObject({ status: 429, errorName: 'ThrottlingException', prefix: 'limited' });
    }
    expect(statuses(unlimited)).toEqual({ 200: 40 });
  });

  it('tokens refill: throttled at once, after a pause requests succeed again', async () => {
    // Drain the bucket.
    let r: XksResponse;
    for (let i = 0; i < 30 && (r = await encrypt(t, 'limited')).status === 200; i++);
    expect(r!.status).toBe(429);
    expect((await encrypt(t, 'limited')).status).toBe(429);
    await sleep(1_100); // 5 tokens
    for (let i = 0; i < 4; i++) {
      const again = await encrypt(t, 'limited');
      expect(again.status, `request ${i} after the pause: ${again.text}`).toBe(200);
    }
  });

  it('requests that fail SigV4 take no tokens (the limit is checked after the signature)', async () => {
    await sleep(2_100); // a full bucket
    const bad = await Promise.all(
      Array.from({ length: 30 }, () => encrypt(t, 'limited', { secret: 'WrongSecretWrongSecretWrongSecretWrongSecret0' })),
    );
    expect(statuses(bad)).toEqual({ 401: 30 });
    const good = await Promise.all(Array.from({ length: 10 }, () => encrypt(t, 'limited')));
    expect(statuses(good)).toEqual({ 200: 10 });
  });
});

describe('a full HSM queue (sessionPoolSize 1, maxQueue 0)', () => {
  let t: TestProxy;
  const acquireTimeoutMs = 1_000;
  beforeAll(async () => {
    // Budgets far above what a refusal should take: a request that queued would show. Async calls hold their session
    // across turns of the event loop, so concurrent requests contend for it (a call made in place never waits).
    t = await start({
      hsm: { callMode: 'async', sessionPoolSize: 1, maxQueue: 0, acquireTimeoutMs, operationTimeoutMs: 1_500 },
      limits: { requestTimeoutMs: 2_000, bodyBytes: 32 * 1024 },
    });
    expect((await encrypt(t, 'example/uri/path/prefix')).status).toBe(200); // the key's session copy exists
  });
  afterAll(async () => t?.stop());

  it('concurrent requests: some 429 ThrottlingException at once, the others succeed, none 5xx, none queued', async () => {
    const before = t.proxy.hsm.sessionStats;
    const rs = await Promise.all(Array.from({ length: 80 }, () => encrypt(t, 'example/uri/path/prefix')));
    const counts = statuses(rs);
    expect(Object.keys(counts).sort(), JSON.stringify(counts)).toEqual(['200', '429']);
    expect(counts[200]).toBeGreaterThan(0);
    expect(counts[429]).toBeGreaterThan(0);
    const refusals = rs.filter((r) => r.status === 429);
    for (const r of refusals) {
      expect(r.json.errorName).toBe('ThrottlingException');
      const log = logOf(t, r.id);
      expect(log).toMatchObject({ status: 429, hsmError: 'PoolExhausted' });
      // Refused at once, not after waiting for a session (acquireTimeoutMs is 1000 ms).
      expect(log.ms, r.id).toBeLessThan(acquireTimeoutMs / 4);
    }
    const after = t.proxy.hsm.sessionStats;
    expect(after.refused - before.refused).toBe(counts[429]);
    expect(after.waited - before.waited).toBe(0);
    expect(after.open).toBeLessThanOrEqual(1);
    // The metric operators alarm on says the same.
    const m = parseMetrics(await t.proxy.metrics.registry.metrics());
    expect(total(m, 'xks_hsm_session_waits_total', { result: 'refused' })).toBe(after.refused);
    expect(total(m, 'xks_hsm_session_waits_total', { result: 'waited' })).toBe(after.waited);
    expect(total(m, 'xks_requests_total', { operation: 'Encrypt', error: 'ThrottlingException' })).toBe(after.refused);
  });
});

describe('a stalled HSM with one session and a queue (sessionPoolSize 1, acquireTimeoutMs 50)', () => {
  let t: TestProxy;
  beforeAll(async () => {
    t = await start({
      hsm: { ...STALLABLE_HSM, sessionPoolSize: 1, maxQueue: 100, acquireTimeoutMs: 50, operationTimeoutMs: 300 },
      limits: { requestTimeoutMs: 1_000, bodyBytes: 32 * 1024 },
    });
    expect((await encrypt(t, 'example/uri/path/prefix')).status).toBe(200);
  });
  afterAll(async () => t?.stop());

  it('requests that would wait past acquireTimeoutMs get 429 soon after it, not 503 at the budget; the holder gets 503', async () => {
    const stall = stallThreadPool(token.dir);
    try {
      await sleep(50);
      const holder = encrypt(t, 'example/uri/path/prefix');
      // The holder has the only session (its HSM call is stuck behind the blocked pool).
      for (let i = 0; i < 100 && t.proxy.hsm.sessionStats.idle > 0; i++) await sleep(10);
      expect(t.proxy.hsm.sessionStats).toMatchObject({ open: 1, idle: 0 });
      const waiters = await Promise.all(Array.from({ length: 6 }, () => encrypt(t, 'example/uri/path/prefix')));
      for (const r of waiters) {
        expect(r.status, r.text).toBe(429);
        expect(r.json.errorName).toBe('ThrottlingException');
        const log = logOf(t, r.id);
        expect(log.hsmError).toBe('PoolExhausted');
        expect(log.ms).toBeGreaterThanOrEqual(45);
        expect(log.ms).toBeLessThan(300); // well before the 1000 ms budget and the 300 ms HSM timeout
      }
      const h = await holder;
      expect(h.status, h.text).toBe(503);
      expect(h.json.errorName).toBe('DependencyTimeoutException');
      // While the stalled call still holds the only session, new requests are refused quickly too.
      const during = await encrypt(t, 'example/uri/path/prefix');
      expect(during.status).toBe(429);
      expect(logOf(t, during.id).ms).toBeLessThan(300);
    } finally {
      await stall.release();
    }
    await expectRecovered(t, 3);
  });
});

/** Waits until an encrypt succeeds again, then checks that `concurrency` concurrent ones all do. */
async function expectRecovered(t: TestProxy, concurrency = 20, prefix = 'example/uri/path/prefix') {
  const until = Date.now() + 5_000;
  let r = await encrypt(t, prefix);
  while (r.status !== 200 && Date.now() < until) {
    await sleep(100);
    r = await encrypt(t, prefix);
  }
  expect(r.status, r.text).toBe(200);
  const rs = await Promise.all(Array.from({ length: concurrency }, () => encrypt(t, prefix)));
  expect(statuses(rs)).toEqual({ 200: concurrency });
  const s = t.proxy.hsm.sessionStats;
  expect(s.open).toBeLessThanOrEqual(s.size);
  expect(s.waiting).toBe(0);
}

describe('a stalled HSM, default budgets (operationTimeoutMs 200, requestTimeoutMs 240)', () => {
  let t: TestProxy;
  beforeAll(async () => {
    t = await start({ hsm: STALLABLE_HSM });
    expect((await encrypt(t, 'example/uri/path/prefix')).status).toBe(200);
  });
  afterAll(async () => t?.stop());

  it('answers 503 DependencyTimeoutException within the budget, serves /ping meanwhile, and recovers', async () => {
    const stall = stallThreadPool(token.dir);
    try {
      await sleep(50);
      const rs = await Promise.all(Array.from({ length: 5 }, () => encrypt(t, 'example/uri/path/prefix')));
      for (const r of rs) {
        expect(r.status, r.text).toBe(503);
        expect(r.json.errorName).toBe('DependencyTimeoutException');
        // KMS gives up at 250 ms: the proxy answered by then (its own measure), the client soon after.
        const log = logOf(t, r.id);
        expect(log.ms).toBeGreaterThanOrEqual(150);
        expect(log.ms).toBeLessThanOrEqual(240 + 100);
        expect(r.ms).toBeLessThan(240 + 500);
      }
      // The event loop is free: liveness answers while the HSM is stuck.
      const ping = await signedRequest(t.httpUrl, '/ping', '', { method: 'GET', unsigned: true });
      expect(ping.status).toBe(200);
    } finally {
      await stall.release();
    }
    await expectRecovered(t);
  });
});

describe('a stalled HSM with an HSM budget beyond the request budget (operationTimeoutMs 2000, requestTimeoutMs 240)', () => {
  let t: TestProxy;
  beforeAll(async () => {
    t = await start({ hsm: { ...STALLABLE_HSM, operationTimeoutMs: 2_000 } });
    expect((await encrypt(t, 'example/uri/path/prefix')).status).toBe(200);
  });
  afterAll(async () => t?.stop());

  it('the proxy answers 503 itself at the request budget and closes the connection; then recovers', async () => {
    const stall = stallThreadPool(token.dir);
    try {
      await sleep(50);
      const rs = await Promise.all(Array.from({ length: 3 }, () => encrypt(t, 'example/uri/path/prefix')));
      for (const r of rs) {
        expect(r.status, r.text).toBe(503);
        expect(r.json).toMatchObject({ errorName: 'DependencyTimeoutException' });
        expect(r.json.errorMessage).toMatch(/240 ms/);
        expect(r.headers.connection).toBe('close');
        const log = logOf(t, r.id);
        expect(log.ms).toBeGreaterThanOrEqual(235);
        expect(log.ms).toBeLessThanOrEqual(240 + 100);
        expect(r.ms).toBeLessThan(240 + 500);
      }
    } finally {
      await stall.release();
    }
    await expectRecovered(t);
  });
});
