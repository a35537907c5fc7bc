// Automatic rotation and deletion with a clock of the test's own: rotate-due rotates an enabled key once its period has
// passed since its current version was made (not a second earlier, and once only); purge-due destroys every object of a
// key whose deletion date has passed and nothing else. The lifecycle runs on the serving proxy's own connection and
// catalogue, so what XKS answers afterwards is checked on the real server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { aes256KeyTemplate, inertSecretTemplate as recordObjectTemplate } from '../../src/hsm/templates.js';
import { KeyError } from '../../src/keys/errors.js';
import { P } from '../../src/hsm/module.js';
import { legacyCandidateId as candidateId, legacyRecordId as recordId, legacyVersionId as versionId } from '../helpers/legacy-layout.js';
import { encodeRecord } from '../../src/keys/key-record.js';
import type { KeyLifecycle } from '../../src/keys/lifecycle.js';
import { openLifecycle } from '../../src/proxy.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';
import { describeViaCli, expectCleanVersions, tokenObjects, versionOf } from '../helpers/key-versions.js';

const DAY_MS = 86_400_000;
let token: TestToken;
let configFile: string;
let t: TestProxy | undefined;

beforeAll(() => {
  ensureBuilt();
  token = createTestToken('due-token');
  configFile = writeTestConfig(token);
}, 120_000);

afterAll(async () => {
  await t?.stop();
  token?.cleanup();
});

it('on a fresh token the CLI says no key is due, and exits 0', async () => {
  const rotate = await runXks(['keys', 'rotate-due'], { token, configFile });
  expect(rotate.code, rotate.stderr).toBe(0);
  expect(rotate.stdout.trim()).toBe('no key is due for rotation');
  const purge = await runXks(['keys', 'purge-due'], { token, configFile });
  expect(purge.code, purge.stderr).toBe(0);
  expect(purge.stdout.trim()).toBe('no key is due for deletion');
  for (const cmd of ['rotate-due', 'purge-due']) {
    const r = await runXks(['keys', cmd, '--json'], { token, configFile });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
  }
});

describe('with a fake clock', () => {
  let fake = new Date();
  let clock: KeyLifecycle;
  let xks: ReturnType<typeof xksClient>;

  beforeAll(async () => {
    t = await startProxyOnToken({ token, cleanupToken: false });
    clock = openLifecycle(t.proxy.hsm, t.proxy.catalogue, loadConfig(t.configFile), () => fake);
    xks = xksClient(t.httpUrl);
  }, 60_000);

  /** Runs rotate-due at `at`; returns the keys it rotated, with their new version. */
  async function rotateDueAt(at: number): Promise<Record<string, number>> {
    fake = new Date(at);
    const done = (await clock.rotateDue()).filter((r) => r.Rotated);
    return Object.fromEntries(done.map((r) => [r.KeyId, r.Version]));
  }

  /** When the key's current version was made (its CKA_ID keeps the second). */
  async function currentSince(id: string): Promise<number> {
    const since = (await t!.proxy.lifecycle.get(id)).current!.createdAt;
    expect(since).toBeInstanceOf(Date);
    return since!.getTime();
  }

  it('a key with a 90-day period is not due at 89 days, nor a second before 90; it is rotated at 90, once', async () => {
    fake = new Date();
    await clock.create('p90', { usage: { encrypt: true, decrypt: true }, rotationPeriodDays: 90 });
    const v1 = await xks.encrypt('p90', Buffer.from('version 1'));
    const c = await currentSince('p90');
    expect((await describeViaCli(token, configFile, 'p90')).NextRotationDate).toBe(new Date(c + 90 * DAY_MS).toISOString());

    expect(await rotateDueAt(c + 89 * DAY_MS)).toEqual({});
    expect(await rotateDueAt(c + 90 * DAY_MS - 1_000)).toEqual({});
    expect((await t!.proxy.lifecycle.get('p90')).current!.version).toBe(1);

    expect(await rotateDueAt(c + 90 * DAY_MS)).toEqual({ p90: 2 });
    // The new version is dated by the clock that made it, and the server encrypts with it at once.
    expect(await currentSince('p90')).toBe(c + 90 * DAY_MS);
    expect(versionOf((await xks.encrypt('p90', Buffer.from('x'))).json)).toBe(2);
    expect((await xks.decrypt('p90', decryptFields(v1.json))).status).toBe(200);
    // Due once, rotated once: a second run at the same moment, or a day later, does nothing.
    expect(await rotateDueAt(c + 90 * DAY_MS)).toEqual({});
    expect(await rotateDueAt(c + 91 * DAY_MS)).toEqual({});
    // The period counts from the last rotation.
    expect(await rotateDueAt(c + 179 * DAY_MS)).toEqual({});
    expect(await rotateDueAt(c + 180 * DAY_MS)).toEqual({ p90: 3 });
    await expectCleanVersions(t!.proxy.hsm, 'p90', 3);
    const d = await describeViaCli(token, configFile, 'p90');
    expect(d).toMatchObject({ CurrentVersion: 3, RotationPeriodInDays: 90, LastRotationDate: new Date(c + 180 * DAY_MS).toISOString() });
    expect(d.NextRotationDate).toBe(new Date(c + 270 * DAY_MS).toISOString());
  });

  it('never rotates a key that is disabled or pending deletion, or one without a period', async () => {
    fake = new Date();
    for (const id of ['off', 'pending', 'none']) {
      await clock.create(id, { usage: { encrypt: true, decrypt: true }, ...(id === 'none' ? {} : { rotationPeriodDays: 90 }) });
    }
    await clock.disable('off');
    await clock.scheduleDeletion('pending', 30);
    const c = await currentSince('none');
    for (const days of [90, 365, 3650]) {
      const done = await rotateDueAt(c + days * DAY_MS);
      expect(done.off).toBeUndefined();
      expect(done.pending).toBeUndefined();
      expect(done.none).toBeUndefined();
    }
    for (const id of ['off', 'pending', 'none']) await expectCleanVersions(t!.proxy.hsm, id, 1);
    // Enabled again, the disabled key is due at once: its version is older than its period.
    fake = new Date(c + 3650 * DAY_MS);
    await clock.enable('off');
    expect((await rotateDueAt(c + 3650 * DAY_MS)).off).toBe(2);
  });

  it('set-rotation through the CLI starts and stops automatic rotation; periods outside 90..2560 days are refused', async () => {
    const c = await currentSince('none');
    const on = await runXks(['keys', 'set-rotation', 'none', '--period-days', '365', '--json'], { token, configFile });
    expect(on.code, on.stderr).toBe(0);
    expect(JSON.parse(on.stdout)).toMatchObject({ RotationPeriodInDays: 365 });
    expect((await rotateDueAt(c + 364 * DAY_MS)).none).toBeUndefined();
    expect((await rotateDueAt(c + 365 * DAY_MS)).none).toBe(2);
    const off = await runXks(['keys', 'set-rotation', 'none', '--off', '--json'], { token, configFile });
    expect(off.code, off.stderr).toBe(0);
    expect(JSON.parse(off.stdout).RotationPeriodInDays).toBeUndefined();
    expect((await rotateDueAt(c + 3650 * DAY_MS)).none).toBeUndefined();
    for (const days of [89, 2561, 90.5]) {
      const e = await clock.setRotation('none', days).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(KeyError);
      expect((e as KeyError).code).toBe('ValidationException');
    }
    const bad = await runXks(['keys', 'set-rotation', 'none', '--period-days', '89'], { token, configFile });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/90 to 2560/);
  });

  it('purge-due destroys every object of a key whose deletion date has passed, and leaves one whose date has not', async () => {
    const now = Date.now();
    fake = new Date(now);
    await clock.create('gone', { usage: { encrypt: true, decrypt: true } });
    await clock.rotate('gone');
    await clock.create('stays', { usage: { encrypt: true, decrypt: true } });
    const ct = await xks.encrypt('gone', Buffer.from('x')); // the server holds the key (and its session copy)
    expect(ct.status).toBe(200);
    await clock.scheduleDeletion('gone', 7);
    await clock.scheduleDeletion('stays', 30);
    // A leftover candidate of a rotation that died: purged with the key.
    await t!.proxy.hsm.generateKey(aes256KeyTemplate({ label: 'gone', id: candidateId(3, now - 120_000, 'ee'), encrypt: true, decrypt: true, exportable: false }));
    // Two versions with their commit markers, the record, the candidate.
    expect((await tokenObjects(t!.proxy.hsm, 'gone')).all).toHaveLength(6);
    const staysBefore = (await tokenObjects(t!.proxy.hsm, 'stays')).all.length;

    fake = new Date(now + 7 * DAY_MS - 1_000);
    expect(await clock.purgeDue()).toEqual([]);
    // Two versions with their commit markers, the record, the candidate.
    expect((await tokenObjects(t!.proxy.hsm, 'gone')).all).toHaveLength(6);

    fake = new Date(now + 7 * DAY_MS + 1_000);
    expect(await clock.purgeDue()).toEqual(['gone']);
    expect(await t!.proxy.hsm.findSecretKeys({ label: 'gone' })).toEqual([]);
    expect((await tokenObjects(t!.proxy.hsm, 'stays')).all).toHaveLength(staysBefore);
    expect((await t!.proxy.lifecycle.get('stays')).state).toBe('PendingDeletion');
    expect(await clock.purgeDue()).toEqual([]);

    // The server answers KeyNotFoundException for it from now on.
    const m = await xks.metadata('gone');
    expect(m.status, m.text).toBe(404);
    expect(m.json.errorName).toBe('KeyNotFoundException');
    const dec = await xks.decrypt('gone', decryptFields(ct.json));
    expect(dec.status).toBe(404);
    expect(dec.json.errorName).toBe('KeyNotFoundException');
    const d = await runXks(['keys', 'describe', 'gone'], { token, configFile });
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/no key "gone"/);
    // The other key is refused as pending deletion, not gone.
    expect((await xks.metadata('stays')).json.keyStatus).toBe('DISABLED');
  });

  it('a cancelled deletion is never purged; a purge that stopped midway is finished by the next one', async () => {
    const now = Date.now();
    fake = new Date(now);
    await clock.create('saved', { usage: { encrypt: true, decrypt: true } });
    await clock.scheduleDeletion('saved', 7);
    await clock.cancelDeletion('saved');
    await clock.create('half', { usage: { encrypt: true, decrypt: true } });
    await clock.scheduleDeletion('half', 7);
    // As if a purge died after the versions: only the record, still pending deletion, is left.
    for (const o of (await tokenObjects(t!.proxy.hsm, 'half')).all) if (/^xks:[km]2;/.test(o.id.toString())) await t!.proxy.hsm.destroyObject(o.handle);
    expect((await tokenObjects(t!.proxy.hsm, 'half')).all).toHaveLength(1);

    fake = new Date(now + 365 * DAY_MS);
    const purged = await clock.purgeDue();
    expect(purged).toContain('half');
    expect(purged).not.toContain('saved');
    expect(await t!.proxy.hsm.findSecretKeys({ label: 'half' })).toEqual([]);
    expect((await t!.proxy.lifecycle.get('saved')).state).toBe('Disabled');
    await expectCleanVersions(t!.proxy.hsm, 'saved', 1);
  });

  it('with the real clock, the CLI finds nothing due on this token either', async () => {
    // Every version made above is dated now or later, and every pending deletion is days away.
    const rotate = await runXks(['keys', 'rotate-due'], { token, configFile });
    expect(rotate.code, rotate.stderr).toBe(0);
    expect(rotate.stdout.trim()).toBe('no key is due for rotation');
    const purge = await runXks(['keys', 'purge-due'], { token, configFile });
    expect(purge.code, purge.stderr).toBe(0);
    expect(purge.stdout.trim()).toBe('no key is due for deletion');
  });
});

describe('one key that cannot be rotated does not hold back the others', () => {
  it('rotate-due reports the failure for that key and rotates the rest', async () => {
    const now = new Date();
    const lifecycle = openLifecycle(t!.proxy.hsm, t!.proxy.catalogue, loadConfig(t!.configFile), () => new Date(now.getTime() + 100 * DAY_MS));
    // A key whose record claims a rotation period but whose material is imported: rotating it is refused.
    await t!.proxy.hsm.generateKey(aes256KeyTemplate({ label: 'stuck', id: versionId(1, now), encrypt: true, decrypt: true, exportable: false }));
    const record = { f: 1 as const, state: 'Enabled' as const, usage: ['ENCRYPT' as const, 'DECRYPT' as const], origin: 'EXTERNAL' as const, created: now.toISOString(), exportable: false, rotationDays: 90 };
    await t!.proxy.hsm.generateKey(recordObjectTemplate('stuck', recordId(encodeRecord(record))), P.CKM_GENERIC_SECRET_KEY_GEN);
    await t!.proxy.lifecycle.create('zz-due', { usage: { encrypt: true, decrypt: true }, rotationPeriodDays: 90 });
    const results = await lifecycle.rotateDue();
    const stuck = results.find((r) => r.KeyId === 'stuck');
    expect(stuck).toMatchObject({ Rotated: false, Version: 1 });
    expect(stuck!.Error).toMatch(/^UnsupportedOperationException: /);
    expect(results.find((r) => r.KeyId === 'zz-due')).toMatchObject({ Rotated: true, Version: 2 });
  });
});
