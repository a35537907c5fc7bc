// Tampering with any decrypt input must fail authentication (xks-api.md "Decrypt": any wrong AAD, IV, tag,
// ciphertext or metadata is 400 InvalidCiphertextException), over HTTP against the real server and SoftHSM token.
import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { aes256KeyTemplate } from '../../src/hsm/templates.js';
import { legacyVersionId as versionId } from '../helpers/legacy-layout.js';
import { DEMO_KEYS } from '../helpers/proxy.js';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields, metadata } from '../helpers/xks-client.js';

const t = useProxyOnToken({ keys: { ...DEMO_KEYS, foo2: { encrypt: true, decrypt: true }, rotated: { encrypt: true, decrypt: true } } });
const { xks } = t;
const PT = Buffer.from('the plaintext KMS wraps: a 32-byte data key........');
const AAD = Buffer.from('project=nile,department=marketing');
let enc: Record<string, string>;
let good: Record<string, unknown>;

const b64 = (s: string) => Buffer.from(s, 'base64');
const flipBit = (s: string, byte: number, bit = 0) => {
  const b = b64(s);
  const i = byte < 0 ? b.length + byte : byte;
  b[i] = b[i]! ^ (1 << bit);
  return b.toString('base64');
};
const setByte = (s: string, byte: number, value: number) => {
  const b = b64(s);
  const i = byte < 0 ? b.length + byte : byte;
  b[i] = b[i] === value ? value ^ 0xff : value;
  return b.toString('base64');
};
const truncate = (s: string, n = 1) => b64(s).subarray(0, b64(s).length - n).toString('base64');
const extend = (s: string, extra = Buffer.from([0])) => Buffer.concat([b64(s), extra]).toString('base64');

async function expectError(fields: Record<string, unknown>, status: number, errorName: string, key = 'foo') {
  const r = await xks.decrypt(key, fields);
  expect({ status: r.status, errorName: r.json?.errorName }, JSON.stringify(fields).slice(0, 300)).toEqual({ status, errorName });
  expect(r.json.plaintext).toBeUndefined();
}
const invalidCiphertext = (fields: Record<string, unknown>, key = 'foo') => expectError(fields, 400, 'InvalidCiphertextException', key);
const validation = (fields: Record<string, unknown>) => expectError(fields, 400, 'ValidationException');
const without = (field: string) => {
  const { [field]: _, ...rest } = good;
  return rest;
};

async function expectGoodStillDecrypts() {
  const r = await xks.decrypt('foo', good);
  expect(r.status).toBe(200);
  expect(b64(r.json.plaintext)).toEqual(PT);
}

beforeAll(async () => {
  const r = await xks.encrypt('foo', PT, { additionalAuthenticatedData: AAD.toString('base64') });
  expect(r.status).toBe(200);
  enc = r.json;
  good = decryptFields(enc, AAD);
  expect(b64(enc.ciphertextMetadata!)).toHaveLength(5);
  await expectGoodStillDecrypts();
});

describe('ciphertext', () => {
  it('a flipped bit anywhere is InvalidCiphertextException', async () => {
    const n = b64(enc.ciphertext!).length;
    for (const byte of [0, 1, Math.floor(n / 2), n - 1]) {
      for (const bit of [0, 7]) await invalidCiphertext({ ...good, ciphertext: flipBit(enc.ciphertext!, byte, bit) });
    }
  });
  it('a changed byte, a truncation or an extension is InvalidCiphertextException', async () => {
    await invalidCiphertext({ ...good, ciphertext: setByte(enc.ciphertext!, 5, 0x00) });
    await invalidCiphertext({ ...good, ciphertext: truncate(enc.ciphertext!) });
    await invalidCiphertext({ ...good, ciphertext: truncate(enc.ciphertext!, 16) });
    await invalidCiphertext({ ...good, ciphertext: extend(enc.ciphertext!) });
    await invalidCiphertext({ ...good, ciphertext: extend(enc.ciphertext!, b64(enc.authenticationTag!)) });
  });
  it('a missing or empty ciphertext is ValidationException', async () => {
    await validation(without('ciphertext'));
    await validation({ ...good, ciphertext: '' });
  });
});

describe('initialization vector', () => {
  it('a flipped bit or changed byte is InvalidCiphertextException', async () => {
    for (const byte of [0, 6, 11]) await invalidCiphertext({ ...good, initializationVector: flipBit(enc.initializationVector!, byte, byte % 8) });
    await invalidCiphertext({ ...good, initializationVector: setByte(enc.initializationVector!, 3, 0xaa) });
  });
  it('a 16-byte IV (a valid size) starting with the right 12 bytes is InvalidCiphertextException', async () => {
    await invalidCiphertext({ ...good, initializationVector: extend(enc.initializationVector!, Buffer.alloc(4)) });
  });
  it('an IV from another encryption is InvalidCiphertextException', async () => {
    const other = await xks.encrypt('foo', PT, { additionalAuthenticatedData: AAD.toString('base64') });
    await invalidCiphertext({ ...good, initializationVector: other.json.initializationVector });
  });
  it('a truncated (11-byte), 13-byte or missing IV is ValidationException', async () => {
    await validation({ ...good, initializationVector: truncate(enc.initializationVector!) });
    await validation({ ...good, initializationVector: extend(enc.initializationVector!) });
    await validation(without('initializationVector'));
  });
});

describe('authentication tag', () => {
  it('a flipped bit anywhere is InvalidCiphertextException', async () => {
    for (const byte of [0, 7, 15]) for (const bit of [0, 3, 7]) await invalidCiphertext({ ...good, authenticationTag: flipBit(enc.authenticationTag!, byte, bit) });
  });
  it('a changed byte, an all-zero tag or the tag of another encryption is InvalidCiphertextException', async () => {
    await invalidCiphertext({ ...good, authenticationTag: setByte(enc.authenticationTag!, 9, 0x42) });
    await invalidCiphertext({ ...good, authenticationTag: Buffer.alloc(16).toString('base64') });
    const other = await xks.encrypt('foo', PT, { additionalAuthenticatedData: AAD.toString('base64') });
    await invalidCiphertext({ ...good, authenticationTag: other.json.authenticationTag });
  });
  it('a tag of 15 or 17 bytes, or no tag, is ValidationException', async () => {
    await validation({ ...good, authenticationTag: truncate(enc.authenticationTag!) });
    await validation({ ...good, authenticationTag: extend(enc.authenticationTag!) });
    await validation(without('authenticationTag'));
  });
});

describe('additional authenticated data', () => {
  it('a flipped bit, changed byte, truncation or extension is InvalidCiphertextException', async () => {
    const a = AAD.toString('base64');
    await invalidCiphertext({ ...good, additionalAuthenticatedData: flipBit(a, 0) });
    await invalidCiphertext({ ...good, additionalAuthenticatedData: flipBit(a, -1, 7) });
    await invalidCiphertext({ ...good, additionalAuthenticatedData: setByte(a, 10, 0x20) });
    await invalidCiphertext({ ...good, additionalAuthenticatedData: truncate(a) });
    await invalidCiphertext({ ...good, additionalAuthenticatedData: extend(a) });
  });
  it('a dropped or empty AAD is InvalidCiphertextException', async () => {
    await invalidCiphertext(without('additionalAuthenticatedData'));
    await invalidCiphertext({ ...good, additionalAuthenticatedData: '' });
  });
  it('moving bytes between the AAD and the metadata is InvalidCiphertextException (the length prefixes bind them)', async () => {
    // AAD' = AAD || metadata[0], metadata' = metadata[1..]: the same bytes without the length prefixes.
    const md = b64(enc.ciphertextMetadata!);
    await invalidCiphertext({
      ...good,
      additionalAuthenticatedData: Buffer.concat([AAD, md.subarray(0, 1)]).toString('base64'),
      ciphertextMetadata: md.subarray(1).toString('base64'),
    });
  });
});

describe('ciphertextMetadata', () => {
  it('a flipped bit in any byte, a truncation or an extension is InvalidCiphertextException', async () => {
    for (let byte = 0; byte < 5; byte++) for (const bit of [0, 7]) await invalidCiphertext({ ...good, ciphertextMetadata: flipBit(enc.ciphertextMetadata!, byte, bit) });
    await invalidCiphertext({ ...good, ciphertextMetadata: truncate(enc.ciphertextMetadata!) });
    await invalidCiphertext({ ...good, ciphertextMetadata: extend(enc.ciphertextMetadata!) });
    await invalidCiphertext({ ...good, ciphertextMetadata: '' });
  });
  it('dropping the metadata is InvalidCiphertextException (it is bound in the GCM AAD)', async () => {
    await invalidCiphertext(without('ciphertextMetadata'));
  });
  it('metadata naming version 0, version 2 or another format is InvalidCiphertextException', async () => {
    for (const hex of ['0100000002', '0100000000', '01ffffffff', '0200000001', '0000000001']) {
      await invalidCiphertext({ ...good, ciphertextMetadata: Buffer.from(hex, 'hex').toString('base64') });
    }
  });
  it("the spec example's metadata (not written by this proxy) is InvalidCiphertextException", async () => {
    await invalidCiphertext({ ...good, ciphertextMetadata: 'a2V5X3ZlcnNpb249MQ==' });
  });
  it('metadata longer than 20 bytes is refused before the HSM', async () => {
    const r = await xks.decrypt('foo', { ...good, ciphertextMetadata: Buffer.alloc(21, 1).toString('base64') });
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(['ValidationException', 'UnsupportedOperationException']).toContain(r.json.errorName);
  });
});

describe('the key', () => {
  it('decrypting through another key with decrypt permission is InvalidCiphertextException', async () => {
    await invalidCiphertext(good, 'foo2');
    await invalidCiphertext(good, 'decrypt_only_key');
  });
  it('decrypting through an unknown key is KeyNotFoundException', async () => {
    await expectError(good, 404, 'KeyNotFoundException', 'no_such_key');
  });
});

describe('what is not bound', () => {
  it('the requestMetadata is opaque: another request id, operation or principal still decrypts', async () => {
    const r = await xks.decrypt('foo', {
      ...good,
      requestMetadata: metadata('ReEncrypt', { awsPrincipalArn: 'arn:aws:iam::999999999999:role/Other', kmsRequestId: '' }),
    });
    expect(r.status).toBe(200);
    expect(b64(r.json.plaintext)).toEqual(PT);
  });
});

describe('key versions', () => {
  it('after rotation, each ciphertext decrypts only with the version its metadata names', async () => {
    const v1 = await xks.encrypt('rotated', PT, { additionalAuthenticatedData: AAD.toString('base64') });
    expect(b64(v1.json.ciphertextMetadata).toString('hex')).toBe('0100000001');
    // Rotate: a version-2 object with the same label, as the key tooling makes it.
    await t.proxy.hsm.generateKey(aes256KeyTemplate({ label: 'rotated', id: versionId(2), encrypt: true, decrypt: true, exportable: false }));
    t.proxy.catalogue.invalidate('rotated');
    const v2 = await xks.encrypt('rotated', PT, { additionalAuthenticatedData: AAD.toString('base64') });
    expect(b64(v2.json.ciphertextMetadata).toString('hex')).toBe('0100000002');

    for (const e of [v1.json, v2.json]) {
      const ok = await xks.decrypt('rotated', decryptFields(e, AAD));
      expect(ok.status).toBe(200);
      expect(b64(ok.json.plaintext)).toEqual(PT);
    }
    // Relabelling a ciphertext with the other version fails: other key material and other GCM AAD.
    await invalidCiphertext({ ...decryptFields(v1.json, AAD), ciphertextMetadata: v2.json.ciphertextMetadata }, 'rotated');
    await invalidCiphertext({ ...decryptFields(v2.json, AAD), ciphertextMetadata: v1.json.ciphertextMetadata }, 'rotated');
    await invalidCiphertext({ ...decryptFields(v2.json, AAD), ciphertextMetadata: Buffer.from('0100000003', 'hex').toString('base64') }, 'rotated');
  });
});

describe('logging', () => {
  it('a tampered decrypt is logged once, at info, as InvalidCiphertextException (not as an unexpected failure)', async () => {
    // architecture.md: one log line per request. A client can send bad ciphertexts at will; each must not become an
    // error-level "unexpected failure" line (alert noise, log flooding).
    const rid = `tamper-log-${Date.now()}`;
    const r = await xks.decrypt('foo', { ...good, additionalAuthenticatedData: 'b3RoZXI=', requestMetadata: metadata('Decrypt', { kmsRequestId: rid }) });
    expect(r.json.errorName).toBe('InvalidCiphertextException');
    await new Promise((res) => setTimeout(res, 20));
    const lines = t.logs.filter((l) => l.includes(rid)).map((l) => JSON.parse(l));
    expect(lines.map((l) => ({ level: l.level, msg: l.msg, errorName: l.errorName }))).toEqual([
      { level: 30, msg: 'xks request', errorName: 'InvalidCiphertextException' },
    ]);
  });
});

describe('after all the tampering', () => {
  it('the untouched request still decrypts, repeatedly', async () => {
    for (let i = 0; i < 3; i++) await expectGoodStillDecrypts();
  });
  it('fresh encryptions still work', async () => {
    const pt = randomBytes(200);
    const e = await xks.encrypt('foo', pt);
    const d = await xks.decrypt('foo', decryptFields(e.json));
    expect(b64(d.json.plaintext)).toEqual(pt);
  });
});
