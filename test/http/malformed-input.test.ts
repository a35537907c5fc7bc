// Malformed bodies against every XKS operation, over HTTP against the real server and a real token.
// Each must get a 4xx (or 501 for sizes) compact JSON error that names the problem, and the server keeps serving.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XKS_ERRORS } from '../../src/xks/errors.js';
import { DEMO_KEYS } from '../helpers/proxy.js';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { sendRaw } from '../helpers/raw-xks.js';
import { decryptFields, metadata, xksPath, type XksResponse } from '../helpers/xks-client.js';

const t = useProxyOnToken({ keys: DEMO_KEYS });
const { xks } = t;
let validDecrypt: Record<string, unknown>;

const ENC = xksPath('keys/foo/encrypt');
const DEC = xksPath('keys/foo/decrypt');
const META = xksPath('keys/foo/metadata');
const HEALTH = xksPath('health');

const encBody = (extra: Record<string, unknown> = {}) => ({ requestMetadata: metadata('Encrypt'), plaintext: 'SGVsbG8gV29ybGQh', encryptionAlgorithm: 'AES_GCM', ...extra });
const rm = (extra: Record<string, unknown>) => ({ ...metadata('Encrypt'), ...extra });
const send = (path: string, body: unknown) => sendRaw(t.httpUrl, path, Buffer.isBuffer(body) ? body : typeof body === 'string' ? body : JSON.stringify(body));

/** What every error answer must look like (xks-api.md "Errors", "Conformance notes"). */
function expectXksError(r: XksResponse, status: number, errorName: string, label: string) {
  expect({ status: r.status, errorName: r.json?.errorName }, `${label}: ${r.text.slice(0, 200)}`).toEqual({ status, errorName });
  expectErrorShape(r, label);
}

function expectErrorShape(r: XksResponse, label: string) {
  expect(r.headers['content-type'], label).toMatch(/^application\/json/);
  expect(r.text, label).not.toMatch(/[\r\n]/);
  expect(r.text, label).toBe(JSON.stringify(r.json)); // compact
  expect(Object.keys(r.json).sort(), label).toEqual(expect.arrayContaining(['errorName']));
  expect(Object.keys(XKS_ERRORS), label).toContain(r.json.errorName);
  if (r.json.errorMessage !== undefined) {
    expect(typeof r.json.errorMessage, label).toBe('string');
    expect(r.json.errorMessage.length, label).toBeLessThan(512);
    expect(r.json.errorMessage, label).toMatch(/^[\x20-\x7e]*$/);
  }
}

async function expectServerWorks() {
  const pt = randomBytes(48);
  const e = await xks.encrypt('foo', pt);
  expect(e.status).toBe(200);
  const d = await xks.decrypt('foo', decryptFields(e.json));
  expect(Buffer.from(d.json.plaintext, 'base64')).toEqual(pt);
}

beforeAll(async () => {
  const e = await xks.encrypt('foo', Buffer.from('hello'));
  validDecrypt = { requestMetadata: metadata('Decrypt'), encryptionAlgorithm: 'AES_GCM', ...decryptFields(e.json) };
});

const NOT_AN_OBJECT: [string, string | Buffer][] = [
  ['not JSON', 'hello world'],
  ['empty body', ''],
  ['truncated JSON', JSON.stringify(encBody()).slice(0, 40)],
  ['truncated JSON (one brace short)', JSON.stringify(encBody()).slice(0, -1)],
  ['trailing garbage', JSON.stringify(encBody()) + 'x'],
  ['two JSON documents', JSON.stringify(encBody()) + JSON.stringify(encBody())],
  ['JSON array', '[]'],
  ['JSON array of a valid body', JSON.stringify([encBody()])],
  ['null', 'null'],
  ['number', '42'],
  ['string', '"plaintext"'],
  ['boolean', 'true'],
  ['single quotes', "{'plaintext':'SGVsbG8='}"],
  ['a byte-order mark', '\ufeff' + JSON.stringify(encBody())],
  ['deeply nested arrays', '['.repeat(10_000) + ']'.repeat(10_000)],
  ['deeply nested objects', '{"a":'.repeat(5_000) + '1' + '}'.repeat(5_000)],
  ['NUL bytes', Buffer.from([0, 0, 0, 0])],
  ['invalid UTF-8 outside strings', Buffer.concat([Buffer.from('{"requestMetadata":'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('}')])],
  ['lone UTF-16 surrogate escapes', '{"requestMetadata":"\\ud800"}'],
];

describe.each([
  ['Encrypt', ENC],
  ['Decrypt', DEC],
  ['GetKeyMetadata', META],
  ['GetHealthStatus', HEALTH],
])('%s: bodies that are not a request object', (_op, path) => {
  it.each(NOT_AN_OBJECT)('%s is ValidationException', async (label, body) => {
    expectXksError(await send(path, body), 400, 'ValidationException', label);
  });
  it('{} is ValidationException', async () => {
    expectXksError(await send(path, '{}'), 400, 'ValidationException', '{}');
  });
  it('requestMetadata of the wrong type is ValidationException', async () => {
    for (const v of [null, 'x', 1, [], true, [metadata('Encrypt')]]) {
      expectXksError(await send(path, { ...encBody(), ...validDecrypt, requestMetadata: v }), 400, 'ValidationException', JSON.stringify(v));
    }
  });
  it('deeply nested junk as requestMetadata is ValidationException', async () => {
    const junk = '{"requestMetadata":' + '{"a":['.repeat(2000) + '1' + ']}'.repeat(2000) + '}';
    expectXksError(await send(path, junk), 400, 'ValidationException', 'nested');
  });
});

describe('requestMetadata fields', () => {
  const cases: [string, Record<string, unknown>][] = [
    ['awsPrincipalArn a number', { awsPrincipalArn: 1 }],
    ['awsPrincipalArn null', { awsPrincipalArn: null }],
    ['awsPrincipalArn an object', { awsPrincipalArn: { arn: 'x' } }],
    ['kmsKeyArn an array', { kmsKeyArn: ['arn:aws:kms:us-east-1:1:key/x'] }],
    ['kmsKeyArn missing', { kmsKeyArn: undefined }],
    ['kmsRequestId a number', { kmsRequestId: 123 }],
    ['kmsOperation missing', { kmsOperation: undefined }],
    ['kmsOperation a boolean', { kmsOperation: false }],
    ['kmsViaService a number', { kmsViaService: 7 }],
    ['awsSourceVpc an object', { awsSourceVpc: {} }],
    ['an ARN of 3000 characters', { awsPrincipalArn: 'arn:aws:iam::123456789012:user/' + 'A'.repeat(2970) }],
    ['a kmsKeyArn of 3000 characters', { kmsKeyArn: 'arn:aws:kms:us-east-1:123456789012:key/' + 'b'.repeat(2960) }],
  ];
  it.each(cases)('encrypt with %s is ValidationException', async (label, extra) => {
    expectXksError(await send(ENC, encBody({ requestMetadata: rm(extra) })), 400, 'ValidationException', label);
  });
  it.each(cases.filter(([l]) => !l.startsWith('kmsKeyArn missing')))('decrypt with %s is ValidationException', async (label, extra) => {
    expectXksError(await send(DEC, { ...validDecrypt, requestMetadata: rm(extra) }), 400, 'ValidationException', label);
  });
  it('the error message names the field', async () => {
    const r = await send(ENC, encBody({ requestMetadata: rm({ awsPrincipalArn: 1 }) }));
    expect(r.json.errorMessage).toContain('awsPrincipalArn');
  });
  it('ARNs of exactly 2048 characters and an empty kmsRequestId are accepted', async () => {
    const arn = 'arn:aws:iam::123456789012:user/' + 'A'.repeat(2048 - 31);
    expect(arn).toHaveLength(2048);
    const r = await send(ENC, encBody({ requestMetadata: rm({ awsPrincipalArn: arn, kmsKeyArn: arn, kmsRequestId: '' }) }));
    expect(r.status).toBe(200);
  });
  it('health with an extra awsPrincipalArn of the wrong type is still fine (unknown to health), but kmsRequestId must be a string', async () => {
    expectXksError(await send(HEALTH, { requestMetadata: { kmsRequestId: 1, kmsOperation: 'KmsHealthCheck' } }), 400, 'ValidationException', 'rid');
    expectXksError(await send(HEALTH, { requestMetadata: { kmsRequestId: 'x' } }), 400, 'ValidationException', 'no op');
  });
});

describe('Encrypt fields', () => {
  const bad: [string, Record<string, unknown>][] = [
    ['plaintext not Base64', { plaintext: 'Hello World!!' }],
    ['plaintext with characters outside Base64', { plaintext: 'SGVs*bG8=' }],
    ['plaintext URL-safe Base64', { plaintext: Buffer.from([0xfb, 0xff, 0xbf]).toString('base64url') }],
    ['plaintext with a space', { plaintext: 'SGVs bG8=' }],
    ['plaintext with a newline', { plaintext: 'SGVsbG8=\n' }],
    ['plaintext with a leading tab', { plaintext: '\tSGVsbG8=' }],
    ['plaintext without its padding', { plaintext: 'SGVsbG8' }],
    ['plaintext with extra padding', { plaintext: 'SGVsbG8==' }],
    ['plaintext with non-zero padding bits', { plaintext: 'SGVsbG9=' }],
    ['plaintext of one stray character', { plaintext: 'S' }],
    ['plaintext only padding', { plaintext: '====' }],
    ['plaintext empty', { plaintext: '' }],
    ['plaintext null', { plaintext: null }],
    ['plaintext a number', { plaintext: 1234 }],
    ['plaintext an array', { plaintext: ['SGVsbG8='] }],
    ['plaintext an object', { plaintext: { data: 'SGVsbG8=' } }],
    ['plaintext with a non-ASCII character', { plaintext: 'SGVsbG8\u00e9' }],
    ['encryptionAlgorithm AES_GCM_256', { encryptionAlgorithm: 'AES_GCM_256' }],
    ['encryptionAlgorithm lower case', { encryptionAlgorithm: 'aes_gcm' }],
    ['encryptionAlgorithm RSAES_OAEP_SHA_256', { encryptionAlgorithm: 'RSAES_OAEP_SHA_256' }],
    ['encryptionAlgorithm missing', { encryptionAlgorithm: undefined }],
    ['encryptionAlgorithm null', { encryptionAlgorithm: null }],
    ['encryptionAlgorithm with a trailing space', { encryptionAlgorithm: 'AES_GCM ' }],
    ['ciphertextDataIntegrityValueAlgorithm SHA_512', { ciphertextDataIntegrityValueAlgorithm: 'SHA_512' }],
    ['ciphertextDataIntegrityValueAlgorithm lower case', { ciphertextDataIntegrityValueAlgorithm: 'sha_256' }],
    ['ciphertextDataIntegrityValueAlgorithm empty', { ciphertextDataIntegrityValueAlgorithm: '' }],
    ['ciphertextDataIntegrityValueAlgorithm a number', { ciphertextDataIntegrityValueAlgorithm: 256 }],
    ['ciphertextDataIntegrityValueAlgorithm null', { ciphertextDataIntegrityValueAlgorithm: null }],
    ['additionalAuthenticatedData not Base64', { additionalAuthenticatedData: 'not base64!' }],
    ['additionalAuthenticatedData URL-safe', { additionalAuthenticatedData: Buffer.from([0xfb, 0xff]).toString('base64url') }],
    ['additionalAuthenticatedData a number', { additionalAuthenticatedData: 5 }],
  ];
  it.each(bad)('%s is ValidationException', async (label, extra) => {
    expectXksError(await send(ENC, encBody(extra)), 400, 'ValidationException', label);
  });

  it('plaintext of 8193 bytes is UnsupportedOperationException (501); 8192 bytes works', async () => {
    expectXksError(await send(ENC, encBody({ plaintext: randomBytes(8193).toString('base64') })), 501, 'UnsupportedOperationException', '8193');
    const ok = await send(ENC, encBody({ plaintext: randomBytes(8192).toString('base64') }));
    expect(ok.status).toBe(200);
    expect(Buffer.from(ok.json.ciphertext, 'base64')).toHaveLength(8192);
  });

  it('AAD larger than the proxy supports is UnsupportedOperationException (501)', async () => {
    expectXksError(await send(ENC, encBody({ additionalAuthenticatedData: randomBytes(16385).toString('base64') })), 501, 'UnsupportedOperationException', 'aad');
  });

  it('an empty AAD is accepted (an absent field has length 0)', async () => {
    const r = await send(ENC, encBody({ additionalAuthenticatedData: '' }));
    expect(r.status).toBe(200);
  });
});

describe('Decrypt fields', () => {
  const iv = (n: number) => randomBytes(n).toString('base64');
  const bad: [string, Record<string, unknown>][] = [
    ['an IV of 11 bytes', { initializationVector: iv(11) }],
    ['an IV of 13 bytes', { initializationVector: iv(13) }],
    ['an IV of 0 bytes', { initializationVector: '' }],
    ['an IV of 17 bytes', { initializationVector: iv(17) }],
    ['an IV not Base64', { initializationVector: '????????????????' }],
    ['no IV', { initializationVector: undefined }],
    ['a tag of 15 bytes', { authenticationTag: iv(15) }],
    ['a tag of 12 bytes', { authenticationTag: iv(12) }],
    ['a tag not Base64', { authenticationTag: 'tag' }],
    ['a tag with whitespace', { authenticationTag: ' ' + iv(16) }],
    ['no tag', { authenticationTag: undefined }],
    ['ciphertext not Base64', { ciphertext: '%%%%' }],
    ['ciphertext empty', { ciphertext: '' }],
    ['ciphertext a number', { ciphertext: 42 }],
    ['no ciphertext', { ciphertext: undefined }],
    ['ciphertextMetadata not Base64', { ciphertextMetadata: 'key_version=1' }],
    ['ciphertextMetadata a number', { ciphertextMetadata: 1 }],
    ['encryptionAlgorithm wrong', { encryptionAlgorithm: 'AES_CBC' }],
    ['encryptionAlgorithm missing', { encryptionAlgorithm: undefined }],
  ];
  it.each(bad)('%s is ValidationException', async (label, extra) => {
    expectXksError(await send(DEC, { ...validDecrypt, ...extra }), 400, 'ValidationException', label);
  });
  it('ciphertext of 8193 bytes is UnsupportedOperationException (501)', async () => {
    expectXksError(await send(DEC, { ...validDecrypt, ciphertext: randomBytes(8193).toString('base64') }), 501, 'UnsupportedOperationException', 'ct');
  });
  it('a 16-byte IV is well-formed, so a wrong one is InvalidCiphertextException', async () => {
    expectXksError(await send(DEC, { ...validDecrypt, initializationVector: iv(16) }), 400, 'InvalidCiphertextException', 'iv16');
  });
});

describe('oversized bodies', () => {
  it('a body over the 32 KiB limit is UnsupportedOperationException (501), with Content-Length', async () => {
    const big = JSON.stringify(encBody({ padding: 'x'.repeat(40 * 1024) }));
    const r = await send(ENC, big);
    expectXksError(r, 501, 'UnsupportedOperationException', 'big');
    await expectServerWorks();
  });
  it('a 1 MiB body sent chunked, without Content-Length, is UnsupportedOperationException (501)', async () => {
    const big = Buffer.from(JSON.stringify(encBody({ padding: 'y'.repeat(1024 * 1024) })));
    const r = await sendRaw(t.httpUrl, ENC, big, { chunked: true });
    expectXksError(r, 501, 'UnsupportedOperationException', 'chunked');
    await expectServerWorks();
  });
  it('a body of exactly 32 KiB is read (and judged on its content); one byte more is 501', async () => {
    const fixed = encBody({ requestMetadata: rm({ kmsRequestId: 'fixed' }), padding: '' });
    const base = JSON.stringify(fixed);
    const body = JSON.stringify({ ...fixed, padding: 'z'.repeat(32 * 1024 - base.length) });
    expect(Buffer.byteLength(body)).toBe(32 * 1024);
    expect((await send(ENC, body)).status).toBe(200);
    const over = JSON.stringify({ ...fixed, padding: 'z'.repeat(32 * 1024 - base.length + 1) });
    expectXksError(await send(ENC, over), 501, 'UnsupportedOperationException', '32K+1');
    expectXksError(await sendRaw(t.httpUrl, ENC, Buffer.from(over), { chunked: true }), 501, 'UnsupportedOperationException', '32K+1 chunked');
  });
  it('several oversized bodies in parallel do not stop the server', async () => {
    const big = JSON.stringify(encBody({ padding: 'x'.repeat(64 * 1024) }));
    const rs = await Promise.all(Array.from({ length: 8 }, () => send(ENC, big)));
    for (const r of rs) expectXksError(r, 501, 'UnsupportedOperationException', 'parallel');
    await expectServerWorks();
  });
});

describe('invalid UTF-8 and odd characters', () => {
  it('invalid UTF-8 inside the plaintext string is ValidationException', async () => {
    const body = Buffer.concat([Buffer.from(JSON.stringify(encBody({ plaintext: 'SGVs' })).replace('"SGVs"', '"SGVs')), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    expect(() => JSON.parse(body.toString('latin1'))).toThrow(); // sanity: the body really is broken JSON+UTF-8
    const fixed = Buffer.concat([Buffer.from(JSON.stringify(encBody()).slice(0, -1) + ',"plaintext":"SGVs'), Buffer.from([0xff, 0xfe]), Buffer.from('bG8="}')]);
    for (const b of [body, fixed]) {
      const r = await send(ENC, b);
      expectXksError(r, 400, 'ValidationException', 'utf8');
    }
  });
  it('invalid UTF-8 inside an opaque field never causes a 5xx, and a 200 is a real encryption', async () => {
    const s = JSON.stringify(encBody({ requestMetadata: rm({ kmsRequestId: 'ID' }) }));
    const i = s.indexOf('"ID"') + 2;
    const body = Buffer.concat([Buffer.from(s.slice(0, i)), Buffer.from([0xff, 0xc0, 0x80]), Buffer.from(s.slice(i))]);
    const r = await send(ENC, body);
    if (r.status === 200) expect(Buffer.from(r.json.authenticationTag, 'base64')).toHaveLength(16);
    else expectXksError(r, 400, 'ValidationException', 'opaque utf8');
  });
  it('control characters and emoji in requestMetadata do not leak into the error message unescaped', async () => {
    const r = await send(ENC, encBody({ requestMetadata: rm({ awsPrincipalArn: 7, kmsRequestId: '\u0000\u001b[31m\ud83d\ude00' }) }));
    expectXksError(r, 400, 'ValidationException', 'ctl');
  });
});

describe('prototype pollution attempts', () => {
  afterAll(() => {
    // The server runs in this process: any pollution would show here.
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).plaintext).toBeUndefined();
    expect(({} as Record<string, unknown>).awsPrincipalArn).toBeUndefined();
  });
  it('"__proto__" carrying the required fields does not supply them', async () => {
    const body = `{"__proto__":{"plaintext":"SGVsbG8=","encryptionAlgorithm":"AES_GCM","polluted":1},"requestMetadata":${JSON.stringify(metadata('Encrypt'))}}`;
    const r = await send(ENC, body);
    expectXksError(r, 400, 'ValidationException', '__proto__');
    expect(r.json.errorMessage).toMatch(/plaintext|encryptionAlgorithm/);
  });
  it('"__proto__" inside requestMetadata does not supply the metadata fields', async () => {
    const body = `{"requestMetadata":{"__proto__":${JSON.stringify(metadata('Encrypt'))}},"plaintext":"SGVsbG8=","encryptionAlgorithm":"AES_GCM"}`;
    expectXksError(await send(ENC, body), 400, 'ValidationException', 'rm __proto__');
  });
  it('"constructor"/"prototype" and "__proto__" extra fields on a valid body are ignored, not merged', async () => {
    const valid = JSON.stringify(encBody());
    for (const extra of ['"constructor":{"prototype":{"polluted":1}}', '"__proto__":{"polluted":1}', '"__proto__":null', '"hasOwnProperty":1', '"toString":"x"']) {
      const r = await send(ENC, `{${extra},${valid.slice(1)}`);
      expect(r.status, extra).toBe(200);
      expect(Buffer.from(r.json.ciphertext, 'base64'), extra).toHaveLength(12);
    }
  });
  it('"constructor" as a key id path segment is just an unknown key', async () => {
    for (const id of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      expectXksError(await send(xksPath(`keys/${id}/encrypt`), encBody()), 404, 'KeyNotFoundException', id);
    }
  });
});

describe('malformed paths', () => {
  it.each([
    ['a key id of 129 characters', xksPath(`keys/${'k'.repeat(129)}/encrypt`)],
    ['a key id with a space', xksPath('keys/fo%20o/encrypt')],
    ['a key id with a slash', xksPath('keys/fo/o/encrypt')],
    ['an empty key id', xksPath('keys//encrypt')],
    ['an unknown operation', xksPath('keys/foo/sign')],
    ['a trailing slash', xksPath('keys/foo/encrypt/')],
    ['a path over 256 characters', xksPath('keys/foo/encrypt').padStart(300, '/')],
  ])('%s is InvalidUriPathException (404)', async (label, path) => {
    expectXksError(await send(path, encBody()), 404, 'InvalidUriPathException', label);
  });
});

/** mulberry32: a fixed seed gives the same cases on every run. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

describe('fuzzing', () => {
  it('200 random mutations of a valid encrypt body: a JSON error or a real 200, never a 5xx other than 501', async () => {
    const rand = rng(20240501);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const int = (n: number) => Math.floor(rand() * n);
    const base = () => encBody({ additionalAuthenticatedData: 'cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n', ciphertextDataIntegrityValueAlgorithm: 'SHA_256' });
    const values = (): unknown =>
      pick([
        () => null,
        () => 0,
        () => -1,
        () => 1e308,
        () => true,
        () => '',
        () => 'AES_GCM',
        () => 'SHA_256',
        () => '!!',
        () => [],
        () => ({}),
        () => 'A'.repeat(int(4000)),
        () => randomBytes(int(9000)).toString('base64'),
        () => randomBytes(int(40)).toString('base64url'),
        () => String.fromCharCode(...Array.from({ length: int(20) }, () => int(0x3000))),
        () => ({ nested: [{ deeper: [1, 2, { x: null }] }] }),
      ])();
    const structural = (): string => {
      const b = base() as Record<string, any>;
      for (let n = 1 + int(3); n > 0; n--) {
        const meta = b.requestMetadata;
        const inMeta = rand() < 0.4 && meta !== null && typeof meta === 'object' && !Array.isArray(meta);
        const obj = inMeta ? meta : b;
        const keys = Object.keys(obj);
        const k = rand() < 0.15 ? `extra${int(5)}` : pick(keys);
        if (rand() < 0.2) delete obj[k];
        else obj[k] = values();
      }
      return JSON.stringify(b);
    };
    const textual = (): Buffer => {
      let s = Buffer.from(JSON.stringify(base()));
      for (let n = 1 + int(3); n > 0; n--) {
        const i = int(s.length);
        switch (int(5)) {
          case 0:
            s = Buffer.concat([s.subarray(0, i), Buffer.from([int(256)]), s.subarray(i + 1)]);
            break;
          case 1:
            s = Buffer.concat([s.subarray(0, i), s.subarray(i + 1)]);
            break;
          case 2:
            s = Buffer.concat([s.subarray(0, i), Buffer.from([int(256)]), s.subarray(i)]);
            break;
          case 3:
            s = s.subarray(0, i);
            break;
          default:
            s = Buffer.concat([s.subarray(0, i), s.subarray(i, i + int(30)), s.subarray(i)]);
        }
      }
      return s;
    };

    const seen: Record<string, number> = {};
    for (let k = 0; k < 200; k++) {
      const body = rand() < 0.5 ? Buffer.from(structural()) : textual();
      const afterSigning = rand() < 0.05;
      const r = await sendRaw(t.httpUrl, ENC, body, afterSigning ? { bodyAfterSigning: Buffer.concat([body, Buffer.from(' ')]) } : {});
      const label = `#${k}: ${body.toString('utf8').slice(0, 160)}`;
      seen[String(r.status)] = (seen[String(r.status)] ?? 0) + 1;
      expect(r.status === 200 || (r.status >= 400 && r.status < 500) || r.status === 501, label).toBe(true);
      if (afterSigning) expect(r.json?.errorName, label).toBe('AuthenticationFailedException');
      if (r.status !== 200) {
        expectErrorShape(r, label);
        continue;
      }
      // A 200 must be a real encryption of what the (mutated) body asked for.
      const req = JSON.parse(body.toString('utf8'));
      const j = r.json;
      expect(Buffer.from(j.authenticationTag, 'base64'), label).toHaveLength(16);
      expect(Buffer.from(j.initializationVector, 'base64'), label).toHaveLength(12);
      const aad = req.additionalAuthenticatedData ? Buffer.from(req.additionalAuthenticatedData, 'base64') : undefined;
      const d = await xks.decrypt('foo', decryptFields(j, aad));
      expect(d.json.plaintext, label).toBe(req.plaintext);
    }
    // The fuzz really explored both sides.
    expect(seen['200'] ?? 0).toBeGreaterThan(5);
    expect(seen['400'] ?? 0).toBeGreaterThan(50);
  });
});

describe('afterwards', () => {
  it('a normal encrypt and decrypt still work, and every other operation answers', async () => {
    await expectServerWorks();
    expect((await xks.health()).status).toBe(200);
    expect((await xks.metadata('foo')).status).toBe(200);
  });
  it('no malformed input reached the "unexpected failure" path (every error had a name)', () => {
    // A failed GCM check (the wrong 16-byte IV above) is also logged as "unexpected failure" today: that bug has its
    // own failing test in tampering.test.ts, so it is left out here.
    const unexpected = t.logs.filter((l) => l.includes('unexpected failure') && !l.includes('"the ciphertext did not authenticate"'));
    expect(unexpected).toEqual([]);
  });
});
