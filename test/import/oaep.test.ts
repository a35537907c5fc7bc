// Known-answer tests of the OAEP decoder (RFC 8017 7.1.2): the RSA Laboratories example of RSAES-OAEP (SHA-1, 1024-bit
// key, from the PKCS #1 v2.0 test vectors), messages encoded by node:crypto with SHA-1 and SHA-256 at the modulus sizes of
// the import, and every kind of malformed encoding, which must all give the one same error.
import { constants, createHash, createPrivateKey, generateKeyPairSync, privateDecrypt, publicEncrypt, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { mgf1, OAEP_HASH_BYTES, OaepDecodingError, oaepDecode, type OaepHash } from '../../src/import/oaep.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// RSAES-OAEP example (RSA Laboratories, "RSAES-OAEP Encryption Scheme", appendix: intermediate values).
const V = {
  n: hex(`bb f8 2f 09 06 82 ce 9c 23 38 ac 2b 9d a8 71 f7 36 8d 07 ee d4 10 43 a4 40 d6 b6 f0 74 54 f5 1f b8 df ba af 03 5c 02 ab
          61 ea 48 ce eb 6f cd 48 76 ed 52 0d 60 e1 ec 46 19 71 9d 8a 5b 8b 80 7f af b8 e0 a3 df c7 37 72 3e e6 b4 b7 d9 3a 25 84
          ee 6a 64 9d 06 09 53 74 88 34 b2 45 45 98 39 4e e0 aa b1 2d 7b 61 a5 1f 52 7a 9a 41 f6 c1 68 7f e2 53 72 98 ca 2a 8f 59
          46 f8 e5 fd 09 1d bd cb`),
  e: 0x11n,
  p: hex(`ee cf ae 81 b1 b9 b3 c9 08 81 0b 10 a1 b5 60 01 99 eb 9f 44 ae f4 fd a4 93 b8 1a 9e 3d 84 f6 32 12 4e f0 23 6e 5d 1e 3b
          7e 28 fa e7 aa 04 0a 2d 5b 25 21 76 45 9d 1f 39 75 41 ba 2a 58 fb 65 99`),
  q: hex(`c9 7f b1 f0 27 f4 53 f6 34 12 33 ea aa d1 d9 35 3f 6c 42 d0 88 66 b1 d0 5a 0f 20 35 02 8b 9d 86 98 40 b4 16 66 b4 2e 92
          ea 0d a3 b4 32 04 b5 cf ce 33 52 52 4d 04 16 a5 a4 41 e7 00 af 46 15 03`),
  message: hex('d4 36 e9 95 69 fd 32 a7 c8 a0 5b bc 90 d3 2c 49'),
  seed: hex('aa fd 12 f6 59 ca e6 34 89 b4 79 e5 07 6d de c2 f0 6c b5 8f'),
  // PKCS #1 v2.0's EM (k - 1 bytes); RFC 8017's is the same with a leading zero octet.
  em: hex(`eb 7a 19 ac e9 e3 00 63 50 e3 29 50 4b 45 e2 ca 82 31 0b 26 dc d8 7d 5c 68 f1 ee a8 f5 52 67 c3 1b 2e 8b b4 25 1f 84 d7
           e0 b2 c0 46 26 f5 af f9 3e dc fb 25 c9 c2 b3 ff 8a e1 0e 83 9a 2d db 4c dc fe 4f f4 77 28 b4 a1 b7 c1 36 2b aa d2 9a b4
           8d 28 69 d5 02 41 21 43 58 11 59 1b e3 92 f9 82 fb 3e 87 d0 95 ae b4 04 48 db 97 2f 3a c1 4f 7b c2 75 19 52 81 ce 32 d2
           f1 b7 6d 4d 35 3e 2d`),
  ciphertext: hex(`12 53 e0 4d c0 a5 39 7b b4 4a 7a b8 7e 9b f2 a0 39 a3 3d 1e 99 6f c8 2a 94 cc d3 00 74 c9 5d f7 63 72 20 17 06 9e 52 68
                   da 5d 1c 0b 4f 87 2c f6 53 c1 1d f8 23 14 a6 79 68 df ea e2 8d ef 04 bb 6d 84 b1 c3 1d 65 4a 19 70 e5 78 3b d6 eb 96
                   a0 24 c2 ca 2f 4a 90 fe 9f 2e f5 c9 c1 40 e5 bb 48 da 95 36 ad 87 00 c8 4f c9 13 0a de a7 4e 55 8d 51 a7 4d df 85 d8
                   b5 0d e9 68 38 d6 06 3e 09 55`),
};

const big = (b: Buffer) => BigInt(`0x${b.toString('hex')}`);
const unbig = (x: bigint) => {
  const h = x.toString(16);
  return Buffer.from(h.length % 2 ? `0${h}` : h, 'hex');
};
function modInverse(a: bigint, m: bigint): bigint {
  let [r0, r1, s0, s1] = [a % m, m, 1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  return ((s0 % m) + m) % m;
}

/** The vector's private key, for node:crypto's raw RSA (RSA_NO_PADDING), which plays the HSM's CKM_RSA_X_509 here. */
function vectorKey() {
  const p = big(V.p);
  const q = big(V.q);
  const d = modInverse(V.e, (p - 1n) * (q - 1n));
  const b64 = (x: bigint) => unbig(x).toString('base64url');
  return createPrivateKey({
    key: { kty: 'RSA', n: V.n.toString('base64url'), e: b64(V.e), d: b64(d), p: b64(p), q: b64(q), dp: b64(d % (p - 1n)), dq: b64(d % (q - 1n)), qi: b64(modInverse(q, p)) },
    format: 'jwk',
  });
}

/** RFC 8017 7.1.1 step 2 (EME-OAEP encoding) with a chosen seed and optional defects, to build malformed inputs. */
function encode(
  m: Buffer,
  k: number,
  hash: OaepHash,
  seed: Buffer,
  defect: { y?: number; lHash?: boolean; separator?: number; psByte?: number } = {},
): Buffer {
  const hLen = OAEP_HASH_BYTES[hash];
  const lHash = createHash(hash).digest();
  if (defect.lHash) lHash[3]! ^= 0x40;
  const ps = Buffer.alloc(k - m.length - 2 * hLen - 2);
  if (defect.psByte !== undefined) ps[Math.floor(ps.length / 2)] = defect.psByte;
  const db = Buffer.concat([lHash, ps, Buffer.from([defect.separator ?? 0x01]), m]);
  const maskedDb = Buffer.from(db.map((b, i) => b ^ mgf1(hash, seed, k - hLen - 1)[i]!));
  const maskedSeed = Buffer.from(seed.map((b, i) => b ^ mgf1(hash, maskedDb, hLen)[i]!));
  return Buffer.concat([Buffer.from([defect.y ?? 0]), maskedSeed, maskedDb]);
}

describe('the RSA Laboratories RSAES-OAEP example (SHA-1)', () => {
  const k = V.n.length;

  it('decodes the example EM to the example message', () => {
    expect(oaepDecode(Buffer.concat([Buffer.alloc(1), V.em]), k, 'sha1')).toEqual(V.message);
  });

  it('the encoder of these tests reproduces the example EM from its seed', () => {
    expect(encode(V.message, k, 'sha1', V.seed)).toEqual(Buffer.concat([Buffer.alloc(1), V.em]));
  });

  it('raw RSA of the example ciphertext gives the example EM, which decodes to the message', () => {
    const em = privateDecrypt({ key: vectorKey(), padding: constants.RSA_NO_PADDING }, V.ciphertext);
    expect(em).toEqual(Buffer.concat([Buffer.alloc(1), V.em]));
    expect(oaepDecode(em, k, 'sha1')).toEqual(V.message);
  });
});

describe('messages encoded by node:crypto (publicEncrypt with oaepHash), decoded after raw RSA', () => {
  for (const bits of [2048, 3072, 4096]) {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: bits });
    for (const hash of ['sha1', 'sha256'] as const) {
      it(`RSA ${bits}, ${hash}: 32-byte keys, an empty message and the longest message`, () => {
        const k = bits / 8;
        const longest = k - 2 * OAEP_HASH_BYTES[hash] - 2;
        for (const m of [randomBytes(32), randomBytes(32), Buffer.alloc(0), randomBytes(longest)]) {
          const c = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, m);
          const em = privateDecrypt({ key: privateKey, padding: constants.RSA_NO_PADDING }, c);
          expect(oaepDecode(em, k, hash)).toEqual(m);
        }
      });
    }
  }
});

describe('SHA-256 known answers from a fixed seed', () => {
  const m = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
  const seed = createHash('sha256').update('seed').digest();
  // EME-OAEP(SHA-256, MGF1-SHA-256, empty label) of m with that seed, k = 256.
  const EM = hex(`009f888c6ed09a8ea4d057d794c983a4246452d1c91194afbdae6fcbb87f417b7dcd433da35528f991e1dac8dcca33f30bd7c4ac538d64e36f35fe7c2b
    6220083e5a0a2acf09fd086532911be969b2fbc46f86c67939478e485404db9bbc98561b38fa909876169c5383899dacd9e5dbbd5e6193cdf63166e649edbb466b307b
    5487462ead3f46bf30de4fba76e3e1e107a474ad2a6f22e40cb35fcbc038b03a0aa4979053f215af8f4279cda304555222a0857b4fb6bdcb1f15e1ba06a9de66788f7c
    5af94f3d485f41e030360468de28b16136f79a5c1028ca4b7ddf77c3e1f6e254b226f0e7c6c0d0237137f5bfb87a3f0c882ced64dd5f2ef5fef2926e63`);

  it('the pinned EM is a valid OAEP-SHA-256 encoding of m by an independent decoder (OpenSSL, via node:crypto)', () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const c = publicEncrypt({ key: publicKey, padding: constants.RSA_NO_PADDING }, EM);
    expect(privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, c)).toEqual(m);
    expect(encode(m, 256, 'sha256', seed)).toEqual(EM);
  });

  it('decodes the pinned EM to m', () => {
    expect(oaepDecode(EM, 256, 'sha256')).toEqual(m);
  });

  it('MGF1-SHA-256 matches its definition (hash of seed and a 32-bit counter)', () => {
    const s = Buffer.from('abc');
    const expected = Buffer.concat([0, 1].map((i) => createHash('sha256').update(s).update(Buffer.from([0, 0, 0, i])).digest())).subarray(0, 40);
    expect(mgf1('sha256', s, 40)).toEqual(expected);
  });
});

describe('every malformed encoding gives the same single error', () => {
  const k = 256;
  const m = randomBytes(32);
  const seed = randomBytes(32);
  const cases: [string, () => Buffer, number?][] = [
    ['first octet Y not zero', () => encode(m, k, 'sha256', seed, { y: 0x01 })],
    ['first octet Y 0x80', () => encode(m, k, 'sha256', seed, { y: 0x80 })],
    ['label hash differs', () => encode(m, k, 'sha256', seed, { lHash: true })],
    ['separator 0x02 instead of 0x01', () => encode(m, k, 'sha256', seed, { separator: 0x02 })],
    ['separator 0x00 (no separator at all)', () => encode(Buffer.alloc(0), k, 'sha256', seed, { separator: 0x00 })],
    ['a non-zero padding byte before the separator', () => encode(m, k, 'sha256', seed, { psByte: 0x07 })],
    ['one byte short', () => encode(m, k, 'sha256', seed).subarray(1), k],
    ['one byte long', () => Buffer.concat([Buffer.alloc(1), encode(m, k, 'sha256', seed)]), k],
    ['modulus too small for the hash', () => Buffer.alloc(65), 65],
    ['all zero', () => Buffer.alloc(k)],
    ['all 0xff', () => Buffer.alloc(k, 0xff)],
    ['random', () => randomBytes(k)],
    ['SHA-1 encoding decoded as SHA-256', () => encode(m, k, 'sha1', randomBytes(20))],
  ];
  for (const [name, make, kk] of cases) {
    it(name, () => {
      const em = make();
      let thrown: unknown;
      try {
        oaepDecode(em, kk ?? k, 'sha256');
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(OaepDecodingError);
      expect((thrown as Error).message).toBe('decryption error');
    });
  }
});

it('a 0x01 inside the padding is, by the rules of the RFC, the separator: decoding succeeds with a longer message', () => {
  const m = randomBytes(32);
  const em = encode(m, 256, 'sha256', randomBytes(32), { psByte: 0x01 });
  const out = oaepDecode(em, 256, 'sha256');
  expect(out.length).toBeGreaterThan(32);
  expect(out.subarray(out.length - 32)).toEqual(m);
});
