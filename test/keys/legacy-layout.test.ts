// A token made by the previous release (layout 1: version and record CKA_IDs rewritten in place) is served unchanged
// by this one, then rotated and changed under layout 2 without losing a key, a version or a ciphertext. The token is
// test/fixtures/legacy-token.tar.gz, written by release cda4012's own CLI and server (test/fixtures/make-legacy-token.sh),
// with the ciphertexts that server made.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveModulePath, loadProfile } from '../../src/hsm/profile.js';
import { P } from '../../src/hsm/module.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { TOKEN_KIND, type TestToken } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

const FIXTURE = new URL('../fixtures/legacy-token.tar.gz', import.meta.url).pathname;
type Answer = { ciphertext: string; initializationVector: string; authenticationTag: string; ciphertextMetadata: string };

// The fixture is a SoftHSM token directory: other kinds of token cannot load it.
describe.skipIf(TOKEN_KIND !== 'softhsm')('a token made by the previous release', () => {
  let t: TestProxy;
  let made: Record<string, Answer>;
  let idsBefore: string[];

  const ids = async (label?: string) =>
    (await t.proxy.hsm.findSecretKeys(label === undefined ? {} : { label })).map((o) => `${o.label} ${o.id.toString('latin1')}`).sort();
  const decrypt = (key: string, a: Answer) => xksClient(t.httpUrl).decrypt(key, a);
  const versionOf = (a: { ciphertextMetadata: string }) => Buffer.from(a.ciphertextMetadata, 'base64').readUInt32BE(1);

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xks-legacy-'));
    execFileSync('tar', ['-C', dir, '-xzf', FIXTURE]);
    made = JSON.parse(readFileSync(join(dir, 'ciphertexts.json'), 'utf8')) as Record<string, Answer>;
    const conf = join(dir, 'softhsm2.conf');
    const template = readFileSync(new URL('../../softhsm-config/softhsm2.conf.template', import.meta.url), 'utf8');
    writeFileSync(conf, template.replaceAll('@TOKENDIR@', join(dir, 'tokens')));
    process.env.SOFTHSM2_CONF = conf;
    const modulePath = resolveModulePath(loadProfile('softhsm2'));
    const token: TestToken = {
      kind: 'softhsm',
      label: 'legacy',
      userPin: 'legacy-user-pin',
      soPin: 'legacy-so-pin',
      serial: '',
      dir,
      profile: 'softhsm2',
      modulePath,
      libraryParameters: undefined,
      library: { modulePath },
      env: { SOFTHSM2_CONF: conf },
      conf,
      hsmConfig: () => ({ profile: 'softhsm2', tokenLabel: 'legacy' }),
      cleanup: () => rmSync(dir, { recursive: true, force: true }),
    };
    t = await startProxyOnToken({ token });
    idsBefore = await ids();
  }, 60_000);
  afterAll(async () => t?.stop());

  it('holds layout 1 objects only (the fixture is what the earlier release wrote)', () => {
    expect(idsBefore.some((s) => s.startsWith('rotated xks:v3;t='))).toBe(true);
    expect(idsBefore.some((s) => s.startsWith('disabled xks:key:{'))).toBe(true);
    expect(idsBefore.some((s) => / xks:(k2|m2|r2);/.test(s))).toBe(false);
  });

  it('is served unchanged: every ciphertext the earlier release made decrypts, states and versions are as it left them', async () => {
    for (const key of ['rotated', 'plain', 'adopted']) {
      const dec = await decrypt(key, made[key]!);
      expect(dec.status, dec.text).toBe(200);
      expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe(`made by the earlier release under ${key}`);
    }
    const xks = xksClient(t.httpUrl);
    expect(versionOf((await xks.encrypt('rotated', Buffer.from('x'))).json)).toBe(3);
    expect((await xks.metadata('rotated')).json.keyStatus).toBe('ENABLED');
    expect((await xks.metadata('disabled')).json.keyStatus).toBe('DISABLED');
    expect((await xks.metadata('pending')).json.keyStatus).toBe('DISABLED');
    const rotated = await t.proxy.lifecycle.get('rotated');
    expect(rotated.record).toMatchObject({ state: 'Enabled', origin: 'HSM', rotationDays: 365 });
    expect((await t.proxy.lifecycle.get('pending')).record?.deletionDate).toBeDefined();
    // Serving writes nothing to the keys: the token holds what it held, plus the block of encryptions the encrypt above
    // reserved (docs/key-model.md: blocks carry a label of their own, never a key's).
    expect((await ids()).filter((i) => !i.startsWith('xks:u1;'))).toEqual(idsBefore);
  });

  it('rotates under layout 2: version 4 is new material plus its commit marker; versions 1 to 3 are untouched and decrypt', async () => {
    const before = await ids('rotated');
    expect(await t.proxy.lifecycle.rotate('rotated')).toEqual({ KeyId: 'rotated', Rotated: true, Version: 4 });
    const after = await ids('rotated');
    // Nothing of the earlier release was rewritten or removed.
    for (const id of before) expect(after).toContain(id);
    const added = after.filter((id) => !before.includes(id));
    expect(added).toHaveLength(2);
    expect(added.some((s) => /^rotated xks:k2;v=4;t=\d+;n=[0-9a-f]{24}$/.test(s))).toBe(true);
    expect(added.some((s) => /^rotated xks:m2;v=4;t=\d+;n=[0-9a-f]{24}$/.test(s))).toBe(true);
    const xks = xksClient(t.httpUrl);
    const enc = await xks.encrypt('rotated', Buffer.from('after the move'));
    expect(versionOf(enc.json)).toBe(4);
    expect((await decrypt('rotated', made.rotated!)).status).toBe(200);
    expect((await decrypt('rotated', enc.json)).status).toBe(200);
    const key = await t.proxy.lifecycle.get('rotated');
    expect([...key.versions.keys()].sort()).toEqual([1, 2, 3, 4]);
    expect(key.record?.rotationDays).toBe(365);
  });

  it('a state change replaces the layout 1 record by a layout 2 record (a new object, the old one destroyed)', async () => {
    await t.proxy.lifecycle.enable('disabled');
    const records = (await ids('disabled')).filter((s) => / xks:(key:|r2;)/.test(s));
    expect(records).toHaveLength(1);
    expect(records[0]).toMatch(/^disabled xks:r2;s=1;n=[0-9a-f]{24};\{/);
    expect((await xksClient(t.httpUrl).metadata('disabled')).json.keyStatus).toBe('ENABLED');
    await t.proxy.lifecycle.disable('disabled');
    const again = (await ids('disabled')).filter((s) => / xks:(key:|r2;)/.test(s));
    expect(again).toHaveLength(1);
    expect(again[0]).toMatch(/^disabled xks:r2;s=2;/);

    await t.proxy.lifecycle.cancelDeletion('pending');
    expect((await t.proxy.lifecycle.get('pending')).state).toBe('Disabled');
    expect((await ids('pending')).filter((s) => / xks:(key:|r2;)/.test(s))).toEqual([expect.stringMatching(/^pending xks:r2;s=1;/)]);
  });

  it('an adopted key gets a layout 2 record on its first change and keeps decrypting what the earlier release made', async () => {
    await t.proxy.lifecycle.disable('adopted');
    await t.proxy.lifecycle.enable('adopted');
    const objs = await t.proxy.hsm.findSecretKeys({ label: 'adopted' });
    const records = objs.filter((o) => o.keyType === 'generic-secret' && o.id.toString().startsWith('xks:r2;'));
    expect(records).toHaveLength(1);
    expect(records[0]!.id.toString()).toMatch(/^xks:r2;s=2;/);
    expect(await t.proxy.lifecycle.rotate('adopted')).toMatchObject({ Rotated: true, Version: 2 });
    expect((await decrypt('adopted', made.adopted!)).status).toBe(200);
    const xks = xksClient(t.httpUrl);
    expect(versionOf((await xks.encrypt('adopted', Buffer.from('x'))).json)).toBe(2);
  });

  it('no two objects in the token share a CKA_ID of the proxy\'s', async () => {
    const all = await t.proxy.hsm.findSecretKeys({});
    const ours = all.map((o) => o.id.toString('latin1')).filter((id) => id.startsWith('xks:'));
    expect(new Set(ours).size).toBe(ours.length);
  });
});
