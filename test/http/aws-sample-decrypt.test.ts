// Ciphertexts made by AWS's sample proxy (aws-samples/aws-kms-xks-proxy: its own AAD layout, static or no metadata)
// decrypt here with no configuration, through a real server on a real token whose key holds the known material
// 0x00..0x1f, imported over the admin API (BYOK). Each legacy decrypt is named in the request log and the audit line and
// counted; any tampering is still InvalidCiphertextException; a failed decrypt costs at most one HSM call more; the
// setting xks.awsSampleAadFallback: false turns it off.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trailFileName } from '../../src/audit/audit-trail.js';
import type { KeyStore } from '../../src/hsm/key-store.js';
import { DEFAULT_ENCRYPTION_LIMITS } from '../../src/keys/encryption-limits.js';
import { EncryptionBudget } from '../../src/xks/encryption-budget.js';
import { toXksError } from '../../src/xks/errors.js';
import { decrypt } from '../../src/xks/operations.js';
import type { DecryptRequest } from '../../src/xks/schemas.js';
import { adminClient, adminConfig } from '../helpers/admin-client.js';
import { SAMPLE_AAD, SAMPLE_CIPHERTEXT, SAMPLE_IV, SAMPLE_KEY, SAMPLE_PLAINTEXT, SAMPLE_TAGS, sampleEncrypt } from '../helpers/aws-sample.js';
import { scrape } from '../helpers/ops-metrics.js';
import { PREFIX, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { decryptFields, metadata, xksClient } from '../helpers/xks-client.js';
import { wrapMaterial } from '../helpers/byok-customer.js';

const KEY = 'sample-key';
const V001 = Buffer.from('v0.0.1');

let token: TestToken;
let t: TestProxy;
let auditDir: string;
let xks: ReturnType<typeof xksClient>;

beforeAll(async () => {
  token = createTestToken('aws-sample');
  auditDir = join(token.dir, 'audit');
  t = await startProxyOnToken({
    token,
    cleanupToken: false,
    config: {
      admin: adminConfig(),
      audit: { dir: auditDir },
      listeners: { http: { host: '127.0.0.1', port: 0 }, ops: { host: '127.0.0.1', port: 0 } },
    },
  });
  xks = xksClient(t.httpUrl);
  // The sample's key, with material the test knows: BYOK over the admin API, as a customer brings a key.
  const admin = adminClient(`http://127.0.0.1:${t.proxy.adminListening!.http!.port}`);
  expect((await admin.call('CreateKey', { KeyId: KEY, Origin: 'EXTERNAL' })).status).toBe(200);
  const p = await admin.call('GetParametersForImport', { KeyId: KEY, WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_256', WrappingKeySpec: 'RSA_2048' });
  expect(p.status, p.text).toBe(200);
  const imported = await admin.call('ImportKeyMaterial', {
    KeyId: KEY,
    ImportToken: p.json.ImportToken,
    EncryptedKeyMaterial: wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', Buffer.from(p.json.PublicKey, 'base64'), SAMPLE_KEY).toString('base64'),
    ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
  });
  expect(imported.status, imported.text).toBe(200);
}, 60_000);

let stopped = false;
afterAll(async () => {
  if (!stopped) await t?.stop();
  token?.cleanup();
});

/** The vectors as decrypt fields. */
const VECTORS: Record<string, Record<string, unknown>> = {
  'AAD, no metadata': { additionalAuthenticatedData: SAMPLE_AAD.toString('base64'), authenticationTag: SAMPLE_TAGS.aad },
  'AAD, metadata v0.0.1': { additionalAuthenticatedData: SAMPLE_AAD.toString('base64'), ciphertextMetadata: 'djAuMC4x', authenticationTag: SAMPLE_TAGS.aadAndMetadata },
  'no AAD field, no metadata': { authenticationTag: SAMPLE_TAGS.nothing },
};
const vector = (name: string) => ({ ciphertext: SAMPLE_CIPHERTEXT, initializationVector: SAMPLE_IV.toString('base64'), ...VECTORS[name] });

async function requestLine(kmsRequestId: string): Promise<any> {
  for (let i = 0; i < 40; i++) {
    const line = t.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'xks request' && l.kmsRequestId === kmsRequestId);
    if (line) return line;
    await new Promise((r) => setTimeout(r, 25)); // request lines are written within 100 ms
  }
  throw new Error(`no request line for ${kmsRequestId}`);
}

function auditLines(): any[] {
  return readFileSync(join(auditDir, trailFileName('main')), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

/** One byte of a Base64 field changed (the first byte's low bit flipped); an absent or empty field gains a byte. */
function changed(b64: string | undefined): string {
  const b = Buffer.from(b64 ?? '', 'base64');
  if (b.length === 0) return Buffer.from([0x20]).toString('base64');
  b[0]! ^= 0x01;
  return b.toString('base64');
}

describe("the issue's known answers, through the server", () => {
  for (const name of Object.keys(VECTORS)) {
    it(`decrypts: ${name}`, async () => {
      const r = await xks.decrypt(KEY, vector(name));
      expect(r.status, r.text).toBe(200);
      expect(Buffer.from(r.json.plaintext, 'base64')).toEqual(SAMPLE_PLAINTEXT);
    });
  }

  it('names the layout in the request log and the audit line, and counts it per prefix and key', async () => {
    const before = (await scrape(`http://127.0.0.1:${t.proxy.opsListening!.http!.port}`)).find((s) => s.name === 'xks_legacy_decrypts_total')?.value ?? 0;
    const id = 'legacy-seen';
    const r = await xks.post(`keys/${KEY}/decrypt`, { requestMetadata: metadata('Decrypt', { kmsRequestId: id }), encryptionAlgorithm: 'AES_GCM', ...vector('AAD, no metadata') });
    expect(r.status, r.text).toBe(200);
    expect(await requestLine(id)).toMatchObject({ operation: 'Decrypt', keyId: KEY, keyVersion: 1, aadLayout: 'aws-sample', outcome: 'ok' });
    await new Promise((r) => setTimeout(r, 50)); // the trail writes a turn later
    expect(auditLines().find((l) => l.kmsRequestId === id)).toMatchObject({ operation: 'Decrypt', keyId: KEY, keyVersion: 1, aadLayout: 'aws-sample', outcome: 'ok' });
    const samples = await scrape(`http://127.0.0.1:${t.proxy.opsListening!.http!.port}`);
    const counted = samples.find((s) => s.name === 'xks_legacy_decrypts_total');
    expect(counted?.labels).toEqual({ prefix: PREFIX, key: KEY });
    expect(counted!.value).toBe(before + 1);
  });

  it("leaves the spec's own ciphertexts as they were: no layout named, not counted", async () => {
    const enc = await xks.encrypt(KEY, Buffer.from('spec'), { additionalAuthenticatedData: SAMPLE_AAD.toString('base64') });
    expect(enc.status, enc.text).toBe(200);
    const id = 'spec-decrypt';
    const r = await xks.post(`keys/${KEY}/decrypt`, { requestMetadata: metadata('Decrypt', { kmsRequestId: id }), encryptionAlgorithm: 'AES_GCM', ...decryptFields(enc.json, SAMPLE_AAD) });
    expect(r.status, r.text).toBe(200);
    expect((await requestLine(id)).aadLayout).toBeUndefined();
    // A spec ciphertext with its metadata taken away is not one the sample made either.
    const { ciphertextMetadata: _, ...without } = decryptFields(enc.json, SAMPLE_AAD);
    expect((await xks.decrypt(KEY, without)).json.errorName).toBe('InvalidCiphertextException');
    expect((await xks.decrypt(KEY, { ...decryptFields(enc.json, SAMPLE_AAD), additionalAuthenticatedData: changed(SAMPLE_AAD.toString('base64')) })).json.errorName).toBe(
      'InvalidCiphertextException',
    );
  });
});

describe('ciphertexts made under the sample layout (done when)', () => {
  const AADS: Record<string, Buffer | undefined> = {
    'with AAD': SAMPLE_AAD,
    'with empty AAD': Buffer.alloc(0),
    'with no AAD field': undefined,
    'with 8 KiB of AAD': Buffer.alloc(8192, 0x61),
  };
  const METADATA: Record<string, Buffer | undefined> = { 'no metadata': undefined, 'static metadata v0.0.1': V001 };

  for (const [aadName, aad] of Object.entries(AADS)) {
    for (const [mdName, md] of Object.entries(METADATA)) {
      it(`${aadName}, ${mdName}: decrypts; one AAD byte changed is refused`, async () => {
        const plaintext = Buffer.from(`legacy data ${aadName} ${mdName}`);
        const fields = sampleEncrypt(SAMPLE_KEY, plaintext, aad, md);
        const ok = await xks.decrypt(KEY, fields);
        expect(ok.status, ok.text).toBe(200);
        expect(Buffer.from(ok.json.plaintext, 'base64')).toEqual(plaintext);
        const tampered = await xks.decrypt(KEY, { ...fields, additionalAuthenticatedData: changed(fields.additionalAuthenticatedData) });
        expect(tampered.status, tampered.text).toBe(400);
        expect(tampered.json.errorName).toBe('InvalidCiphertextException');
      });
    }
  }

  it('refuses a changed ciphertext, IV, tag or metadata, and a metadata field added or removed', async () => {
    const fields = sampleEncrypt(SAMPLE_KEY, Buffer.from('tamper me'), SAMPLE_AAD, V001);
    const { ciphertextMetadata: _, ...noMetadata } = fields;
    for (const bad of [
      { ...fields, ciphertext: changed(fields.ciphertext) },
      { ...fields, initializationVector: changed(fields.initializationVector) },
      { ...fields, authenticationTag: changed(fields.authenticationTag) },
      { ...fields, ciphertextMetadata: changed(fields.ciphertextMetadata) },
      noMetadata,
      { ...sampleEncrypt(SAMPLE_KEY, Buffer.from('x'), SAMPLE_AAD, undefined), ciphertextMetadata: V001.toString('base64') },
    ]) {
      const r = await xks.decrypt(KEY, bad);
      expect(r.status, r.text).toBe(400);
      expect(r.json.errorName).toBe('InvalidCiphertextException');
    }
  });
});

describe('the cost of a failed decrypt', () => {
  /** The running proxy's token, counting AES-GCM decrypts on their way to it (every call still goes to the HSM). */
  function counting(): { hsm: KeyStore; calls: () => number } {
    const real = t.proxy.hsm;
    let n = 0;
    const hsm = new Proxy(real, {
      get(target, p) {
        if (p === 'decryptGcm') return (...args: Parameters<KeyStore['decryptGcm']>) => (n++, target.decryptGcm(...args));
        const v = Reflect.get(target, p, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as KeyStore;
    return { hsm, calls: () => n };
  }

  async function callsFor(fields: Record<string, unknown>, fallback = true): Promise<{ calls: number; outcome: string }> {
    const { hsm, calls } = counting();
    const deps = { hsm, catalogue: t.proxy.catalogue, encryptions: new EncryptionBudget(hsm, DEFAULT_ENCRYPTION_LIMITS), awsSampleAadFallback: fallback };
    const req = {
      requestMetadata: metadata('Decrypt'),
      encryptionAlgorithm: 'AES_GCM',
      ...Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, Buffer.from(v as string, 'base64')])),
    } as unknown as DecryptRequest;
    try {
      await decrypt(deps, KEY, req);
      return { calls: calls(), outcome: 'ok' };
    } catch (e) {
      return { calls: calls(), outcome: toXksError(e).code };
    }
  }

  it("a spec ciphertext takes one call; a sample ciphertext without metadata two, with the sample's metadata one", async () => {
    const enc = await xks.encrypt(KEY, Buffer.from('spec'));
    expect(await callsFor(decryptFields(enc.json))).toEqual({ calls: 1, outcome: 'ok' });
    expect(await callsFor(sampleEncrypt(SAMPLE_KEY, Buffer.from('x'), SAMPLE_AAD, undefined))).toEqual({ calls: 2, outcome: 'ok' });
    expect(await callsFor(sampleEncrypt(SAMPLE_KEY, Buffer.from('x'), SAMPLE_AAD, V001))).toEqual({ calls: 1, outcome: 'ok' });
  });

  it('a tampered ciphertext costs at most one call more than before', async () => {
    const enc = await xks.encrypt(KEY, Buffer.from('spec'));
    // This proxy's metadata: the spec's layout only, as before.
    expect(await callsFor({ ...decryptFields(enc.json), ciphertext: changed(enc.json.ciphertext) })).toEqual({ calls: 1, outcome: 'InvalidCiphertextException' });
    const sample = sampleEncrypt(SAMPLE_KEY, Buffer.from('x'), SAMPLE_AAD, undefined);
    expect(await callsFor({ ...sample, ciphertext: changed(sample.ciphertext) })).toEqual({ calls: 2, outcome: 'InvalidCiphertextException' });
    // Metadata this proxy never writes was refused without a call; now it costs the one call of the sample's layout.
    const withMd = sampleEncrypt(SAMPLE_KEY, Buffer.from('x'), SAMPLE_AAD, V001);
    expect(await callsFor({ ...withMd, ciphertext: changed(withMd.ciphertext) })).toEqual({ calls: 1, outcome: 'InvalidCiphertextException' });
    // Turned off: as before the fallback existed.
    expect(await callsFor({ ...sample, ciphertext: changed(sample.ciphertext) }, false)).toEqual({ calls: 1, outcome: 'InvalidCiphertextException' });
    expect(await callsFor(withMd, false)).toEqual({ calls: 0, outcome: 'InvalidCiphertextException' });
  });
});

describe('xks.awsSampleAadFallback: false', () => {
  let off: TestProxy;
  beforeAll(async () => {
    // One PKCS#11 library per process: the proxy above stops first; the token and its key stay.
    await t.stop();
    stopped = true;
    off = await startProxyOnToken({ token, cleanupToken: false, config: { xks: { awsSampleAadFallback: false } } });
  });
  afterAll(async () => off?.stop());

  it("refuses the sample's ciphertexts and still decrypts the spec's", async () => {
    const client = xksClient(off.httpUrl);
    for (const name of ['AAD, no metadata', 'AAD, metadata v0.0.1']) {
      const r = await client.decrypt(KEY, vector(name));
      expect(r.status, r.text).toBe(400);
      expect(r.json.errorName).toBe('InvalidCiphertextException');
    }
    // With no AAD field and no metadata the two layouts are the same bytes (00 00 00): it decrypts either way.
    expect((await client.decrypt(KEY, vector('no AAD field, no metadata'))).status).toBe(200);
    const enc = await client.encrypt(KEY, Buffer.from('spec'));
    expect((await client.decrypt(KEY, decryptFields(enc.json))).status).toBe(200);
  });
});
