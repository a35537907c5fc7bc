// The operations listener of a real proxy (HTTP and HTTPS listeners, a real token): /metrics exposes the named
// series and they move with requests, key state changes and the HSM's health; /health is the deep check (200 ACTIVE,
// 503 when the HSM stalls, 200 again after); /ping; the SigV4 credential age and the certificate's days left.
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import tls from 'node:tls';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { find, httpGet, parseMetrics, scrape, total, type Sample } from '../helpers/ops-metrics.js';
import { STALLABLE_HSM, stallThreadPool } from '../helpers/ops-stall.js';
import { createTestPki, type TestPki } from '../helpers/pki.js';
import { ACCESS_KEY_ID, PREFIX, REGION, SECOND_ACCESS_KEY_ID, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';

const THIRD_ACCESS_KEY_ID = 'THIRDCREDENTIALFROMAFILE23';
const THIRD_SECRET = 'ThirdSecretReadFromAFile0123456789abcdefghij';
const CREATED = '2024-01-15';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const KEY_COUNT_MS = 200;

let token: TestToken;
let pki: TestPki;
let t: TestProxy;
let ops: string;
let xks: ReturnType<typeof xksClient>;

beforeAll(async () => {
  token = createTestToken('metrics');
  pki = createTestPki();
  const conf = join(token.dir, 'conf');
  mkdirSync(conf);
  writeFileSync(join(conf, 'secret3'), THIRD_SECRET, { mode: 0o600 });
  t = await startProxyOnToken({
    token,
    config: {
      listeners: {
        http: { host: '127.0.0.1', port: 0 },
        https: { host: '127.0.0.1', port: 0, certFile: pki.server.cert, keyFile: pki.server.key },
        ops: { host: '127.0.0.1', port: 0 },
      },
      // Every /health runs a fresh deep check, so a stalled HSM shows at once.
      health: { maxAgeMs: 0 },
      // xks_keys is counted in the background at this interval (never at scrape time): short here, so the test sees
      // a change within a few hundred milliseconds, as an operator sees one within hsm.keyCountIntervalMs.
      hsm: { ...STALLABLE_HSM, keyCountIntervalMs: KEY_COUNT_MS },
      prefixes: [
        {
          path: PREFIX,
          region: REGION,
          credentials: [
            { accessKeyId: ACCESS_KEY_ID, secret: { file: 'secret1' }, created: CREATED },
            { accessKeyId: SECOND_ACCESS_KEY_ID, secret: { env: 'XKS_TEST_SECOND_SECRET' } },
            { accessKeyId: THIRD_ACCESS_KEY_ID, secret: { file: 'secret3' } },
          ],
        },
      ],
    },
    keys: { foo: { encrypt: true, decrypt: true }, bar: { encrypt: true, decrypt: true } },
  });
  ops = `http://127.0.0.1:${t.proxy.opsListening!.http!.port}`;
  xks = xksClient(t.httpUrl);
});

afterAll(async () => {
  await t?.stop();
  pki?.cleanup();
});

const value = (samples: Sample[], name: string, labels: Record<string, string> = {}) => {
  const f = find(samples, name, labels);
  expect(f, `${name} ${JSON.stringify(labels)}`).toHaveLength(1);
  return f[0]!.value;
};

describe('the operations listener', () => {
  it('is its own listener, on loopback', () => {
    const at = t.proxy.opsListening!.http!;
    expect(at.address).toBe('127.0.0.1');
    expect(at.port).not.toBe(new URL(t.httpUrl).port);
    expect(at.port).not.toBe(t.proxy.listening.https!.port);
  });

  it('GET /ping answers 200', async () => {
    const r = await httpGet(`${ops}/ping`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text)).toEqual({ status: 'ok' });
  });

  it('GET /health is the deep check: 200, ACTIVE, the token', async () => {
    const r = await httpGet(`${ops}/health`);
    expect(r.status, r.text).toBe(200);
    const h = JSON.parse(r.text);
    expect(h).toMatchObject({ status: 'ACTIVE', token: token.label, serial: token.serial });
    expect(Date.now() - Date.parse(h.checkedAt)).toBeLessThan(10_000);
  });

  it('serves Prometheus text and nothing else', async () => {
    const r = await httpGet(`${ops}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(r.text).toContain('# TYPE xks_requests_total counter');
    expect((await httpGet(`${ops}/keys`)).status).toBe(404);
    // The XKS listener does not serve metrics.
    expect((await httpGet(`${t.httpUrl}/metrics`)).status).toBe(404);
  });

  it('exposes every named series', async () => {
    expect((await xks.encrypt('foo', Buffer.from('warm up'))).status).toBe(200);
    const text = (await httpGet(`${ops}/metrics`)).text;
    for (const [name, type] of [
      ['xks_requests_total', 'counter'],
      ['xks_request_duration_seconds', 'histogram'],
      ['xks_hsm_call_duration_seconds', 'histogram'],
      ['xks_hsm_sessions', 'gauge'],
      ['xks_hsm_session_waits_total', 'counter'],
      ['xks_hsm_call_thread_calls_total', 'counter'],
      ['xks_hsm_call_thread_messages_total', 'counter'],
      ['xks_hsm_up', 'gauge'],
      ['xks_health_check_age_seconds', 'gauge'],
      ['xks_keys', 'gauge'],
      ['xks_keys_count_age_seconds', 'gauge'],
      ['xks_sigv4_credential_age_seconds', 'gauge'],
      ['xks_tls_certificate_expiry_days', 'gauge'],
    ]) {
      expect(text, name).toContain(`# TYPE ${name} ${type}`);
    }
    const s = parseMetrics(text);
    for (const state of ['open', 'idle', 'busy', 'waiting', 'size']) expect(find(s, 'xks_hsm_sessions', { state }), state).toHaveLength(1);
    expect(value(s, 'xks_hsm_sessions', { state: 'size' })).toBe(8);
    expect(find(s, 'xks_hsm_session_waits_total', { result: 'waited' })).toHaveLength(1);
    expect(find(s, 'xks_hsm_session_waits_total', { result: 'refused' })).toHaveLength(1);
    expect(value(s, 'xks_hsm_up', { token: token.label, serial: token.serial })).toBe(1);
    const age = value(s, 'xks_health_check_age_seconds');
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(120);
    // Nothing secret in the exposition.
    expect(text).not.toContain(token.userPin);
    expect(text).not.toContain(THIRD_SECRET);
  });
});

describe('series move with what happens', () => {
  it('requests by operation, outcome and error name; latency histograms of requests and HSM calls', async () => {
    const before = await scrape(ops);
    const encs = [];
    for (let i = 0; i < 5; i++) {
      const r = await xks.encrypt('foo', Buffer.from(`m${i}`));
      expect(r.status).toBe(200);
      encs.push(r.json);
    }
    for (let i = 0; i < 3; i++) expect((await xks.encrypt('no-such-key', Buffer.from('x'))).status).toBe(404);
    for (const e of encs.slice(0, 2)) expect((await xks.decrypt('foo', decryptFields(e))).status).toBe(200);
    const tampered = { ...decryptFields(encs[2]), authenticationTag: Buffer.alloc(16).toString('base64') };
    expect((await xks.decrypt('foo', tampered)).status).toBe(400);
    const after = await scrape(ops);
    const delta = (name: string, labels: Record<string, string>) => total(after, name, labels) - total(before, name, labels);

    expect(delta('xks_requests_total', { operation: 'Encrypt', outcome: 'ok', error: '', prefix: PREFIX })).toBe(5);
    expect(delta('xks_requests_total', { operation: 'Encrypt', outcome: 'error', error: 'KeyNotFoundException', prefix: PREFIX })).toBe(3);
    expect(delta('xks_requests_total', { operation: 'Decrypt', outcome: 'ok' })).toBe(2);
    expect(delta('xks_requests_total', { operation: 'Decrypt', outcome: 'error', error: 'InvalidCiphertextException' })).toBe(1);

    expect(delta('xks_request_duration_seconds_count', { operation: 'Encrypt' })).toBe(8);
    expect(delta('xks_request_duration_seconds_count', { operation: 'Decrypt' })).toBe(3);
    expect(delta('xks_request_duration_seconds_sum', { operation: 'Encrypt' })).toBeGreaterThan(0);
    // Every observation falls in the +Inf bucket; the buckets are cumulative.
    expect(delta('xks_request_duration_seconds_bucket', { operation: 'Encrypt', le: '+Inf' })).toBe(8);
    const buckets = find(after, 'xks_request_duration_seconds_bucket', { operation: 'Encrypt' }).map((b) => b.value);
    expect(buckets).toEqual([...buckets].sort((a, b) => a - b));

    // Successful HSM calls: 5 encrypts, 2 decrypts (the failed one is not timed).
    expect(delta('xks_hsm_call_duration_seconds_count', { call: 'encrypt' })).toBe(5);
    expect(delta('xks_hsm_call_duration_seconds_count', { call: 'decrypt' })).toBe(2);
    expect(delta('xks_hsm_call_duration_seconds_bucket', { call: 'encrypt', le: '+Inf' })).toBe(5);
    // An AES-GCM call on SoftHSM is far under a second.
    expect(delta('xks_hsm_call_duration_seconds_bucket', { call: 'encrypt', le: '1' })).toBe(5);
  });

  it('a failed signature is counted under its error name', async () => {
    const before = await scrape(ops);
    const r = await xks.health({ secret: 'WrongSecretWrongSecretWrongSecretWrongSecret0' });
    expect(r.status).toBe(401);
    const after = await scrape(ops);
    const labels = { operation: 'GetHealthStatus', outcome: 'error', error: 'AuthenticationFailedException' };
    expect(total(after, 'xks_requests_total', labels) - total(before, 'xks_requests_total', labels)).toBe(1);
  });

  it('keys by state follow a disable and an enable, within the count interval', async () => {
    // The count is at most KEY_COUNT_MS (plus one count's search) old: poll for up to ten intervals.
    const counted = async (want: Record<string, number>) => {
      let s = await scrape(ops);
      for (let i = 0; i < 20 && Object.entries(want).some(([state, n]) => total(s, 'xks_keys', { state }) !== n); i++) {
        await sleep(KEY_COUNT_MS / 2);
        s = await scrape(ops);
      }
      return s;
    };
    const s0 = await counted({ Enabled: 2, Disabled: 0 });
    expect(value(s0, 'xks_keys', { state: 'Enabled' })).toBe(2); // foo and bar; never the health-check key
    expect(value(s0, 'xks_keys', { state: 'Disabled' })).toBe(0);
    expect(value(s0, 'xks_keys_count_age_seconds')).toBeLessThan(2);
    await t.proxy.lifecycle.disable('bar');
    const s1 = await counted({ Enabled: 1, Disabled: 1 });
    expect(value(s1, 'xks_keys', { state: 'Enabled' })).toBe(1);
    expect(value(s1, 'xks_keys', { state: 'Disabled' })).toBe(1);
    await t.proxy.lifecycle.create('baz', { usage: { encrypt: true, decrypt: true } });
    await t.proxy.lifecycle.enable('bar');
    const s2 = await counted({ Enabled: 3, Disabled: 0 });
    expect(value(s2, 'xks_keys', { state: 'Enabled' })).toBe(3);
    expect(value(s2, 'xks_keys', { state: 'Disabled' })).toBe(0);
  });

  it('a stalled HSM turns /health to 503 and xks_hsm_up to 0; both come back after', async () => {
    const stall = stallThreadPool(token.dir);
    try {
      let r = await httpGet(`${ops}/health`);
      for (let i = 0; i < 30 && r.status === 200; i++) {
        await sleep(100);
        r = await httpGet(`${ops}/health`);
      }
      expect(r.status, r.text).toBe(503);
      expect(JSON.parse(r.text)).toMatchObject({ status: 'UNAVAILABLE', token: token.label });
      expect(JSON.parse(r.text).detail).toMatch(/did not answer/);
      expect(value(await scrape(ops), 'xks_hsm_up', { token: token.label })).toBe(0);
    } finally {
      await stall.release();
    }
    let r = await httpGet(`${ops}/health`);
    for (let i = 0; i < 50 && r.status !== 200; i++) {
      await sleep(100);
      r = await httpGet(`${ops}/health`);
    }
    expect(r.status, r.text).toBe(200);
    expect(value(await scrape(ops), 'xks_hsm_up', { token: token.label })).toBe(1);
  });
});

describe('what KMS alarms on', () => {
  it('the age of each SigV4 credential: from `created:`, else from its secret file; none for an env secret without a date', async () => {
    const s = await scrape(ops);
    const dated = value(s, 'xks_sigv4_credential_age_seconds', { prefix: PREFIX, access_key_id: ACCESS_KEY_ID });
    const expected = (Date.now() - Date.parse(CREATED)) / 1000;
    expect(Math.abs(dated - expected)).toBeLessThan(120);
    const fromFile = value(s, 'xks_sigv4_credential_age_seconds', { prefix: PREFIX, access_key_id: THIRD_ACCESS_KEY_ID });
    const fileAge = (Date.now() - statSync(join(token.dir, 'conf', 'secret3')).mtimeMs) / 1000;
    expect(Math.abs(fromFile - fileAge)).toBeLessThan(60);
    expect(find(s, 'xks_sigv4_credential_age_seconds', { access_key_id: SECOND_ACCESS_KEY_ID })).toHaveLength(0);
  });

  it('the days left on the HTTPS certificate', async () => {
    const s = await scrape(ops);
    const days = value(s, 'xks_tls_certificate_expiry_days', { listener: 'https' });
    const cert = new X509Certificate(readFileSync(pki.server.cert));
    const expected = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
    expect(Math.abs(days - expected)).toBeLessThan(0.01);
    // The test PKI's server certificate is valid for 2 days.
    expect(days).toBeGreaterThan(1.9);
    expect(days).toBeLessThanOrEqual(2.01);
  });

  it('the days left on the certificate the listener presents, even when the file was replaced without a restart', async () => {
    const served = async () => {
      const socket = tls.connect({ host: '127.0.0.1', port: t.proxy.listening.https!.port, rejectUnauthorized: false });
      await once(socket, 'secureConnect');
      const cert = socket.getPeerCertificate();
      socket.destroy();
      return { days: (Date.parse(cert.valid_to) - Date.now()) / 86_400_000, fingerprint: cert.fingerprint256 };
    };
    const before = await served();
    expect(Math.abs(value(await scrape(ops), 'xks_tls_certificate_expiry_days', { listener: 'https' }) - before.days)).toBeLessThan(0.01);
    // A renewed (here: an expired) certificate written over the file: listener settings need a restart, so the
    // listener still presents the old one, and that is the one KMS sees expire.
    const original = readFileSync(pki.server.cert);
    writeFileSync(pki.server.cert, readFileSync(pki.expired.cert));
    try {
      const now = await served();
      expect(now.fingerprint).toBe(before.fingerprint);
      const days = value(await scrape(ops), 'xks_tls_certificate_expiry_days', { listener: 'https' });
      expect(Math.abs(days - now.days), `gauge ${days} days, the listener presents a certificate with ${now.days} days left`).toBeLessThan(0.01);
    } finally {
      writeFileSync(pki.server.cert, original);
    }
  });
});
