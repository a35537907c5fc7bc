// ciphertextMetadata format 1: 0x01 || u32 BE key version (KMS rejects more than 20 bytes).
import { describe, expect, it } from 'vitest';
import { decodeCiphertextMetadata, encodeCiphertextMetadata, METADATA_FORMAT } from '../../src/xks/ciphertext-metadata.js';

describe('ciphertextMetadata', () => {
  it('round-trips key versions', () => {
    for (const v of [1, 2, 255, 256, 65536, 0x7fffffff, 0xffffffff]) {
      const b = encodeCiphertextMetadata(v);
      expect(b.length).toBeLessThanOrEqual(20);
      expect(decodeCiphertextMetadata(b), String(v)).toBe(v);
    }
  });

  it('encodes version 1 as 01 00000001 (the bytes KMS stores)', () => {
    expect(METADATA_FORMAT).toBe(1);
    expect(encodeCiphertextMetadata(1).toString('hex')).toBe('0100000001');
    expect(encodeCiphertextMetadata(0x01020304).toString('hex')).toBe('0101020304');
  });

  it('rejects a wrong length', () => {
    for (const hex of ['', '01', '01000000', '010000000100', '0100000001' + '00'.repeat(15)]) {
      expect(decodeCiphertextMetadata(Buffer.from(hex, 'hex')), hex).toBeUndefined();
    }
  });

  it('rejects another format byte', () => {
    for (const f of [0x00, 0x02, 0x7f, 0xff]) {
      const b = encodeCiphertextMetadata(1);
      b[0] = f;
      expect(decodeCiphertextMetadata(b), String(f)).toBeUndefined();
    }
  });

  it('rejects version 0', () => {
    expect(decodeCiphertextMetadata(Buffer.from('0100000000', 'hex'))).toBeUndefined();
  });

  it("rejects the spec example's metadata, which this proxy did not write", () => {
    expect(decodeCiphertextMetadata(Buffer.from('a2V5X3ZlcnNpb249MQ==', 'base64'))).toBeUndefined();
  });

  it('refuses to encode a version that does not fit in u32', () => {
    expect(() => encodeCiphertextMetadata(-1)).toThrow();
    expect(() => encodeCiphertextMetadata(2 ** 32)).toThrow();
  });
});
