// The AES-GCM AAD layout (xks-api.md "Encrypt"): u16 BE len(AAD) || AAD || u8 len(metadata) || metadata.
import { describe, expect, it } from 'vitest';
import { buildGcmAad, MAX_AAD_BYTES, MAX_METADATA_BYTES } from '../../src/xks/aad.js';

const hex = (b: Buffer) => b.toString('hex');

describe('buildGcmAad', () => {
  it('is 00 00 00 with neither AAD nor metadata', () => {
    expect(hex(buildGcmAad(undefined, undefined))).toBe('000000');
    expect(hex(buildGcmAad(Buffer.alloc(0), Buffer.alloc(0)))).toBe('000000');
  });

  it('lays out a 3-byte AAD and a 5-byte metadata value', () => {
    const out = buildGcmAad(Buffer.from('abc'), Buffer.from([0x01, 0x00, 0x00, 0x00, 0x02]));
    expect(hex(out)).toBe('0003' + '616263' + '05' + '0100000002');
  });

  it('lays out AAD only and metadata only', () => {
    expect(hex(buildGcmAad(Buffer.from([0xff]), undefined))).toBe('0001ff00');
    expect(hex(buildGcmAad(undefined, Buffer.from([0xaa, 0xbb])))).toBe('000002aabb');
  });

  it('writes the 8192-byte AAD length as 0x2000, big-endian', () => {
    const aad = Buffer.alloc(8192, 0x5a);
    const md = Buffer.from([1, 0, 0, 0, 1]);
    const out = buildGcmAad(aad, md);
    expect(out).toHaveLength(2 + 8192 + 1 + 5);
    expect(hex(out.subarray(0, 2))).toBe('2000');
    expect(out.subarray(2, 8194)).toEqual(aad);
    expect(out[8194]).toBe(5);
    expect(out.subarray(8195)).toEqual(md);
  });

  it('distinguishes where the AAD ends and the metadata begins', () => {
    // Without the length prefixes these two would concatenate to the same bytes.
    const a = buildGcmAad(Buffer.from('ab'), Buffer.from('c'));
    const b = buildGcmAad(Buffer.from('a'), Buffer.from('bc'));
    expect(a.equals(b)).toBe(false);
  });

  it('accepts the largest sizes', () => {
    const out = buildGcmAad(Buffer.alloc(MAX_AAD_BYTES), Buffer.alloc(MAX_METADATA_BYTES));
    expect(MAX_AAD_BYTES).toBe(65535);
    expect(MAX_METADATA_BYTES).toBe(20);
    expect(hex(out.subarray(0, 2))).toBe('ffff');
    expect(out[2 + 65535]).toBe(20);
  });

  it('throws past the size limits rather than truncating a length field', () => {
    expect(() => buildGcmAad(Buffer.alloc(65536), undefined)).toThrow(RangeError);
    expect(() => buildGcmAad(undefined, Buffer.alloc(21))).toThrow(RangeError);
    expect(() => buildGcmAad(Buffer.alloc(70000), Buffer.alloc(300))).toThrow(RangeError);
  });
});
