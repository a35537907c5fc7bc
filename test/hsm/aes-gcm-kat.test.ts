// AES-GCM through the real token must be byte-for-byte AES-256-GCM: a known-answer test against node:crypto
// with a test-only key whose value we know (created with C_CreateObject, a session object, extractable).
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HsmError } from '../../src/hsm/errors.js';
import type { HsmConnection, Handle } from '../../src/hsm/hsm-connection.js';
import { P } from '../../src/hsm/module.js';
import { createTestToken, TOKEN_FACTS, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';
import { createKnownAesKey, libraryOf, openTestHsm } from '../helpers/test-hsm.js';

const KEY = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');

let token: TestToken;
let hsm: HsmConnection;
let key: Handle;
let encryptOnly: Handle;

function nodeEncrypt(k: Buffer, iv: Buffer, pt: Buffer, aad: Buffer) {
  const c = createCipheriv('aes-256-gcm', k, iv, { authTagLength: 16 });
  c.setAAD(aad);
  const ciphertext = Buffer.concat([c.update(pt), c.final()]);
  return { ciphertext, tag: c.getAuthTag() };
}

function nodeDecrypt(k: Buffer, iv: Buffer, ct: Buffer, tag: Buffer, aad: Buffer) {
  const d = createDecipheriv('aes-256-gcm', k, iv, { authTagLength: 16 });
  d.setAAD(aad);
  d.setAuthTag(tag);
  return Buffer.concat([d.update(ct), d.final()]);
}

function createKnownKey(value: Buffer, usage: { encrypt: boolean; decrypt: boolean }): Promise<Handle> {
  return createKnownAesKey(hsm, value, { ...usage, label: 'kat-test-key' });
}

async function expectHsmError(p: Promise<unknown>, kind: string) {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e, 'the call should have failed').toBeInstanceOf(HsmError);
  expect((e as HsmError).code).toBe(kind);
}

beforeAll(async () => {
  token = createTestToken('kat');
  // callThreadBusyAt 0: in callMode thread every call goes to the thread, however idle the loop.
  hsm = await openTestHsm(token, { callThreadBusyAt: 0 });
  key = await createKnownKey(KEY, { encrypt: true, decrypt: true });
  encryptOnly = await createKnownKey(KEY, { encrypt: true, decrypt: false });
});

afterAll(() => {
  hsm?.close();
  token?.cleanup();
});

describe.each(['sync', 'async', 'thread'] as const)(`AES-256-GCM on ${TOKEN_KIND} (%s calls)`, (callMode) => {
  beforeAll(() => {
    // The profile chooses where calls run; exercise every code path on the same connection.
    hsm.capabilities.callMode = callMode;
  });

  // NSS keeps its token keys sensitive whatever the template says (its value cannot be read back).
  it.skipIf(!TOKEN_FACTS.nonSensitiveKeys)('the test key holds the known value', () => {
    const { mod, withSession } = libraryOf(hsm);
    const [v] = withSession((s) => mod.C_GetAttributeValue(s, key, [{ type: P.CKA_VALUE }]));
    expect(v!.value).toEqual(KEY);
  });

  it('encrypts exactly as node:crypto does, for the returned IV and the same AAD', async () => {
    for (const [ptLen, aadLen] of [
      [1, 0],
      [12, 3],
      [16, 16],
      [33, 8],
      [4096, 8192 + 8],
      [8192, 65535],
    ] as const) {
      const pt = randomBytes(ptLen);
      const aad = randomBytes(aadLen);
      const out = await hsm.encryptGcm(key, pt, aad);
      expect(out.iv).toHaveLength(12);
      expect(out.tag).toHaveLength(16);
      expect(out.ciphertext).toHaveLength(ptLen);
      const ref = nodeEncrypt(KEY, out.iv, pt, aad);
      expect(out.ciphertext.equals(ref.ciphertext), `ciphertext ${ptLen}/${aadLen}`).toBe(true);
      expect(out.tag.equals(ref.tag), `tag ${ptLen}/${aadLen}`).toBe(true);
      expect(nodeDecrypt(KEY, out.iv, out.ciphertext, out.tag, aad)).toEqual(pt);
    }
  });

  it('decrypts what node:crypto encrypted, with 12- and 16-byte IVs', async () => {
    for (const ivLen of [12, 16]) {
      const iv = randomBytes(ivLen);
      const pt = randomBytes(100);
      const aad = Buffer.concat([Buffer.from([0, 5]), Buffer.from('hello'), Buffer.from([0])]);
      const ref = nodeEncrypt(KEY, iv, pt, aad);
      const back = await hsm.decryptGcm(key, iv, ref.ciphertext, ref.tag, aad);
      expect(back).toEqual(pt);
    }
  });

  it('a flipped tag, ciphertext, IV or AAD bit is DataInvalid, and the sessions stay usable', async () => {
    const pt = Buffer.from('attack at dawn');
    const aad = Buffer.from('aad');
    const iv = randomBytes(12);
    const ref = nodeEncrypt(KEY, iv, pt, aad);
    const flip = (b: Buffer, i: number) => {
      const c = Buffer.from(b);
      c[i] = c[i]! ^ 0x01;
      return c;
    };
    const openBefore = hsm.sessionStats.open;
    await expectHsmError(hsm.decryptGcm(key, iv, ref.ciphertext, flip(ref.tag, 0), aad), 'DataInvalid');
    await expectHsmError(hsm.decryptGcm(key, iv, ref.ciphertext, flip(ref.tag, 15), aad), 'DataInvalid');
    await expectHsmError(hsm.decryptGcm(key, iv, flip(ref.ciphertext, 3), ref.tag, aad), 'DataInvalid');
    await expectHsmError(hsm.decryptGcm(key, flip(iv, 11), ref.ciphertext, ref.tag, aad), 'DataInvalid');
    await expectHsmError(hsm.decryptGcm(key, iv, ref.ciphertext, ref.tag, flip(aad, 0)), 'DataInvalid');
    // Data errors do not cost a session: nothing was discarded, and the next operations work.
    expect(hsm.sessionStats.open).toBe(openBefore);
    const out = await hsm.encryptGcm(key, pt, aad);
    expect(out.ciphertext.equals(nodeEncrypt(KEY, out.iv, pt, aad).ciphertext)).toBe(true);
    expect(await hsm.decryptGcm(key, iv, ref.ciphertext, ref.tag, aad)).toEqual(pt);
  });

  it('many failed decrypts in a row leave every pooled session clean', async () => {
    const iv = randomBytes(12);
    const ref = nodeEncrypt(KEY, iv, Buffer.from('x'), Buffer.alloc(0));
    const badTag = Buffer.from(ref.tag);
    badTag[7] = badTag[7]! ^ 0x80;
    // More failures than the pool has sessions, concurrently, so every session sees one.
    const results = await Promise.allSettled(Array.from({ length: 12 }, () => hsm.decryptGcm(key, iv, ref.ciphertext, badTag, Buffer.alloc(0))));
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect(((r as PromiseRejectedResult).reason as HsmError).code).toBe('DataInvalid');
    }
    const ok = await Promise.all(Array.from({ length: 12 }, () => hsm.decryptGcm(key, iv, ref.ciphertext, ref.tag, Buffer.alloc(0))));
    for (const b of ok) expect(b).toEqual(Buffer.from('x'));
  });

  it('a key without CKA_DECRYPT answers KeyFunctionNotPermitted, and the session stays usable', async () => {
    const out = await hsm.encryptGcm(encryptOnly, Buffer.from('x'), Buffer.alloc(0));
    expect(out.ciphertext.equals(nodeEncrypt(KEY, out.iv, Buffer.from('x'), Buffer.alloc(0)).ciphertext)).toBe(true);
    await expectHsmError(hsm.decryptGcm(encryptOnly, out.iv, out.ciphertext, out.tag, Buffer.alloc(0)), 'KeyFunctionNotPermitted');
    expect(await hsm.decryptGcm(key, out.iv, out.ciphertext, out.tag, Buffer.alloc(0))).toEqual(Buffer.from('x'));
  });

  it('a truncated ciphertext+tag (shorter than a tag) fails cleanly and the next call works', async () => {
    const iv = randomBytes(12);
    const e = await hsm.decryptGcm(key, iv, Buffer.alloc(0), Buffer.alloc(8), Buffer.alloc(0)).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(HsmError);
    const out = await hsm.encryptGcm(key, Buffer.from('after'), Buffer.alloc(0));
    expect(await hsm.decryptGcm(key, out.iv, out.ciphertext, out.tag, Buffer.alloc(0))).toEqual(Buffer.from('after'));
  });
});

describe('a call that leaves an operation active', () => {
  // SoftHSM refuses an empty GCM plaintext and leaves the operation open; NSS encrypts it (the empty plaintext is
  // legal in GCM), so there is no failed call to recover from.
  it.skipIf(!TOKEN_FACTS.softhsm)('an empty plaintext fails (CKR_ARGUMENTS_BAD), its session is thrown away, and the next encrypts work', async () => {
    hsm.capabilities.callMode = 'sync';
    await expectHsmError(hsm.encryptGcm(key, Buffer.alloc(0), Buffer.alloc(0)), 'ArgumentsBad');
    // SoftHSM leaves the operation open on that session: reusing it would answer CKR_OPERATION_ACTIVE.
    for (let i = 0; i < 8; i++) {
      const out = await hsm.encryptGcm(key, Buffer.from([i]), Buffer.alloc(0));
      expect(out.ciphertext.equals(nodeEncrypt(KEY, out.iv, Buffer.from([i]), Buffer.alloc(0)).ciphertext)).toBe(true);
    }
  });
});

describe('IVs', () => {
  it('1000 encrypts give 1000 distinct 12-byte IVs, none all-zero', async () => {
    hsm.capabilities.callMode = 'sync';
    const ivs = new Set<string>();
    const pt = Buffer.from('same plaintext');
    for (let i = 0; i < 1000; i++) {
      const out = await hsm.encryptGcm(key, pt, Buffer.alloc(0));
      expect(out.iv).toHaveLength(12);
      ivs.add(out.iv.toString('hex'));
    }
    expect(ivs.size).toBe(1000);
    expect(ivs.has('00'.repeat(12))).toBe(false);
  });

  it('the returned IV is a copy: later encrypts do not change an earlier result', async () => {
    const a = await hsm.encryptGcm(key, Buffer.from('a'), Buffer.alloc(0));
    const saved = { iv: Buffer.from(a.iv), ct: Buffer.from(a.ciphertext), tag: Buffer.from(a.tag) };
    for (let i = 0; i < 20; i++) await hsm.encryptGcm(key, randomBytes(64), Buffer.alloc(0));
    expect(a.iv).toEqual(saved.iv);
    expect(a.ciphertext).toEqual(saved.ct);
    expect(a.tag).toEqual(saved.tag);
  });
});
