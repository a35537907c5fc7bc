// The import token's encoding (pure): a known answer, every field bound, and every malformed token refused. The MAC
// itself is made and checked in the HSM (import-service.test.ts).
import { describe, expect, it } from 'vitest';
import { encodeTokenBody, openToken, sealToken, type ImportTokenFields } from '../../src/import/import-token.js';
import { parseWrappingKeyId, wrappingKeyId } from '../../src/import/import-objects.js';

const fields: ImportTokenFields = {
  keyId: 'byok-key',
  algorithm: 'RSA_AES_KEY_WRAP_SHA_256',
  keySpec: 'RSA_3072',
  expiresAt: new Date('2026-11-23T12:00:00.000Z'),
  wrappingKeyNonce: Buffer.from('00112233445566778899aabbccddeeff', 'hex'),
};
const mac = Buffer.alloc(32, 0xab);

describe('import token encoding', () => {
  it('encodes a known answer', () => {
    const body = encodeTokenBody(fields);
    // "XKIT" | 01 | alg 3 | spec 1 | 1795435200000 ms | nonce | 8 | "byok-key"
    expect(body.toString('hex')).toBe(
      '584b4954' + '01' + '03' + '01' + '000001a2' + '0846fe00' + '00112233445566778899aabbccddeeff' + '08' + Buffer.from('byok-key').toString('hex'),
    );
    expect(new Date(0x1a20846fe00).toISOString()).toBe('2026-11-23T12:00:00.000Z');
  });

  it('opens what it sealed, with every field', () => {
    const token = sealToken(encodeTokenBody(fields), mac);
    const opened = openToken(token)!;
    expect(opened.fields).toEqual(fields);
    expect(opened.mac).toEqual(mac);
    expect(Buffer.concat([opened.body, opened.mac])).toEqual(token);
  });

  it('binds every field: changing any one changes the authenticated body', () => {
    const base = encodeTokenBody(fields).toString('hex');
    const variants: Partial<ImportTokenFields>[] = [
      { keyId: 'byok-kez' },
      { algorithm: 'RSA_AES_KEY_WRAP_SHA_1' },
      { keySpec: 'RSA_4096' },
      { expiresAt: new Date(fields.expiresAt.getTime() + 1) },
      { wrappingKeyNonce: Buffer.from('00112233445566778899aabbccddeefe', 'hex') },
    ];
    for (const v of variants) expect(encodeTokenBody({ ...fields, ...v }).toString('hex')).not.toBe(base);
  });

  it('refuses malformed tokens', () => {
    const token = sealToken(encodeTokenBody(fields), mac);
    const bad: Buffer[] = [
      Buffer.alloc(0),
      token.subarray(0, token.length - 1), // truncated
      Buffer.concat([token, Buffer.from([0])]), // extended
      Buffer.concat([Buffer.from('XKIU'), token.subarray(4)]), // magic
      Buffer.concat([token.subarray(0, 4), Buffer.from([2]), token.subarray(5)]), // format
      Buffer.concat([token.subarray(0, 5), Buffer.from([9]), token.subarray(6)]), // algorithm
      Buffer.concat([token.subarray(0, 6), Buffer.from([3]), token.subarray(7)]), // key spec
      Buffer.concat([token.subarray(0, 31), Buffer.from([9]), token.subarray(32)]), // key id length
      Buffer.concat([token.subarray(0, 32), Buffer.from('byok/key'), token.subarray(40)]), // key id characters
    ];
    for (const b of bad) expect(openToken(b)).toBeUndefined();
  });

  it('names the wrapping key pair with its nonce and expiry', () => {
    const id = wrappingKeyId(fields.wrappingKeyNonce, fields.expiresAt);
    expect(id.toString()).toBe('xks:w1;n=00112233445566778899aabbccddeeff;x=1795435200000');
    expect(parseWrappingKeyId(id)).toEqual({ nonce: fields.wrappingKeyNonce, expiresAt: fields.expiresAt });
    expect(parseWrappingKeyId(Buffer.from('xks:v1'))).toBeUndefined();
  });
});
