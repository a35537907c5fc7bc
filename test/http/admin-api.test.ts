// The admin API over a real socket, signed by AWS's SigV4 implementation and by curl --aws-sigv4 (service xks-admin):
// every operation end to end (with the XKS listener seeing the changes), KMS-named errors, authentication failures
// and malformed bodies that each change nothing, separate credentials per listener, the log, and the API off by default.
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createAdminHandler } from '../../src/http/admin-handler.js';
import { ImportService } from '../../src/import/import-service.js';
import { createLogger } from '../../src/obs/logger.js';
import { openLifecycle } from '../../src/proxy.js';
import { ADMIN_ACCESS_KEY_ID, ADMIN_REGION, ADMIN_SECRET, adminClient, adminConfig, adminRequest } from '../helpers/admin-client.js';
import { ACCESS_KEY_ID, SECOND_SECRET, SECRET, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, evidence, TOKEN_FACTS, tokenSecrets, type TestToken } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';

const DAY_MS = 86_400_000;
let token: TestToken;

beforeAll(() => {
  token = createTestToken();
});
afterAll(() => token?.cleanup());

describe('with the admin API configured', () => {
  let t: TestProxy;
  let adminUrl: string;
  let admin: ReturnType<typeof adminClient>;
  let xks: ReturnType<typeof xksClient>;

  beforeAll(async () => {
    t = await startProxyOnToken({ token, cleanupToken: false, config: { admin: adminConfig() } });
    adminUrl = `http://127.0.0.1:${t.proxy.adminListening!.http!.port}`;
    admin = adminClient(adminUrl);
    xks = xksClient(t.httpUrl);
  });
  afterAll(async () => t?.stop());

  /** Makes a key through the API and returns its description. */
  async function create(id: string, extra: Record<string, unknown> = {}) {
    const r = await admin.call('CreateKey', { KeyId: id, ...extra });
    expect(r.status, r.text).toBe(200);
    return r.json.KeyMetadata;
  }
  async function described(id: string) {
    const r = await admin.describe(id);
    expect(r.status, r.text).toBe(200);
    return r.json.KeyMetadata;
  }
  function expectError(r: { status: number; json: any; text: string; headers: http.IncomingHttpHeaders }, status: number, type: string, message?: RegExp) {
    expect(r.status, r.text).toBe(status);
    expect(r.json.__type, r.text).toBe(type);
    expect(typeof r.json.message).toBe('string');
    if (message) expect(r.json.message).toMatch(message);
    expect(r.headers['content-type']).toBe('application/x-amz-json-1.1');
  }

  describe('every operation, end to end', () => {
    it('walks a key through its life, and the XKS listener sees each change', async () => {
      const made = await create('life');
      expect(made).toMatchObject({ KeyId: 'life', KeySpec: 'AES_256', KeyUsage: ['ENCRYPT', 'DECRYPT'], KeyState: 'Enabled', Origin: 'HSM', CurrentVersion: 1 });
      expect(made.Versions).toHaveLength(1);
      expect(made.Versions[0]).toMatchObject({ Local: evidence(true), NeverExtractable: evidence(true), Sensitive: true, Extractable: false });
      expect(await described('life')).toEqual(made);
      expect((await xks.metadata('life')).json.keyStatus).toBe('ENABLED');
      const v1 = await xks.encrypt('life', Buffer.from('before rotation'));
      expect(v1.status, v1.text).toBe(200);

      const disabled = await admin.call('DisableKey', { KeyId: 'life' });
      expect(disabled.status, disabled.text).toBe(200);
      expect(disabled.json.KeyMetadata.KeyState).toBe('Disabled');
      const md = await xks.metadata('life');
      expect(md.status).toBe(200);
      expect(md.json.keyStatus).toBe('DISABLED');
      expect((await xks.encrypt('life', Buffer.from('x'))).json.errorName).toBe('InvalidStateException');

      const enabled = await admin.call('EnableKey', { KeyId: 'life' });
      expect(enabled.status, enabled.text).toBe(200);
      expect(enabled.json.KeyMetadata.KeyState).toBe('Enabled');
      expect((await xks.metadata('life')).json.keyStatus).toBe('ENABLED');

      const rotated = await admin.call('RotateKeyOnDemand', { KeyId: 'life' });
      expect(rotated.status, rotated.text).toBe(200);
      expect(rotated.json).toEqual({ KeyId: 'life', Version: 2 });
      const after = await described('life');
      expect(after.CurrentVersion).toBe(2);
      expect(after.Versions.map((v: { Version: number }) => v.Version)).toEqual([1, 2]);
      expect(after.LastRotationDate).toBeDefined();
      // Old ciphertexts still decrypt; new ones are under version 2.
      const old = await xks.decrypt('life', decryptFields(v1.json));
      expect(old.status, old.text).toBe(200);
      expect(Buffer.from(old.json.plaintext, 'base64').toString()).toBe('before rotation');
      expect(Buffer.from((await xks.encrypt('life', Buffer.from('y'))).json.ciphertextMetadata, 'base64')).toEqual(Buffer.from([1, 0, 0, 0, 2]));

      const on = await admin.call('EnableKeyRotation', { KeyId: 'life', RotationPeriodInDays: 180 });
      expect(on.status, on.text).toBe(200);
      expect(on.json.KeyMetadata.RotationPeriodInDays).toBe(180);
      expect(Date.parse(on.json.KeyMetadata.NextRotationDate)).toBeGreaterThan(Date.now() + 179 * DAY_MS);
      const status = await admin.call('GetKeyRotationStatus', { KeyId: 'life' });
      expect(status.json).toMatchObject({ KeyId: 'life', KeyRotationEnabled: true, RotationPeriodInDays: 180, CurrentVersion: 2 });
      const byDefault = await admin.call('EnableKeyRotation', { KeyId: 'life' });
      expect(byDefault.json.KeyMetadata.RotationPeriodInDays).toBe(365); // KMS's default
      const off = await admin.call('DisableKeyRotation', { KeyId: 'life' });
      expect(off.status, off.text).toBe(200);
      expect(off.json.KeyMetadata.RotationPeriodInDays).toBeUndefined();
      expect((await admin.call('GetKeyRotationStatus', { KeyId: 'life' })).json).toEqual({ KeyId: 'life', KeyRotationEnabled: false, CurrentVersion: 2 });

      const scheduled = await admin.call('ScheduleKeyDeletion', { KeyId: 'life', PendingWindowInDays: 7 });
      expect(scheduled.status, scheduled.text).toBe(200);
      expect(Object.keys(scheduled.json).sort()).toEqual(['DeletionDate', 'KeyId', 'KeyState', 'PendingWindowInDays']);
      expect(scheduled.json).toMatchObject({ KeyId: 'life', KeyState: 'PendingDeletion', PendingWindowInDays: 7 });
      expect(Math.abs(Date.parse(scheduled.json.DeletionDate) - (Date.now() + 7 * DAY_MS))).toBeLessThan(60_000);
      expect((await xks.metadata('life')).json.keyStatus).toBe('DISABLED');
      expect((await described('life')).DeletionDate).toBe(scheduled.json.DeletionDate);

      const cancelled = await admin.call('CancelKeyDeletion', { KeyId: 'life' });
      expect(cancelled.status, cancelled.text).toBe(200);
      expect(cancelled.json).toEqual({ KeyId: 'life', KeyState: 'Disabled' }); // as in KMS
      const back = await described('life');
      expect(back.KeyState).toBe('Disabled');
      expect(back.DeletionDate).toBeUndefined();
      expect(back.CurrentVersion).toBe(2);
    });

    it('creates keys with the options the CLI has: usage, origin, rotation period, exportable', async () => {
      // Exportable only where the token can restrict wrapping to a trusted KEK (not NSS: its profile's wrapWithTrusted).
      const exportable = TOKEN_FACTS.wrapWithTrusted;
      const enc = await create('opt-encrypt-only', { KeyUsage: ['ENCRYPT'], RotationPeriodInDays: 90, Exportable: exportable });
      expect(enc).toMatchObject({ KeyUsage: ['ENCRYPT'], RotationPeriodInDays: 90, Exportable: exportable, CurrentVersion: 1 });
      expect(enc.Versions[0]).toMatchObject({ Encrypt: true, Decrypt: false });
      expect((await xks.metadata('opt-encrypt-only')).json.keyUsage).toEqual(['ENCRYPT']);
      const none = await create('opt-none', { KeyUsage: [] });
      expect(none.KeyUsage).toEqual([]);
      const imported = await create('opt-external', { Origin: 'EXTERNAL' });
      expect(imported).toMatchObject({ Origin: 'EXTERNAL', KeyState: 'PendingImport' });
      expect(imported.CurrentVersion).toBeUndefined();
      expect(imported.Versions).toEqual([]);
    });

    it('lists keys in pages, without the health-check key', async () => {
      for (const id of ['page-a', 'page-b', 'page-c']) await create(id);
      const all = await admin.call('ListKeys');
      expect(all.status, all.text).toBe(200);
      expect(all.json.Truncated).toBe(false);
      const ids = all.json.Keys.map((k: { KeyId: string }) => k.KeyId);
      expect(ids).toEqual(expect.arrayContaining(['page-a', 'page-b', 'page-c', 'life']));
      expect(ids).toEqual([...ids].sort());
      expect(ids).not.toContain('xks-proxy-health-check');
      expect(all.json.Keys.find((k: { KeyId: string }) => k.KeyId === 'life')).toEqual({ KeyId: 'life', KeyState: 'Disabled' });

      const seen: string[] = [];
      let marker: string | undefined;
      for (let i = 0; i < 50; i++) {
        const page = await admin.call('ListKeys', { Limit: 2, ...(marker ? { Marker: marker } : {}) });
        expect(page.status, page.text).toBe(200);
        expect(page.json.Keys.length).toBeLessThanOrEqual(2);
        seen.push(...page.json.Keys.map((k: { KeyId: string }) => k.KeyId));
        if (!page.json.Truncated) break;
        marker = page.json.NextMarker;
      }
      expect(seen).toEqual(ids);
    });

    it('RotateDueKeys and PurgeDueKeys act only on what is due (real clock: nothing yet)', async () => {
      const rotate = await admin.call('RotateDueKeys');
      expect(rotate.status, rotate.text).toBe(200);
      expect(rotate.json).toEqual({ Rotations: [] });
      const purge = await admin.call('PurgeDueKeys', {});
      expect(purge.status, purge.text).toBe(200);
      expect(purge.json).toEqual({ DeletedKeyIds: [] });
    });

    it('RotateDueKeys and PurgeDueKeys rotate and destroy what is due (a lifecycle with a clock 400 days ahead)', async () => {
      await create('due-rotate', { RotationPeriodInDays: 90 });
      await create('due-purge');
      expect((await admin.call('ScheduleKeyDeletion', { KeyId: 'due-purge', PendingWindowInDays: 7 })).status).toBe(200);

      // The same handler over a lifecycle whose clock is 400 days ahead (SigV4 still checks the real clock).
      const lifecycle = openLifecycle(t.proxy.hsm, t.proxy.catalogue, loadConfig(t.configFile), () => new Date(Date.now() + 400 * DAY_MS));
      const server = http.createServer(
        createAdminHandler({
          lifecycle,
          imports: new ImportService(t.proxy.hsm, t.proxy.catalogue, lifecycle),
          region: ADMIN_REGION,
          credentials: new Map([[ADMIN_ACCESS_KEY_ID, ADMIN_SECRET]]),
          logger: createLogger('silent'),
        }),
      );
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const later = adminClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
        const rotate = await later.call('RotateDueKeys');
        expect(rotate.status, rotate.text).toBe(200);
        expect(rotate.json.Rotations).toContainEqual({ KeyId: 'due-rotate', Version: 2 });
        expect(rotate.json.Rotations.map((r: { KeyId: string }) => r.KeyId)).not.toContain('due-purge');
        const purge = await later.call('PurgeDueKeys');
        expect(purge.status, purge.text).toBe(200);
        expect(purge.json.DeletedKeyIds).toEqual(['due-purge']);
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
      expect((await described('due-rotate')).CurrentVersion).toBe(2);
      expectError(await admin.describe('due-purge'), 400, 'NotFoundException');
    });
  });

  describe('KMS-named errors that change nothing', () => {
    beforeAll(async () => {
      await create('steady');
      await create('doomed');
      expect((await admin.call('ScheduleKeyDeletion', { KeyId: 'doomed' })).json.PendingWindowInDays).toBe(30);
    });

    it('an unknown key is NotFoundException (400, as KMS)', async () => {
      for (const op of ['DescribeKey', 'EnableKey', 'DisableKey', 'RotateKeyOnDemand', 'ScheduleKeyDeletion', 'CancelKeyDeletion', 'EnableKeyRotation', 'DisableKeyRotation', 'GetKeyRotationStatus']) {
        expectError(await admin.call(op, { KeyId: 'no-such-key' }), 400, 'NotFoundException', /no-such-key/);
      }
      const list = await admin.call('ListKeys');
      expect(list.json.Keys.map((k: { KeyId: string }) => k.KeyId)).not.toContain('no-such-key');
    });

    it.each([
      ['a space', 'bad key'],
      ['a slash', 'a/b'],
      ['129 characters', 'k'.repeat(129)],
      ['the empty string', ''],
    ])('a key id with %s is ValidationException naming KeyId', async (_what, id) => {
      expectError(await admin.call('CreateKey', { KeyId: id }), 400, 'ValidationException', /KeyId/);
      expectError(await admin.describe(id), 400, 'ValidationException', /KeyId/);
    });

    it('the health-check key is out of reach', async () => {
      expectError(await admin.describe('xks-proxy-health-check'), 400, 'ValidationException', /reserved/);
      expectError(await admin.call('ScheduleKeyDeletion', { KeyId: 'xks-proxy-health-check', PendingWindowInDays: 7 }), 400, 'ValidationException');
      expect((await xks.health()).json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
    });

    it.each([6, 31, 'x', 7.5, null, '7'])('PendingWindowInDays %j is ValidationException, and the key stays as it was', async (days) => {
      const before = await described('steady');
      expectError(await admin.call('ScheduleKeyDeletion', { KeyId: 'steady', PendingWindowInDays: days }), 400, 'ValidationException', /PendingWindowInDays.*7 to 30/);
      expect(await described('steady')).toEqual(before);
      expect(before.KeyState).toBe('Enabled');
    });

    it.each([89, 2561, 365.5, 'yearly'])('RotationPeriodInDays %j is ValidationException, on EnableKeyRotation and CreateKey', async (days) => {
      const before = await described('steady');
      expectError(await admin.call('EnableKeyRotation', { KeyId: 'steady', RotationPeriodInDays: days }), 400, 'ValidationException', /RotationPeriodInDays.*90 to 2560/);
      expect(await described('steady')).toEqual(before);
      expect(before.RotationPeriodInDays).toBeUndefined();
      expectError(await admin.call('CreateKey', { KeyId: 'never-made', RotationPeriodInDays: days }), 400, 'ValidationException', /RotationPeriodInDays/);
      expectError(await admin.describe('never-made'), 400, 'NotFoundException');
    });

    it('creating an existing key is AlreadyExistsException and leaves it alone', async () => {
      const before = await described('steady');
      expectError(await admin.call('CreateKey', { KeyId: 'steady', KeyUsage: ['DECRYPT'] }), 400, 'AlreadyExistsException', /steady/);
      expect(await described('steady')).toEqual(before);
    });

    it('enabling, disabling or rotating a key pending deletion is KMSInvalidStateException', async () => {
      const before = await described('doomed');
      expect(before.KeyState).toBe('PendingDeletion');
      for (const [op, body] of [
        ['EnableKey', {}],
        ['DisableKey', {}],
        ['RotateKeyOnDemand', {}],
        ['EnableKeyRotation', { RotationPeriodInDays: 90 }],
        ['ScheduleKeyDeletion', { PendingWindowInDays: 7 }],
      ] as const) {
        expectError(await admin.call(op, { KeyId: 'doomed', ...body }), 400, 'KMSInvalidStateException', /doomed/);
      }
      expect(await described('doomed')).toEqual(before);
    });

    it('cancelling a deletion that is not scheduled, or rotating a disabled key, is KMSInvalidStateException', async () => {
      expectError(await admin.call('CancelKeyDeletion', { KeyId: 'steady' }), 400, 'KMSInvalidStateException');
      await create('off-key');
      await admin.call('DisableKey', { KeyId: 'off-key' });
      const before = await described('off-key');
      expectError(await admin.call('RotateKeyOnDemand', { KeyId: 'off-key' }), 400, 'KMSInvalidStateException', /Disabled/);
      expect(await described('off-key')).toEqual(before);
    });

    it('a rotation schedule for a key of imported material is UnsupportedOperationException; nothing is made', async () => {
      expectError(await admin.call('CreateKey', { KeyId: 'ext-rot', Origin: 'EXTERNAL', RotationPeriodInDays: 90 }), 400, 'UnsupportedOperationException');
      expectError(await admin.describe('ext-rot'), 400, 'NotFoundException');
    });

    it.each([
      ['a missing KeyId', 'DescribeKey', {}, /KeyId is required/],
      ['a number for KeyId', 'DescribeKey', { KeyId: 42 }, /KeyId/],
      ['an unknown field', 'ScheduleKeyDeletion', { KeyId: 'steady', PendingWindowDays: 7 }, /"PendingWindowDays".*PendingWindowInDays/],
      ['a field on an operation without fields', 'PurgeDueKeys', { KeyId: 'steady' }, /PurgeDueKeys has no field "KeyId"/],
      ['a usage KMS does not know', 'CreateKey', { KeyId: 'never-made', KeyUsage: ['SIGN_VERIFY'] }, /KeyUsage/],
      ['a usage as a string', 'CreateKey', { KeyId: 'never-made', KeyUsage: 'ENCRYPT_DECRYPT' }, /KeyUsage/],
      ['a usage twice', 'CreateKey', { KeyId: 'never-made', KeyUsage: ['ENCRYPT', 'ENCRYPT'] }, /KeyUsage/],
      ['an unknown origin', 'CreateKey', { KeyId: 'never-made', Origin: 'AWS_KMS' }, /Origin/],
      ['Exportable as a string', 'CreateKey', { KeyId: 'never-made', Exportable: 'yes' }, /Exportable/],
      ['a Limit of 0', 'ListKeys', { Limit: 0 }, /Limit/],
    ])('%s is ValidationException', async (_what, op, body, message) => {
      expectError(await admin.call(op, body), 400, 'ValidationException', message);
      expectError(await admin.describe('never-made'), 400, 'NotFoundException');
      expect((await described('steady')).KeyState).toBe('Enabled');
    });

    it.each([
      ['an operation this API does not have', 'XksAdmin.DeleteEverything'],
      ["KMS's own target prefix", 'TrentService.DescribeKey'],
      ['no prefix', 'DescribeKey'],
      ['no X-Amz-Target', null],
    ])('%s is UnknownOperationException', async (_what, target) => {
      expectError(await admin.call('DescribeKey', { KeyId: 'steady' }, { target }), 400, 'UnknownOperationException', /XksAdmin/);
    });
  });

  describe('authentication failures are refused and change nothing', () => {
    const BODY = { KeyId: 'guarded', PendingWindowInDays: 7 };
    beforeAll(async () => {
      await create('guarded');
    });

    async function expectUnchanged() {
      const d = await described('guarded');
      expect(d.KeyState).toBe('Enabled');
      expect(d.DeletionDate).toBeUndefined();
    }

    it.each([
      ['no Authorization', { unsigned: true }, 'MissingAuthenticationTokenException', /not signed.*xks-admin/],
      ['an Authorization that is not SigV4', { unsigned: true, unsignedHeaders: { authorization: 'Basic YWRtaW46YWRtaW4=' } }, 'IncompleteSignatureException', /AWS4-HMAC-SHA256/],
      ['a wrong secret', { secret: 'not-the-admin-secret-0123456789abcdefghij' }, 'InvalidSignatureException', /does not match/],
      ['an unknown access key id', { accessKeyId: 'AKIAUNKNOWNADMINKEY1' }, 'InvalidSignatureException', /does not match/],
      ["a key store's credential, service xks-admin", { accessKeyId: ACCESS_KEY_ID, secret: SECRET }, 'InvalidSignatureException', /does not match/],
      ["a key store's credential and service", { accessKeyId: ACCESS_KEY_ID, secret: SECRET, service: 'kms-xks-proxy' }, 'InvalidSignatureException', /xks-admin/],
      ['service kms-xks-proxy instead of xks-admin', { service: 'kms-xks-proxy' }, 'InvalidSignatureException', /service xks-admin/],
      ['another region', { region: 'eu-west-1' }, 'InvalidSignatureException', /region us-east-1/],
      ['an x-amz-date 10 minutes old', { signingDate: new Date(Date.now() - 10 * 60_000) }, 'InvalidSignatureException', /clock/],
      ['an x-amz-date 10 minutes ahead', { signingDate: new Date(Date.now() + 10 * 60_000) }, 'InvalidSignatureException', /clock/],
      ['a body changed after signing', { bodyAfterSigning: JSON.stringify({ ...BODY, PendingWindowInDays: 8 }) }, 'InvalidSignatureException', /does not match/],
      ['an operation changed after signing', { target: 'XksAdmin.DescribeKey', unsignedHeaders: { 'x-amz-target': 'XksAdmin.ScheduleKeyDeletion' } }, 'InvalidSignatureException', /does not match/],
      ['an X-Amz-Target outside the signature', { target: null, unsignedHeaders: { 'x-amz-target': 'XksAdmin.ScheduleKeyDeletion' } }, 'IncompleteSignatureException', /X-Amz-Target/],
    ] as const)('%s', async (_what, opts, type, message) => {
      const r = await admin.call('ScheduleKeyDeletion', BODY, opts);
      expectError(r, 403, type, message);
      await expectUnchanged();
      // The log says which check failed; the client's message does not say whether the access key exists.
      const line = t.logs.map((l) => JSON.parse(l)).find((l) => l.requestId === r.headers['x-amzn-requestid']);
      expect(line).toMatchObject({ msg: 'admin request', outcome: 'error', status: 403, errorName: type });
      expect(line.operation).toBeUndefined();
    });

    it('the same request, signed properly, goes through', async () => {
      const r = await admin.call('ScheduleKeyDeletion', BODY);
      expect(r.status, r.text).toBe(200);
      expect((await admin.call('CancelKeyDeletion', { KeyId: 'guarded' })).status).toBe(200);
      expect((await admin.call('EnableKey', { KeyId: 'guarded' })).status).toBe(200);
      await expectUnchanged();
    });
  });

  describe('malformed requests are named 4xx and change nothing', () => {
    beforeAll(async () => {
      await create('sturdy');
    });
    async function expectUnchanged() {
      const d = await described('sturdy');
      expect(d.KeyState).toBe('Enabled');
      expect(d.DeletionDate).toBeUndefined();
    }

    it.each([
      ['not JSON', '{"KeyId": "sturdy", PendingWindowInDays: 7', /not valid JSON/],
      ['a JSON array', JSON.stringify([{ KeyId: 'sturdy', PendingWindowInDays: 7 }]), /JSON object/],
      ['JSON null', 'null', /JSON object/],
      ['a JSON string', '"sturdy"', /JSON object/],
      ['a number for KeyId', JSON.stringify({ KeyId: 7, PendingWindowInDays: 7 }), /KeyId/],
      ['a string for PendingWindowInDays', JSON.stringify({ KeyId: 'sturdy', PendingWindowInDays: '7' }), /PendingWindowInDays/],
      ['an object for KeyId', JSON.stringify({ KeyId: { id: 'sturdy' }, PendingWindowInDays: 7 }), /KeyId/],
    ])('%s is ValidationException', async (_what, body, message) => {
      expectError(await admin.call('ScheduleKeyDeletion', body), 400, 'ValidationException', message);
      await expectUnchanged();
    });

    it('a Content-Type that is not JSON is ValidationException', async () => {
      expectError(await admin.call('ScheduleKeyDeletion', { KeyId: 'sturdy', PendingWindowInDays: 7 }, { contentType: 'text/plain' }), 400, 'ValidationException', /Content-Type/);
      await expectUnchanged();
      // application/json, with parameters, is fine (curl users type it).
      const ok = await admin.call('DescribeKey', { KeyId: 'sturdy' }, { contentType: 'application/json; charset=utf-8' });
      expect(ok.status, ok.text).toBe(200);
    });

    it('an empty body is {} (ListKeys from curl -X POST without -d)', async () => {
      const r = await admin.call('ListKeys', '', { contentType: null });
      expect(r.status, r.text).toBe(200);
      expectError(await admin.call('DescribeKey', '', { contentType: null }), 400, 'ValidationException', /KeyId is required/);
    });

    it('a body over the limit is RequestEntityTooLargeException (413) and the connection is closed', async () => {
      const huge = JSON.stringify({ KeyId: 'sturdy', PendingWindowInDays: 7, Padding: 'x'.repeat(100_000) });
      const r = await admin.call('ScheduleKeyDeletion', huge);
      expectError(r, 413, 'RequestEntityTooLargeException', /16384 bytes/);
      expect(r.headers.connection).toBe('close');
      await expectUnchanged();
    });

    it('another path is InvalidUriPathException (404), another method MethodNotAllowedException (405)', async () => {
      expectError(await admin.call('ScheduleKeyDeletion', { KeyId: 'sturdy' }, { path: '/keys/sturdy' }), 404, 'InvalidUriPathException');
      const get = await admin.call('DescribeKey', '', { method: 'GET', contentType: null });
      expectError(get, 405, 'MethodNotAllowedException');
      expect(get.headers.allow).toBe('POST');
      await expectUnchanged();
    });
  });

  describe('two listeners, two sets of credentials', () => {
    beforeAll(async () => {
      await create('shared-key');
    });

    it('listens on loopback only', () => {
      expect(t.proxy.adminListening!.http!.address).toBe('127.0.0.1');
      expect(t.proxy.adminListening!.http!.port).not.toBe(t.proxy.listening.http!.port);
    });

    it('admin credentials do not work on the XKS listener', async () => {
      const asAdmin = xksClient(t.httpUrl, { accessKeyId: ADMIN_ACCESS_KEY_ID, secret: ADMIN_SECRET });
      const r = await asAdmin.metadata('shared-key');
      expect(r.status, r.text).toBe(401);
      expect(r.json.errorName).toBe('AuthenticationFailedException');
      expect((await asAdmin.metadata('shared-key', { service: 'xks-admin' })).status).toBe(401);
      expect((await xks.metadata('shared-key')).status).toBe(200);
    });

    it('the XKS listener does not serve the admin API, signed or not', async () => {
      const r = await adminRequest(t.httpUrl, 'DisableKey', { KeyId: 'shared-key' });
      expect(r.status).toBe(404);
      expect(r.json.errorName).toBe('InvalidUriPathException');
      expect((await described('shared-key')).KeyState).toBe('Enabled');
    });

    it('XKS credentials do not work on the admin listener', async () => {
      for (const service of ['xks-admin', 'kms-xks-proxy']) {
        for (const [accessKeyId, secret] of [[ACCESS_KEY_ID, SECRET]]) {
          expectError(await admin.call('DisableKey', { KeyId: 'shared-key' }, { accessKeyId, secret, service }), 403, 'InvalidSignatureException');
        }
      }
      expect((await described('shared-key')).KeyState).toBe('Enabled');
    });
  });

  describe('reload', () => {
    const NEW_ID = 'AKIAXKSADMINROTATED2';
    const NEW_SECRET = 'rotated-admin-secret-0123456789-abcdefghijklmnop';
    afterAll(() => t.proxy.reload(loadConfig(t.configFile)));

    it('takes new admin credentials; the removed ones are refused at once', async () => {
      process.env.XKS_TEST_ADMIN_SECRET_2 = NEW_SECRET;
      const file = writeTestConfig(token, {
        admin: { ...adminConfig(), credentials: [{ accessKeyId: NEW_ID, secret: { env: 'XKS_TEST_ADMIN_SECRET_2' } }] },
      }, 'rotated.yaml');
      t.proxy.reload(loadConfig(file));
      expectError(await admin.call('ListKeys'), 403, 'InvalidSignatureException');
      expect((await admin.call('ListKeys', {}, { accessKeyId: NEW_ID, secret: NEW_SECRET })).status).toBe(200);
      // A config without the admin section refuses every admin request until the restart closes the listener.
      t.proxy.reload(loadConfig(writeTestConfig(token, {}, 'no-admin.yaml')));
      expectError(await admin.call('ListKeys', {}, { accessKeyId: NEW_ID, secret: NEW_SECRET }), 403, 'InvalidSignatureException');
      t.proxy.reload(loadConfig(t.configFile));
      expect((await admin.call('ListKeys')).status).toBe(200);
    });
  });

  describe('curl --aws-sigv4 "aws:amz:us-east-1:xks-admin"', () => {
    async function curl(operation: string, body: unknown, opts: { user?: string; service?: string } = {}) {
      const args = [
        `${adminUrl}/`, '--silent', '--show-error', '--max-time', '10',
        '--aws-sigv4', `aws:amz:us-east-1:${opts.service ?? 'xks-admin'}`,
        '--user', opts.user ?? `${ADMIN_ACCESS_KEY_ID}:${ADMIN_SECRET}`,
        '-H', 'Content-Type: application/x-amz-json-1.1',
        '-H', `X-Amz-Target: XksAdmin.${operation}`,
        '--data-binary', JSON.stringify(body),
        '--write-out', '\n%{http_code}',
      ];
      const r = await promisify(execFile)('curl', args);
      const lines = r.stdout.split('\n');
      const status = Number(lines.pop());
      return { status, json: JSON.parse(lines.join('\n')), stderr: r.stderr };
    }

    it('creates and describes a key', async () => {
      const made = await curl('CreateKey', { KeyId: 'curl-key', KeyUsage: ['ENCRYPT', 'DECRYPT'] });
      expect(made.stderr).toBe('');
      expect(made.status).toBe(200);
      expect(made.json.KeyMetadata).toMatchObject({ KeyId: 'curl-key', KeyState: 'Enabled', CurrentVersion: 1 });
      const d = await curl('DescribeKey', { KeyId: 'curl-key' });
      expect(d.status).toBe(200);
      expect(d.json.KeyMetadata).toEqual(made.json.KeyMetadata);
      expect((await xks.metadata('curl-key')).json.keyStatus).toBe('ENABLED');
    });

    it('is refused with the XKS service name or the XKS credential', async () => {
      const wrongService = await curl('DisableKey', { KeyId: 'curl-key' }, { service: 'kms-xks-proxy' });
      expect(wrongService.status).toBe(403);
      expect(wrongService.json.__type).toBe('InvalidSignatureException');
      const xksUser = await curl('DisableKey', { KeyId: 'curl-key' }, { user: `${ACCESS_KEY_ID}:${SECRET}` });
      expect(xksUser.status).toBe(403);
      expect((await described('curl-key')).KeyState).toBe('Enabled');
    });
  });

  describe('the log', () => {
    it('has one line per admin request: operation, key id, access key id, outcome or error name, duration', async () => {
      await create('logged');
      const ok = await admin.call('DisableKey', { KeyId: 'logged' });
      const failed = await admin.call('ScheduleKeyDeletion', { KeyId: 'logged', PendingWindowInDays: 6 });
      const lines = t.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'admin request');
      const okLines = lines.filter((l) => l.requestId === ok.headers['x-amzn-requestid']);
      expect(okLines).toHaveLength(1);
      expect(okLines[0]).toMatchObject({ operation: 'DisableKey', keyId: 'logged', accessKeyId: ADMIN_ACCESS_KEY_ID, outcome: 'ok', status: 200 });
      expect(typeof okLines[0].ms).toBe('number');
      const failedLine = lines.find((l) => l.requestId === failed.headers['x-amzn-requestid']);
      expect(failedLine).toMatchObject({
        operation: 'ScheduleKeyDeletion',
        keyId: 'logged',
        accessKeyId: ADMIN_ACCESS_KEY_ID,
        outcome: 'error',
        status: 400,
        errorName: 'ValidationException',
      });
      expect(t.logs.some((l) => l.includes('"admin API listening"'))).toBe(true);
    });

    it('never holds a secret: admin, key store or PIN', () => {
      const all = t.logs.join('\n');
      expect(t.logs.filter((l) => l.includes('"admin request"')).length).toBeGreaterThan(50);
      for (const secret of [ADMIN_SECRET, SECRET, SECOND_SECRET, ...tokenSecrets(token), 'not-the-admin-secret-0123456789abcdefghij', 'rotated-admin-secret-0123456789-abcdefghijklmnop']) {
        expect(all).not.toContain(secret);
      }
    });
  });
});

describe('without an admin section', () => {
  let t: TestProxy;
  beforeAll(async () => {
    t = await startProxyOnToken({ token, cleanupToken: false });
  });
  afterAll(async () => t?.stop());

  it('the admin API is off: no listener, and the XKS listener does not serve it', async () => {
    expect(loadConfig(t.configFile).admin).toBeUndefined();
    expect(t.proxy.adminListening).toBeUndefined();
    expect(t.proxy.listening.servers).toHaveLength(1);
    expect(t.logs.some((l) => l.includes('admin API'))).toBe(false);
    const r = await adminRequest(t.httpUrl, 'ListKeys', {});
    expect(r.status).toBe(404);
    // Reloading a config that adds it does not open a port behind the operator's back.
    t.proxy.reload(loadConfig(writeTestConfig(token, { admin: adminConfig() }, 'with-admin.yaml')));
    expect(t.proxy.adminListening).toBeUndefined();
    expect(t.logs.some((l) => l.includes('starts with the next restart'))).toBe(true);
  });
});
