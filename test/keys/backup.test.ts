// Backup by wrapping between two real tokens, A and B, usable in one process (createTestTokens: one SoftHSM token
// directory, or NSS databases in one set of library parameters):
// a trusted KEK made on A moves to B under B's RSA transport key; an exportable key with two versions leaves A wrapped
// and comes back in B with the same id and versions, so ciphertexts made through a proxy on A decrypt through a proxy
// on B. One PKCS#11 library per process: ceremonies and the two proxies run one after another, never side by side.
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HsmError } from '../../src/hsm/errors.js';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { P } from '../../src/hsm/module.js';
import { CeremonySession } from '../../src/hsm/so-session.js';

import { exportKey, importWrapped } from '../../src/keys/backup.js';
import { KeyError } from '../../src/keys/errors.js';
import { createKek, createTransportKey, findKek, receiveKek, sendKek, type CeremonyAccess } from '../../src/keys/kek.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestTokens, TOKEN_FACTS, type TestToken } from '../helpers/test-token.js';

// Every backup needs a trusted KEK, and CKA_TRUSTED=true can be set only in a security officer's session. NSS softoken
// has no SO: C_Login(CKU_SO) answers CKR_USER_TYPE_INVALID once the database has a password (checked on NSS 3.87).
const NO_SO = !TOKEN_FACTS.soLogin;
import { decryptFields, xksClient } from '../helpers/xks-client.js';

/** A KEK's CKA_ID as `xks kek create` writes it. */
const KEK_ID = Buffer.from(`xks:kek;n=${'ab'.repeat(12)}`, 'ascii');

const KEK = 'backup-kek';
let A: TestToken;
let B: TestToken;
let kekCheck: string;
let backup: string;
const ciphertexts: { version: number; plaintext: string; enc: any }[] = [];

const access = (t: TestToken): CeremonyAccess => ({ ...t.library, tokenLabel: t.label, userPin: t.userPin, soPin: t.soPin ?? '' });

async function rejection(p: Promise<unknown>): Promise<KeyError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, 'expected a rejection').toBeInstanceOf(KeyError);
  return e as KeyError;
}

/** What an unauthenticated session sees in a token: public objects only. */
function publicObjects(t: TestToken): number {
  const s = CeremonySession.open({ ...t.library, tokenLabel: t.label });
  try {
    return s.find([]).length;
  } finally {
    s.close();
  }
}

beforeAll(() => {
  if (NO_SO) return;
  [A, B] = createTestTokens(['xks-a', 'xks-b']) as [TestToken, TestToken];
});

afterAll(() => A?.cleanup());

describe.skipIf(NO_SO)('KEK ceremonies', () => {
  it('makes a trusted KEK on A, private to the user, and refuses a second one with the same label', async () => {
    const r = await createKek(access(A), KEK);
    expect(r.checkValue).toMatch(/^[0-9a-f]{32}$/);
    kekCheck = r.checkValue;
    expect((await rejection(createKek(access(A), KEK))).code).toBe('AlreadyExistsException');
    // The SO's public original is gone: without login nothing of the KEK is visible (SoftHSM stores public values in clear).
    expect(publicObjects(A)).toBe(0);
  });

  it('refuses a wrong SO PIN before anything is made', async () => {
    const err = await createKek({ ...access(A), soPin: 'not-the-pin' }, 'other').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HsmError);
    expect((err as HsmError).code).toBe('PinIncorrect');
    expect((err as Error).message).toMatch(/security officer PIN/);
  });

  it('moves the KEK from A to B under B\'s RSA transport key, checked by fingerprint and check value', async () => {
    const t = await createTransportKey(access(B), KEK);
    expect(t.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect((await rejection(createTransportKey(access(B), KEK))).code).toBe('AlreadyExistsException');

    // The sending side refuses a public key whose fingerprint is not the one read from the receiving side.
    const wrongFp = await rejection(sendKek(access(A), KEK, t.publicKeyDer, 'ab'.repeat(32)));
    expect(wrongFp.code).toBe('IncorrectKeyException');
    const sent = await sendKek(access(A), KEK, t.publicKeyDer, t.fingerprint.toUpperCase().match(/.{4}/g)!.join(' '));
    expect(sent.checkValue).toBe(kekCheck);
    expect(sent.transfer.transportKeyFingerprint).toBe(t.fingerprint);

    // A key of someone else's, wrapped under B's public key (anyone can): refused by its check value, nothing kept.
    const forged = {
      ...sent.transfer,
      wrapped: publicEncrypt(
        { key: createPublicKey({ key: t.publicKeyDer, format: 'der', type: 'spki' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' },
        randomBytes(32),
      ).toString('base64'),
    };
    const substituted = await rejection(receiveKek(access(B), KEK, JSON.stringify(forged), sent.checkValue));
    expect(substituted.code).toBe('IncorrectKeyException');
    expect(substituted.message).toMatch(/check value/);
    // The right file with a check value that is not the sender's: refused too.
    expect((await rejection(receiveKek(access(B), KEK, JSON.stringify(sent.transfer), '00'.repeat(16)))).code).toBe('IncorrectKeyException');
    // A damaged transfer file.
    const damaged = { ...sent.transfer, wrapped: Buffer.from(sent.transfer.wrapped, 'base64').reverse().toString('base64') };
    expect((await rejection(receiveKek(access(B), KEK, JSON.stringify(damaged), sent.checkValue))).code).toBe('InvalidCiphertextException');
    expect((await rejection(receiveKek(access(B), KEK, '{"format":', sent.checkValue))).code).toBe('InvalidCiphertextException');

    const got = await receiveKek(access(B), KEK, JSON.stringify(sent.transfer), sent.checkValue);
    expect(got.checkValue).toBe(kekCheck);
    // The transport pair is gone, the received KEK is sealed: nothing public is left in B.
    expect(publicObjects(B)).toBe(0);
    expect((await rejection(receiveKek(access(B), KEK, JSON.stringify(sent.transfer), sent.checkValue))).code).toBe('AlreadyExistsException');
  });

  it('makes a second KEK on B only (for the wrong-KEK case)', async () => {
    await createKek(access(B), 'other-kek');
  });

  it('the KEK is trusted, private and sensitive on both sides: its value cannot be read', () => {
    for (const t of [A, B]) {
      const s = CeremonySession.open({ ...t.library, tokenLabel: t.label });
      try {
        s.login('user', t.userPin);
        const [kek] = s.find([{ type: P.CKA_LABEL, value: KEK }, { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY }]);
        expect(kek).toBeDefined();
        const [trusted, priv, sensitive, modifiable] = s.getAttributes(kek!, [P.CKA_TRUSTED, P.CKA_PRIVATE, P.CKA_SENSITIVE, P.CKA_MODIFIABLE]);
        expect([trusted![0], priv![0], sensitive![0], modifiable![0]]).toEqual([1, 1, 1, 0]);
        expect(() => s.getAttributes(kek!, [P.CKA_VALUE])).toThrow(/CKR_ATTRIBUTE_SENSITIVE/);
      } finally {
        s.close();
      }
    }
  });
});

describe.skipIf(NO_SO)('export from A', () => {
  let pa: TestProxy;
  beforeAll(async () => {
    pa = await startProxyOnToken({ token: A, cleanupToken: false });
  });
  afterAll(async () => pa?.stop());

  const deps = () => ({ hsm: pa.proxy.hsm, lifecycle: pa.proxy.lifecycle });

  it('exports an exportable key with two versions; ciphertexts of both were made through A', async () => {
    await pa.proxy.lifecycle.create('pay', { usage: { encrypt: true, decrypt: true }, exportable: true });
    const xks = xksClient(pa.httpUrl);
    for (const version of [1, 2]) {
      if (version === 2) await pa.proxy.lifecycle.rotate('pay');
      const plaintext = `secret under version ${version}`;
      const enc = await xks.encrypt('pay', Buffer.from(plaintext));
      expect(enc.status, enc.text).toBe(200);
      expect(Buffer.from(enc.json.ciphertextMetadata, 'base64').readUInt32BE(1)).toBe(version);
      ciphertexts.push({ version, plaintext, enc: enc.json });
    }
    backup = await exportKey(deps(), 'pay', KEK);
    const doc = JSON.parse(backup);
    expect(doc).toMatchObject({
      format: 'xks-key-backup-v1',
      keyId: 'pay',
      kek: { label: KEK, checkValue: kekCheck },
      // RFC 5649, and the number this token (SoftHSM) gives it, for the record.
      wrappingAlgorithm: 'RFC5649',
      wrappingMechanism: 'CKM_AES_KEY_WRAP_PAD',
      record: { state: 'Enabled', origin: 'HSM', exportable: true, usage: ['ENCRYPT', 'DECRYPT'] },
      source: { tokenLabel: 'xks-a' },
      mac: { algorithm: 'CKM_SHA256_HMAC' },
    });
    expect(doc.versions.map((v: any) => [v.version, v.usage, Buffer.from(v.wrapped, 'base64').length])).toEqual([
      [1, ['ENCRYPT', 'DECRYPT'], 40],
      [2, ['ENCRYPT', 'DECRYPT'], 40],
    ]);
    expect(doc.versions[1].createdAt).toMatch(/^\d{4}-/);
  });

  it('refuses to export a key that was not created exportable, and says so', async () => {
    await pa.proxy.lifecycle.create('plain', { usage: { encrypt: true, decrypt: true } });
    const err = await rejection(exportKey(deps(), 'plain', KEK));
    expect(err.code).toBe('UnsupportedOperationException');
    expect(err.message).toMatch(/"plain" is not exportable.*--exportable/);
    // The HSM agrees: even the trusted KEK cannot wrap it.
    const plain = await pa.proxy.lifecycle.get('plain');
    const kek = (await findKek(pa.proxy.hsm, KEK)).handle;
    await expect(pa.proxy.hsm.wrapKey(pa.proxy.hsm.keyWrap(), kek, plain.current!.object)).rejects.toMatchObject({ ckr: 'CKR_KEY_UNEXTRACTABLE' });
  });

  it('a KEK not marked trusted (made by the user) cannot wrap an exportable key: clear error, and the HSM refuses too', async () => {
    const userKek = await pa.proxy.hsm.generateKey([
      { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
      { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
      { type: P.CKA_VALUE_LEN, value: 32 },
      { type: P.CKA_TOKEN, value: true },
      { type: P.CKA_PRIVATE, value: true },
      { type: P.CKA_SENSITIVE, value: true },
      { type: P.CKA_EXTRACTABLE, value: false },
      { type: P.CKA_WRAP, value: true },
      { type: P.CKA_UNWRAP, value: true },
      { type: P.CKA_LABEL, value: 'user-kek' },
      { type: P.CKA_ID, value: KEK_ID },
    ]);
    const err = await rejection(exportKey(deps(), 'pay', 'user-kek'));
    expect(err.code).toBe('IncorrectKeyException');
    expect(err.message).toMatch(/"user-kek" is not marked trusted by the security officer/);
    const pay = await pa.proxy.lifecycle.get('pay');
    await expect(pa.proxy.hsm.wrapKey(pa.proxy.hsm.keyWrap(), userKek.handle, pay.current!.object)).rejects.toMatchObject({ ckr: 'CKR_KEY_NOT_WRAPPABLE' });
    // Setting CKA_TRUSTED afterwards is not possible for the user either.
    await expect(pa.proxy.hsm.setAttributes(userKek.handle, [{ type: P.CKA_TRUSTED, value: true }])).rejects.toThrow(/CKR_ATTRIBUTE_READ_ONLY/);
  });

  it('names a missing KEK', async () => {
    const err = await rejection(exportKey(deps(), 'pay', 'no-such-kek'));
    expect(err.code).toBe('NotFoundException');
    expect(err.message).toMatch(/no KEK "no-such-kek"/);
  });
});

describe.skipIf(NO_SO)('restore into B', () => {
  let pb: TestProxy;
  beforeAll(async () => {
    pb = await startProxyOnToken({ token: B, cleanupToken: false });
  });
  afterAll(async () => pb?.stop());

  const deps = (hsm?: HsmConnection) => ({ hsm: hsm ?? pb.proxy.hsm, lifecycle: pb.proxy.lifecycle });
  const tokenObjects = async () => (await pb.proxy.hsm.findSecretKeys({})).length;

  const flipBase64 = (b64: string, at: number) => {
    const b = Buffer.from(b64, 'base64');
    b[at % b.length]! ^= 0x01;
    return b.toString('base64');
  };
  const edit = (f: (doc: any) => void) => {
    const doc = JSON.parse(backup);
    f(doc);
    return JSON.stringify(doc, null, 2);
  };

  it.each([
    ['a byte of a wrapped version', () => edit((d) => (d.versions[1].wrapped = flipBase64(d.versions[1].wrapped, 9)))],
    ['the record', () => edit((d) => (d.record.state = 'Disabled'))],
    ['a byte of the record', () => edit((d) => (d.record.created = d.record.created.replace(/.(Z)$/, (m: string) => (m[0] === '0' ? '1Z' : '0Z'))))],
    ['the key id', () => edit((d) => (d.keyId = 'pby'))],
    ['a version number', () => edit((d) => (d.versions[0].version = 3))],
    ['a version\'s usage', () => edit((d) => (d.versions[0].usage = ['DECRYPT']))],
    ['the wrapped MAC key', () => edit((d) => (d.mac.wrappedKey = flipBase64(d.mac.wrappedKey, 3)))],
    ['the MAC', () => edit((d) => (d.mac.value = flipBase64(d.mac.value, 0)))],
    ['an added field', () => edit((d) => (d.note = 'hello'))],
    ['a dropped version', () => edit((d) => d.versions.pop())],
    ['a truncated file', () => backup.slice(0, Math.floor(backup.length / 2))],
    ['a file cut at its last brace', () => backup.trimEnd().slice(0, -1)],
    ['an empty file', () => ''],
  ])('refuses %s with InvalidCiphertextException and creates nothing', async (_what, altered) => {
    const before = await tokenObjects();
    const err = await rejection(importWrapped(deps(), altered(), KEK));
    expect(err.code).toBe('InvalidCiphertextException');
    expect(err.message).toBe('the backup file does not verify: it was altered or damaged; nothing was restored');
    expect(await tokenObjects()).toBe(before);
    await expect(pb.proxy.lifecycle.get('pay')).rejects.toMatchObject({ code: 'NotFoundException' });
    await expect(pb.proxy.lifecycle.get('pby')).rejects.toMatchObject({ code: 'NotFoundException' });
  });

  it('says when the backup was made under another KEK', async () => {
    const err = await rejection(importWrapped(deps(), backup, 'other-kek'));
    expect(err.code).toBe('IncorrectKeyException');
    expect(err.message).toContain(kekCheck);
  });

  it('is all or nothing: a failure while committing versions destroys what the restore made', async () => {
    const before = await tokenObjects();
    let calls = 0;
    const failing = new Proxy(pb.proxy.hsm, {
      get(target, prop) {
        // The restore commits each version with a marker (a generated generic secret): fail the second one.
        if (prop === 'generateKey') {
          return async (...args: Parameters<HsmConnection['generateKey']>) => {
            const isMarker = args[0].some((a) => a.type === P.CKA_ID && Buffer.isBuffer(a.value) && a.value.toString().startsWith('xks:m2;'));
            if (isMarker && ++calls === 2) throw new HsmError('DeviceError', 'injected failure');
            return target.generateKey(...args);
          };
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    await expect(importWrapped(deps(failing), backup, KEK)).rejects.toThrow(/injected failure/);
    expect(calls).toBe(2);
    expect(await tokenObjects()).toBe(before);
    await expect(pb.proxy.lifecycle.get('pay')).rejects.toMatchObject({ code: 'NotFoundException' });
  });

  it('restores every version with the same id, versions, usage and record; ciphertexts made through A decrypt through B', async () => {
    const key = await importWrapped(deps(), backup, KEK);
    expect(key.id).toBe('pay');
    expect([...key.versions.keys()].sort()).toEqual([1, 2]);
    expect(key.current?.version).toBe(2);
    expect(key.state).toBe('Enabled');
    expect(key.record).toMatchObject({ origin: 'HSM', exportable: true, usage: ['ENCRYPT', 'DECRYPT'] });
    const exported = JSON.parse(backup);
    expect(key.record?.created).toBe(exported.record.created);
    expect(key.versions.get(2)?.createdAt?.toISOString()).toBe(exported.versions[1].createdAt);
    for (const v of key.versions.values()) {
      // Restored, not generated here: CKA_LOCAL false; still sensitive, extractable only under a trusted key.
      expect(v.attrs).toMatchObject({ sensitive: true, extractable: true, local: false, neverExtractable: false, encrypt: true, decrypt: true });
    }

    const xks = xksClient(pb.httpUrl);
    expect(ciphertexts.map((c) => c.version)).toEqual([1, 2]);
    for (const c of ciphertexts) {
      const dec = await xks.decrypt('pay', decryptFields(c.enc));
      expect(dec.status, dec.text).toBe(200);
      expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe(c.plaintext);
    }
    const enc = await xks.encrypt('pay', Buffer.from('new in B'));
    expect(Buffer.from(enc.json.ciphertextMetadata, 'base64').readUInt32BE(1)).toBe(2);
  });

  it('refuses to restore the same key twice', async () => {
    const before = await tokenObjects();
    const err = await rejection(importWrapped(deps(), backup, KEK));
    expect(err.code).toBe('AlreadyExistsException');
    expect(err.message).toMatch(/"pay" already exists/);
    expect(await tokenObjects()).toBe(before);
  });

  it('the restored key stays exportable from B, under B\'s copy of the KEK', async () => {
    const again = JSON.parse(await exportKey(deps(), 'pay', KEK));
    expect(again.versions.map((v: any) => v.version)).toEqual([1, 2]);
    expect(again.source.tokenLabel).toBe('xks-b');
    // Same material: KWP is deterministic, so the same KEK wraps the same version to the same bytes.
    expect(again.versions.map((v: any) => v.wrapped)).toEqual(JSON.parse(backup).versions.map((v: any) => v.wrapped));
  });
});
