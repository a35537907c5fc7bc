// Known answer for the ciphertext data integrity value (xks-api.md "Encrypt"): the spec's own example response.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ciphertextDataIntegrityValue } from '../../src/xks/cdiv.js';

const b64 = (s: string) => Buffer.from(s, 'base64');

// The spec's example: request AAD and the encrypt response it documents.
const SPEC = {
  aad: 'cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n',
  authenticationTag: 'vBxN2ncH1oEkR8WVXpmyYQ==',
  ciphertext: 'ghxkK1txeDNn3q8Y',
  ciphertextMetadata: 'a2V5X3ZlcnNpb249MQ==',
  initializationVector: 'HMrlRw85cAJUd5Ax',
  cdiv: 'qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=',
};

const specParts = () => ({
  aad: b64(SPEC.aad),
  metadata: b64(SPEC.ciphertextMetadata),
  iv: b64(SPEC.initializationVector),
  ciphertext: b64(SPEC.ciphertext),
  tag: b64(SPEC.authenticationTag),
});

describe('ciphertextDataIntegrityValue', () => {
  it("reproduces the spec's example value", () => {
    const v = ciphertextDataIntegrityValue(specParts());
    expect(v).toHaveLength(32);
    expect(v.toString('base64')).toBe(SPEC.cdiv);
  });

  it('hashes raw bytes in the order AAD, metadata, IV, ciphertext, tag, with no length prefixes', () => {
    const p = specParts();
    // Swapping any two adjacent parts changes the value, so the order is really fixed.
    const swapped = ciphertextDataIntegrityValue({ ...p, iv: p.ciphertext, ciphertext: p.iv });
    expect(swapped.toString('base64')).not.toBe(SPEC.cdiv);
    const moved = ciphertextDataIntegrityValue({ ...p, aad: p.metadata, metadata: p.aad });
    expect(moved.toString('base64')).not.toBe(SPEC.cdiv);
  });

  it('treats absent AAD and metadata as empty', () => {
    const p = specParts();
    const noAad = ciphertextDataIntegrityValue({ metadata: p.metadata, iv: p.iv, ciphertext: p.ciphertext, tag: p.tag });
    const expected = createHash('sha256').update(Buffer.concat([p.metadata, p.iv, p.ciphertext, p.tag])).digest();
    expect(noAad).toEqual(expected);
    const none = ciphertextDataIntegrityValue({ aad: undefined, metadata: undefined, iv: p.iv, ciphertext: p.ciphertext, tag: p.tag });
    expect(none).toEqual(createHash('sha256').update(Buffer.concat([p.iv, p.ciphertext, p.tag])).digest());
  });

  it('changes with any single flipped bit of any part', () => {
    const p = specParts();
    for (const k of ['aad', 'metadata', 'iv', 'ciphertext', 'tag'] as const) {
      const copy = Buffer.from(p[k]);
      copy[copy.length - 1]! ^= 0x01;
      expect(ciphertextDataIntegrityValue({ ...p, [k]: copy }).toString('base64'), k).not.toBe(SPEC.cdiv);
    }
  });
});
