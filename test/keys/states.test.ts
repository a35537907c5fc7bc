// Key states as KMS sees them through XKS: a key that is not Enabled reads as DISABLED in GetKeyMetadata and refuses
// Encrypt and Decrypt with InvalidStateException; scheduled deletion, cancel and enable move between states as in KMS,
// and a transition KMS refuses changes nothing. Keys imported later (PendingImport) and keys made by other tools
// (adopted) follow the same rules. Real token (XKS_TEST_TOKEN), real server over a socket, the built CLI as its own process.
import { beforeAll, describe, expect, it } from 'vitest';
import { aes256KeyTemplate } from '../../src/hsm/templates.js';
import { KeyError, type KeyErrorName } from '../../src/keys/errors.js';
import { runXks } from '../helpers/built-cli.js';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { makeForeignAesKey } from '../helpers/test-token.js';
import { decryptFields } from '../helpers/xks-client.js';
import { describeViaCli, tokenObjects, versionOf } from '../helpers/key-versions.js';
import { pollUntil } from '../helpers/poll.js';

const DAY_MS = 86_400_000;
const t = useProxyOnToken({ cli: true });
const { xks } = t;

async function expectKeyError(p: Promise<unknown>, ...codes: KeyErrorName[]): Promise<KeyError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'the call should have been refused').toBeInstanceOf(KeyError);
  expect(codes).toContain((err as KeyError).code);
  return err as KeyError;
}

/** What XKS answers for a key that is not Enabled: DISABLED, and InvalidStateException (400) for both directions. */
async function expectRefusedByXks(id: string, ciphertext: any, usage = ['ENCRYPT', 'DECRYPT']): Promise<void> {
  const m = await xks.metadata(id);
  expect(m.status, m.text).toBe(200);
  expect(m.json).toEqual({ keySpec: 'AES_256', keyUsage: usage, keyStatus: 'DISABLED' });
  const enc = await xks.encrypt(id, Buffer.from('refused'));
  expect(enc.status, enc.text).toBe(400);
  expect(enc.json.errorName).toBe('InvalidStateException');
  if (ciphertext) {
    const dec = await xks.decrypt(id, decryptFields(ciphertext));
    expect(dec.status, dec.text).toBe(400);
    expect(dec.json.errorName).toBe('InvalidStateException');
  }
}

async function expectServedByXks(id: string, ciphertext: any, plaintext: string, usage = ['ENCRYPT', 'DECRYPT']): Promise<void> {
  const m = await xks.metadata(id);
  expect(m.json).toEqual({ keySpec: 'AES_256', keyUsage: usage, keyStatus: 'ENABLED' });
  const enc = await xks.encrypt(id, Buffer.from('served'));
  expect(enc.status, enc.text).toBe(200);
  const dec = await xks.decrypt(id, decryptFields(ciphertext));
  expect(dec.status, dec.text).toBe(200);
  expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe(plaintext);
}

/** The key's record and objects as the token holds them: what "changes nothing" compares. */
async function snapshot(id: string) {
  const key = await t.proxy.lifecycle.get(id);
  const objs = await tokenObjects(t.proxy.hsm, id);
  return { state: key.state, record: key.record, objects: objs.all.map((o) => `${o.handle.toString('hex')}=${o.id.toString()}`).sort() };
}

describe('disable, schedule deletion, cancel, enable', () => {
  let early: any;

  beforeAll(async () => {
    await t.proxy.lifecycle.create('st', { usage: { encrypt: true, decrypt: true } });
    const enc = await xks.encrypt('st', Buffer.from('made while enabled'));
    expect(enc.status, enc.text).toBe(200);
    early = enc.json;
  });

  it('a disabled key is DISABLED to KMS and refuses Encrypt and Decrypt (InvalidStateException 400)', async () => {
    const k = await t.proxy.lifecycle.disable('st');
    expect(k.state).toBe('Disabled');
    await expectRefusedByXks('st', early);
    // Disabling again is not an error (as in KMS) and changes nothing.
    const before = await snapshot('st');
    expect((await t.proxy.lifecycle.disable('st')).state).toBe('Disabled');
    expect(await snapshot('st')).toEqual(before);
  });

  it('refuses pending windows outside 7..30 whole days (ValidationException) and changes nothing', async () => {
    const before = await snapshot('st');
    for (const days of [6, 31, 7.5, 0, -7, Number.NaN]) {
      const e = await expectKeyError(t.proxy.lifecycle.scheduleDeletion('st', days), 'ValidationException');
      expect(e.message).toMatch(/7 to 30/);
    }
    for (const days of ['6', '31', '7.5']) {
      const r = await runXks(['keys', 'schedule-deletion', 'st', '--pending-window-days', days], { token: t.token, configFile: t.configFile });
      expect(r.code, r.stdout).toBe(1);
      expect(r.stderr).toMatch(/pending.window|7 to 30|whole number of days/i);
    }
    expect(await snapshot('st')).toEqual(before);
  });

  it('schedule deletion: PendingDeletion with a DeletionDate 7 days ahead, still refused by XKS', async () => {
    const from = Date.now();
    const r = await runXks(['keys', 'schedule-deletion', 'st', '--pending-window-days', '7', '--json'], { token: t.token, configFile: t.configFile });
    const to = Date.now();
    expect(r.code, r.stderr).toBe(0);
    const printed = JSON.parse(r.stdout);
    expect(printed).toMatchObject({ KeyId: 'st', KeyState: 'PendingDeletion' });
    const d = await describeViaCli(t.token, t.configFile, 'st');
    expect(d.KeyState).toBe('PendingDeletion');
    const when = Date.parse(d.DeletionDate);
    expect(when).toBeGreaterThanOrEqual(from + 7 * DAY_MS - 1_000);
    expect(when).toBeLessThanOrEqual(to + 7 * DAY_MS + 1_000);
    // This server reads the change (made by another process) and refuses the key the same way.
    expect((await t.proxy.lifecycle.get('st')).state).toBe('PendingDeletion');
    await expectRefusedByXks('st', early);
  });

  it('refuses enable, disable, a second schedule and rotation of a key pending deletion (KMSInvalidStateException), changing nothing', async () => {
    const before = await snapshot('st');
    await expectKeyError(t.proxy.lifecycle.enable('st'), 'KMSInvalidStateException');
    await expectKeyError(t.proxy.lifecycle.disable('st'), 'KMSInvalidStateException');
    await expectKeyError(t.proxy.lifecycle.scheduleDeletion('st', 30), 'KMSInvalidStateException');
    await expectKeyError(t.proxy.lifecycle.rotate('st'), 'KMSInvalidStateException');
    await expectKeyError(t.proxy.lifecycle.setRotation('st', 365), 'KMSInvalidStateException');
    const cli = await runXks(['keys', 'enable', 'st'], { token: t.token, configFile: t.configFile });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/PendingDeletion/);
    expect(await snapshot('st')).toEqual(before);
    await expectRefusedByXks('st', early);
  });

  it('a default schedule is 30 days ahead (KMS default)', async () => {
    await t.proxy.lifecycle.create('st30', { usage: { encrypt: true, decrypt: true } });
    const from = Date.now();
    const k = await t.proxy.lifecycle.scheduleDeletion('st30');
    expect(Date.parse(k.record!.deletionDate!) - from).toBeGreaterThanOrEqual(30 * DAY_MS - 1_000);
    expect(Date.parse(k.record!.deletionDate!) - from).toBeLessThanOrEqual(30 * DAY_MS + 5_000);
    await expectRefusedByXks('st30', undefined);
  });

  it('cancel deletion: back to Disabled (as in KMS), without a DeletionDate, still refused', async () => {
    const k = await t.proxy.lifecycle.cancelDeletion('st');
    expect(k.state).toBe('Disabled');
    expect(k.record!.deletionDate).toBeUndefined();
    const d = await describeViaCli(t.token, t.configFile, 'st');
    expect(d.KeyState).toBe('Disabled');
    expect(d.DeletionDate).toBeUndefined();
    await expectRefusedByXks('st', early);
    // Cancelling a key that is not pending deletion is refused and changes nothing.
    const before = await snapshot('st');
    await expectKeyError(t.proxy.lifecycle.cancelDeletion('st'), 'KMSInvalidStateException');
    expect(await snapshot('st')).toEqual(before);
  });

  it('enable: ENABLED again, and a ciphertext made before the disable decrypts', async () => {
    const k = await t.proxy.lifecycle.enable('st');
    expect(k.state).toBe('Enabled');
    await expectServedByXks('st', early, 'made while enabled');
    const before = await snapshot('st');
    await expectKeyError(t.proxy.lifecycle.cancelDeletion('st'), 'KMSInvalidStateException');
    const cli = await runXks(['keys', 'cancel-deletion', 'st'], { token: t.token, configFile: t.configFile });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/not pending deletion/);
    expect(await snapshot('st')).toEqual(before);
  });

  it('disable and enable through the CLI (another process) reach this server within 5 seconds', async () => {
    expect((await runXks(['keys', 'disable', 'st'], { token: t.token, configFile: t.configFile })).code).toBe(0);
    await pollUntil('DISABLED after a CLI disable', 5_000, async () => (await xks.metadata('st')).json.keyStatus === 'DISABLED');
    await expectRefusedByXks('st', early);
    expect((await runXks(['keys', 'enable', 'st'], { token: t.token, configFile: t.configFile })).code).toBe(0);
    await pollUntil('ENABLED after a CLI enable', 5_000, async () => (await xks.metadata('st')).json.keyStatus === 'ENABLED');
    await expectServedByXks('st', early, 'made while enabled');
  });
});

describe('a key waiting for imported material (origin EXTERNAL)', () => {
  it('is PendingImport, DISABLED to KMS, refuses Encrypt, cannot be enabled or rotated', async () => {
    const r = await runXks(['keys', 'create', 'ext', '--origin', 'EXTERNAL', '--usage', 'encrypt,decrypt', '--json'], { token: t.token, configFile: t.configFile });
    expect(r.code, r.stderr).toBe(0);
    const d = JSON.parse(r.stdout);
    expect(d).toMatchObject({ KeyId: 'ext', KeyState: 'PendingImport', Origin: 'EXTERNAL', Versions: [] });
    expect(d.CurrentVersion).toBeUndefined();
    // No material in the token: only the record.
    const objs = await tokenObjects(t.proxy.hsm, 'ext');
    expect(objs.records).toBe(1);
    expect(objs.versions.size + objs.candidates.length).toBe(0);

    await expectRefusedByXks('ext', undefined);
    const dec = await xks.decrypt('ext', {
      ciphertext: Buffer.alloc(16).toString('base64'),
      initializationVector: Buffer.alloc(12).toString('base64'),
      authenticationTag: Buffer.alloc(16).toString('base64'),
    });
    expect(dec.status, dec.text).toBe(400);
    expect(dec.json.errorName).toBe('InvalidStateException');

    const before = await snapshot('ext');
    await expectKeyError(t.proxy.lifecycle.rotate('ext'), 'KMSInvalidStateException', 'UnsupportedOperationException');
    await expectKeyError(t.proxy.lifecycle.enable('ext'), 'KMSInvalidStateException');
    await expectKeyError(t.proxy.lifecycle.setRotation('ext', 90), 'UnsupportedOperationException');
    const cli = await runXks(['keys', 'rotate', 'ext'], { token: t.token, configFile: t.configFile });
    expect(cli.code).toBe(1);
    expect(cli.stdout).toBe('');
    expect(await snapshot('ext')).toEqual(before);
    // Automatic rotation makes no sense for imported material: refused at creation too.
    await expectKeyError(
      t.proxy.lifecycle.create('ext2', { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL', rotationPeriodDays: 90 }),
      'UnsupportedOperationException',
    );
    expect(await t.proxy.hsm.findSecretKeys({ label: 'ext2' })).toEqual([]);
  });

  it('scheduled for deletion and cancelled, it goes back to PendingImport (it has no material to enable)', async () => {
    expect((await t.proxy.lifecycle.scheduleDeletion('ext', 7)).state).toBe('PendingDeletion');
    await expectRefusedByXks('ext', undefined);
    expect((await t.proxy.lifecycle.cancelDeletion('ext')).state).toBe('PendingImport');
    await expectRefusedByXks('ext', undefined);
  });
});

describe('adopted keys (made by other tools, no record)', () => {
  it('a pkcs11-tool key is served, can be disabled and enabled, and gets a record with Origin ADOPTED', async () => {
    // As pkcs11-tool --keygen --key-type aes:32 --sensitive makes it; without --sensitive it is refused
    // (test/keys/exposed-keys.test.ts).
    makeForeignAesKey(t.token, 'p11key', { sensitive: true });
    const first = await describeViaCli(t.token, t.configFile, 'p11key');
    expect(first).toMatchObject({ KeyId: 'p11key', KeyState: 'Enabled', Origin: 'ADOPTED', CurrentVersion: 1 });
    expect(first.CreationDate).toBeUndefined(); // no record yet
    expect((await tokenObjects(t.proxy.hsm, 'p11key')).records).toBe(0);

    const enc = await xks.encrypt('p11key', Buffer.from('adopted'));
    expect(enc.status, enc.text).toBe(200);
    expect(versionOf(enc.json)).toBe(1);

    expect((await t.proxy.lifecycle.disable('p11key')).state).toBe('Disabled');
    await expectRefusedByXks('p11key', enc.json);
    const disabled = await describeViaCli(t.token, t.configFile, 'p11key');
    expect(disabled).toMatchObject({ KeyState: 'Disabled', Origin: 'ADOPTED', KeyUsage: ['ENCRYPT', 'DECRYPT'], CurrentVersion: 1 });
    expect(disabled.CreationDate).toEqual(expect.any(String));
    expect((await tokenObjects(t.proxy.hsm, 'p11key')).records).toBe(1);

    expect((await t.proxy.lifecycle.enable('p11key')).state).toBe('Enabled');
    await expectServedByXks('p11key', enc.json, 'adopted');
    const enabled = await describeViaCli(t.token, t.configFile, 'p11key');
    expect(enabled).toMatchObject({ KeyState: 'Enabled', Origin: 'ADOPTED' });
    // Its material is the same object as before: adopting never replaced it.
    const objs = await tokenObjects(t.proxy.hsm, 'p11key');
    expect([...objs.versions.entries()]).toEqual([[1, 1]]);
    expect(objs.records).toBe(1);
  });

  it('an encrypt-only key generated without CKA_ID keeps its usage in its new record; disable and enable through the CLI', async () => {
    await t.proxy.hsm.generateKey(aes256KeyTemplate({ label: 'bare', encrypt: true, decrypt: false, exportable: false }));
    const enc = await xks.encrypt('bare', Buffer.from('bare'));
    expect(enc.status, enc.text).toBe(200);
    expect((await runXks(['keys', 'disable', 'bare'], { token: t.token, configFile: t.configFile })).code).toBe(0);
    const k = await t.proxy.lifecycle.get('bare');
    expect(k).toMatchObject({ state: 'Disabled', origin: 'ADOPTED' });
    expect(k.record).toMatchObject({ origin: 'ADOPTED', state: 'Disabled', usage: ['ENCRYPT'] });
    await expectRefusedByXks('bare', undefined, ['ENCRYPT']);
    const r = await runXks(['keys', 'enable', 'bare', '--json'], { token: t.token, configFile: t.configFile });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ KeyState: 'Enabled', Origin: 'ADOPTED', KeyUsage: ['ENCRYPT'] });
    await pollUntil('ENABLED after a CLI enable', 5_000, async () => (await xks.metadata('bare')).json.keyStatus === 'ENABLED');
    expect((await xks.metadata('bare')).json.keyUsage).toEqual(['ENCRYPT']);
    expect((await xks.encrypt('bare', Buffer.from('again'))).status).toBe(200);
  });
});
