// Anyone can see when the audit trail stops being sealed: /metrics has its series (lines, checkpoints, failures, age of
// the last checkpoint), GetHealthStatus and /health are not ACTIVE while checkpoints fail, and `audit.onFailure` says
// what happens then (serve: answer as usual, DEGRADED; refuse: key operations get a named 503, UNAVAILABLE) until it is
// sealed again. Every refused request, XKS or admin, is on the trail with the access key id tried and the client's
// address. Real servers on our PKCS#11 emulator, whose control file makes C_Sign (the checkpoint MAC) fail.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trailFileName } from '../../src/audit/audit-trail.js';
import { ADMIN_ACCESS_KEY_ID, adminClient, adminConfig } from '../helpers/admin-client.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import { freePort, spawnServe, type ServeProcess } from '../helpers/serve-process.js';
import { httpGet, parseMetrics } from '../helpers/ops-metrics.js';
import { SECOND_ACCESS_KEY_ID, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const count = (text: string, s: string) => text.split(s).length - 1;

describe.skipIf(TOKEN_KIND !== 'softhsm')('the audit trail that cannot be sealed', () => {
  let token: TestToken;
  let control: EmulatorControl;
  const setControl = (text: string) => control.set(text);
  const start = (dir: string, onFailure: 'serve' | 'refuse' | undefined, keys?: Record<string, { encrypt: boolean; decrypt: boolean }>) =>
    startProxyOnToken({
      token,
      cleanupToken: false,
      config: {
        hsm: control.hsm(),
        listeners: { http: { host: '127.0.0.1', port: 0 }, ops: { host: '127.0.0.1', port: 0 } },
        audit: { dir: join(token.dir, dir), checkpointEvery: 2, checkpointSeconds: 1, ...(onFailure ? { onFailure } : {}) },
        admin: adminConfig(),
      },
      ...(keys ? { keys } : {}),
    });
  const opsUrl = (t: TestProxy) => `http://127.0.0.1:${t.proxy.opsListening!.http!.port}`;
  const adminUrl = (t: TestProxy) => `http://127.0.0.1:${t.proxy.adminListening!.http!.port}`;
  const metric = async (t: TestProxy, name: string, labels: Record<string, string> = {}) =>
    parseMetrics((await httpGet(`${opsUrl(t)}/metrics`)).text).find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
  const ekmHealth = async (t: TestProxy) => (await xksClient(t.httpUrl).health()).json.ekmFleetDetails[0].healthStatus as string;
  const trailLines = (dir: string) =>
    readFileSync(join(token.dir, dir, trailFileName('main')), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  async function waitFor(what: string, pred: () => Promise<boolean>, ms = 10_000) {
    for (const end = Date.now() + ms; !(await pred()); ) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(100);
    }
  }

  beforeAll(() => {
    buildEmulator();
    token = createTestToken('audit-health');
    control = emulatorControl(token);
  }, 120_000);
  afterAll(async () => {
    if (control) await setControl('');
    token?.cleanup();
  });

  describe('audit.onFailure: serve (the default)', () => {
    let t: TestProxy;
    beforeAll(async () => {
      t = await start('audit-serve', undefined, { foo: { encrypt: true, decrypt: true } });
    }, 60_000);
    afterAll(async () => {
      await setControl('');
      await t?.stop();
    });

    it('has audit series on /metrics', async () => {
      const xks = xksClient(t.httpUrl);
      for (let i = 0; i < 4; i++) expect((await xks.encrypt('foo', Buffer.from('x'))).status).toBe(200);
      await waitFor('a checkpoint', async () => ((await metric(t, 'xks_audit_checkpoints_total')) ?? 0) >= 2);
      expect(await metric(t, 'xks_audit_lines_total')).toBeGreaterThanOrEqual(6);
      expect(await metric(t, 'xks_audit_checkpoint_failures_total', { stage: 'checkpoint' })).toBe(0);
      expect(await metric(t, 'xks_audit_last_checkpoint_age_seconds')).toBeLessThan(10);
      expect(await metric(t, 'xks_audit_sealing')).toBe(1);
      expect(await ekmHealth(t)).toBe('ACTIVE');
    });

    it('says DEGRADED (GetHealthStatus and /health) while checkpoints fail, keeps serving, and is ACTIVE once sealed again', async () => {
      const xks = xksClient(t.httpUrl);
      await setControl('fail C_Sign CKR_DEVICE_ERROR\n');
      for (let i = 0; i < 3; i++) expect((await xks.encrypt('foo', Buffer.from('while unsealed'))).status).toBe(200);
      await waitFor('a failed checkpoint', async () => ((await metric(t, 'xks_audit_checkpoint_failures_total', { stage: 'checkpoint' })) ?? 0) > 0);
      expect(await ekmHealth(t)).toBe('DEGRADED');
      // The readiness probe keeps the pod in service: it serves (the body says DEGRADED and why).
      const h = await httpGet(`${opsUrl(t)}/health`);
      expect(h.status).toBe(200);
      expect(JSON.parse(h.text)).toMatchObject({ status: 'DEGRADED', detail: expect.stringMatching(/audit trail cannot be sealed/) });
      expect(await metric(t, 'xks_audit_sealing')).toBe(0);
      expect(await metric(t, 'xks_audit_unsealed_lines')).toBeGreaterThan(0);
      expect((await xks.encrypt('foo', Buffer.from('served anyway'))).status).toBe(200);

      const checkpoints = (await metric(t, 'xks_audit_checkpoints_total'))!;
      await setControl('');
      await waitFor('sealed again', async () => (await ekmHealth(t)) === 'ACTIVE');
      expect(await metric(t, 'xks_audit_sealing')).toBe(1);
      expect(await metric(t, 'xks_audit_checkpoints_total')).toBeGreaterThan(checkpoints);
    });

    it('puts refused XKS calls on the trail with the access key id tried and the client address', async () => {
      const xks = xksClient(t.httpUrl);
      // A credential the key store does not know, and a known one with the wrong secret.
      const unknown = await xks.post('keys/foo/metadata', { requestMetadata: { kmsRequestId: 'refused-unknown', kmsOperation: 'DescribeKey' } }, { accessKeyId: 'AKIAUNKNOWNCALLER0001' });
      const wrong = await xks.post('keys/foo/metadata', { requestMetadata: { kmsRequestId: 'refused-secret', kmsOperation: 'DescribeKey' } }, { accessKeyId: SECOND_ACCESS_KEY_ID, secret: 'not-the-secret-0123456789abcdefghijklmnop' });
      expect([unknown.status, wrong.status]).toEqual([401, 401]);
      await t.proxy.audit!.checkpoint();
      await sleep(20);
      const lines = trailLines('audit-serve');
      expect(lines.find((l) => l.kmsRequestId === 'refused-unknown')).toMatchObject({ source: 'xks', outcome: 'error', errorName: 'AuthenticationFailedException', triedAccessKeyId: 'AKIAUNKNOWNCALLER0001', from: '127.0.0.1' });
      expect(lines.find((l) => l.kmsRequestId === 'refused-secret')).toMatchObject({ triedAccessKeyId: SECOND_ACCESS_KEY_ID, from: '127.0.0.1' });
      expect(lines.find((l) => l.kmsRequestId === 'refused-secret').who).toBeUndefined();
      // Accepted calls carry the address too.
      expect(lines.find((l) => l.source === 'xks' && l.outcome === 'ok')).toMatchObject({ from: '127.0.0.1' });
    });

    it('puts refused admin requests on the trail: unsigned, wrong secret, unknown operation', async () => {
      const admin = adminClient(adminUrl(t));
      expect((await admin.call('DisableKey', { KeyId: 'foo' }, { unsigned: true })).status).toBe(403);
      expect((await admin.call('DisableKey', { KeyId: 'foo' }, { secret: 'wrong-secret-0123456789abcdefghijklmnopqrs' })).status).toBe(403);
      expect((await admin.call('NoSuchOperation', {})).status).toBe(400);
      await t.proxy.audit!.checkpoint();
      await sleep(20);
      const admins = trailLines('audit-serve').filter((l) => l.source === 'admin');
      expect(admins.map((l) => [l.errorName, l.operation])).toEqual([
        ['MissingAuthenticationTokenException', 'unknown'],
        ['InvalidSignatureException', 'unknown'],
        ['UnknownOperationException', 'unknown'],
      ]);
      for (const l of admins) expect(l).toMatchObject({ outcome: 'error', from: '127.0.0.1' });
      expect(admins[0].triedAccessKeyId).toBeUndefined();
      expect(admins[1]).toMatchObject({ triedAccessKeyId: ADMIN_ACCESS_KEY_ID });
      expect(admins[1].who).toBeUndefined();
      expect(admins[2]).toMatchObject({ who: ADMIN_ACCESS_KEY_ID });
    });
  });

  describe('audit.onFailure: refuse', () => {
    let t: TestProxy;
    beforeAll(async () => {
      await setControl('');
      t = await start('audit-refuse', 'refuse');
    }, 60_000);
    afterAll(async () => {
      await setControl('');
      await t?.stop();
    });

    it('refuses key operations with a named 503 while the trail cannot be sealed, says UNAVAILABLE, and serves again once sealed', async () => {
      const xks = xksClient(t.httpUrl);
      const admin = adminClient(adminUrl(t));
      expect((await xks.encrypt('foo', Buffer.from('before'))).status).toBe(200);
      await setControl('fail C_Sign CKR_DEVICE_ERROR\n');
      for (let i = 0; i < 2; i++) await xks.encrypt('foo', Buffer.from('x'));
      await waitFor('a failed checkpoint', async () => t.proxy.audit!.status.failing !== undefined);
      const refused = await xks.encrypt('foo', Buffer.from('refused'));
      expect(refused.status, refused.text).toBe(503);
      expect(refused.json).toMatchObject({ errorName: 'DependencyTimeoutException', errorMessage: expect.stringMatching(/audit trail cannot be sealed/) });
      const h = await xks.health();
      expect(h.status).toBe(200);
      expect(h.json.ekmFleetDetails[0].healthStatus).toBe('UNAVAILABLE');
      // It refuses: out of service for the readiness probe.
      const probe = await httpGet(`${opsUrl(t)}/health`);
      expect(probe.status).toBe(503);
      expect(JSON.parse(probe.text)).toMatchObject({ status: 'UNAVAILABLE', detail: expect.stringMatching(/audit trail cannot be sealed/) });
      const a = await admin.call('DisableKey', { KeyId: 'foo' });
      expect(a.status, a.text).toBe(503);
      expect(a.json.__type).toBe('DependencyTimeoutException');
      expect((await admin.describe('foo')).json.__type).toBe('DependencyTimeoutException');

      await setControl('');
      await waitFor('serving again', async () => (await xks.encrypt('foo', Buffer.from('after'))).status === 200);
      expect(await ekmHealth(t)).toBe('ACTIVE');
      expect((await admin.describe('foo')).json.KeyMetadata.KeyState).toBe('Enabled'); // the DisableKey never happened
      // The refused calls are on the trail, sealed.
      await t.proxy.audit!.checkpoint();
      await sleep(20);
      const lines = trailLines('audit-refuse');
      expect(lines.filter((l) => l.errorName === 'DependencyTimeoutException' && l.source === 'xks').length).toBeGreaterThanOrEqual(1);
      expect(lines.some((l) => l.source === 'admin' && l.operation === 'DisableKey' && l.errorName === 'DependencyTimeoutException')).toBe(true);
    });
  });

  describe('under --workers, audit.onFailure: serve', () => {
    let serve: ServeProcess;
    let ops: string;
    let xksUrl: string;
    beforeAll(async () => {
      await setControl('');
      ensureBuilt();
      const [port, opsPort] = [await freePort(), await freePort()];
      xksUrl = `http://127.0.0.1:${port}`;
      ops = `http://127.0.0.1:${opsPort}`;
      const file = writeTestConfig(
        token,
        {
          hsm: control.hsm(),
          listeners: { http: { host: '127.0.0.1', port }, ops: { host: '127.0.0.1', port: opsPort } },
          audit: { dir: join(token.dir, 'audit-workers'), checkpointEvery: 2, checkpointSeconds: 1 },
        },
        'workers.yaml',
      );
      expect((await runXks(['keys', 'create', 'bar'], { token, configFile: file })).code).toBe(0);
      serve = spawnServe(token, file, ['--workers', '2']);
      await serve.waitFor((out) => count(out, '"xks proxy listening"') >= 2, 40_000, 'two workers listening');
      await waitFor('ACTIVE', async () => (await httpGet(`${ops}/health`)).status === 200);
    }, 60_000);
    afterAll(async () => {
      await setControl('');
      serve?.child.kill('SIGTERM');
      await serve?.exited;
    });

    it('answers /health 200 DEGRADED from the primary while a worker cannot seal its trail', async () => {
      await setControl('fail C_Sign CKR_DEVICE_ERROR\n');
      const xks = xksClient(xksUrl);
      let h = await httpGet(`${ops}/health`);
      for (const end = Date.now() + 15_000; JSON.parse(h.text).status !== 'DEGRADED' && Date.now() < end; h = await httpGet(`${ops}/health`)) {
        for (let i = 0; i < 4; i++) await xks.encrypt('bar', Buffer.from('x'));
        await sleep(200);
      }
      expect(JSON.parse(h.text)).toMatchObject({ status: 'DEGRADED' });
      expect(h.status).toBe(200);
      expect(JSON.parse(h.text).workers.some((w: { detail?: string }) => /audit trail cannot be sealed/.test(w.detail ?? ''))).toBe(true);
    }, 30_000);
  });
});
