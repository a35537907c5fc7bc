// AWS's sample proxy's AAD layout (aws-samples/aws-kms-xks-proxy, build_full_aad), known answers from issue 11:
// key 0x00..0x1f, IV 0x00..0x0b, plaintext "Hello World!", AAD "project=nile,department=marketing". The builder's bytes
// are checked, then the vectors themselves with node:crypto's AES-256-GCM (never the HSM: this is the pure layer).
import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { buildAwsSampleAad, buildGcmAad } from '../../src/xks/aad.js';
import { SAMPLE_AAD, SAMPLE_CIPHERTEXT, SAMPLE_IV, SAMPLE_KEY, SAMPLE_PLAINTEXT, SAMPLE_TAGS } from '../helpers/aws-sample.js';


const hex = (b: Buffer) => b.toString('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function gcm(aad: Buffer): { ciphertext: string; tag: string } {
  const c = createCipheriv('aes-256-gcm', SAMPLE_KEY, SAMPLE_IV);
  c.setAAD(aad);
  const ciphertext = Buffer.concat([c.update(SAMPLE_PLAINTEXT), c.final()]);
  return { ciphertext: ciphertext.toString('base64'), tag: c.getAuthTag().toString('base64') };
}

describe('buildAwsSampleAad', () => {
  it('is the AAD length, its SHA-256, the metadata length and the metadata', () => {
    const out = buildAwsSampleAad(SAMPLE_AAD, Buffer.from('v0.0.1'));
    expect(hex(out)).toBe('0021' + sha256(SAMPLE_AAD) + '06' + hex(Buffer.from('v0.0.1')));
  });

  it('hashes an AAD field that is present but empty; leaves the digest out when the field is absent', () => {
    expect(hex(buildAwsSampleAad(Buffer.alloc(0), undefined))).toBe('0000' + sha256(Buffer.alloc(0)) + '00');
    expect(hex(buildAwsSampleAad(undefined, undefined))).toBe('000000');
    expect(hex(buildAwsSampleAad(undefined, Buffer.alloc(0)))).toBe('000000');
  });

  it('writes the length of an 8 KiB AAD and only its digest', () => {
    const aad = Buffer.alloc(8192, 0x41);
    const out = buildAwsSampleAad(aad, undefined);
    expect(out).toHaveLength(2 + 32 + 1);
    expect(hex(out.subarray(0, 2))).toBe('2000');
  });

  it('differs from the spec layout whenever there is AAD (and matches it when there is none)', () => {
    expect(buildAwsSampleAad(SAMPLE_AAD, undefined).equals(buildGcmAad(SAMPLE_AAD, undefined))).toBe(false);
    expect(buildAwsSampleAad(undefined, Buffer.from('v0.0.1')).equals(buildGcmAad(undefined, Buffer.from('v0.0.1')))).toBe(true);
  });

  it('throws past the size limits', () => {
    expect(() => buildAwsSampleAad(Buffer.alloc(65536), undefined)).toThrow(RangeError);
    expect(() => buildAwsSampleAad(undefined, Buffer.alloc(21))).toThrow(RangeError);
  });
});

describe("the issue's known answers", () => {
  it('with AAD and no metadata', () => {
    expect(gcm(buildAwsSampleAad(SAMPLE_AAD, undefined))).toEqual({ ciphertext: SAMPLE_CIPHERTEXT, tag: SAMPLE_TAGS.aad });
  });

  it('with AAD and the static metadata v0.0.1', () => {
    expect(Buffer.from('djAuMC4x', 'base64').toString()).toBe('v0.0.1');
    expect(gcm(buildAwsSampleAad(SAMPLE_AAD, Buffer.from('djAuMC4x', 'base64')))).toEqual({ ciphertext: SAMPLE_CIPHERTEXT, tag: SAMPLE_TAGS.aadAndMetadata });
  });

  it('with no AAD field and no metadata', () => {
    expect(gcm(buildAwsSampleAad(undefined, undefined))).toEqual({ ciphertext: SAMPLE_CIPHERTEXT, tag: SAMPLE_TAGS.nothing });
  });

  it('none of them authenticates under the spec layout with AAD', () => {
    const d = createDecipheriv('aes-256-gcm', SAMPLE_KEY, SAMPLE_IV);
    d.setAAD(buildGcmAad(SAMPLE_AAD, undefined));
    d.setAuthTag(Buffer.from(SAMPLE_TAGS.aad, 'base64'));
    d.update(Buffer.from(SAMPLE_CIPHERTEXT, 'base64'));
    expect(() => d.final()).toThrow();
  });
});
