// The conformance cases of xks-api.md, over HTTP against the real server on a real token.
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DEMO_KEYS, PREFIX, SECOND_ACCESS_KEY_ID, SECOND_SECRET } from '../helpers/proxy.js';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields, metadata, signedRequest, xksPath } from '../helpers/xks-client.js';
import { TOKEN_FACTS } from '../helpers/test-token.js';

const t = useProxyOnToken({ keys: DEMO_KEYS });
const { xks } = t;

describe('GetHealthStatus', () => {
  it('answers a deep health status that names the real token', async () => {
    const r = await xks.health();
    expect(r.status).toBe(200);
    expect(r.text).not.toContain('\n');
    expect(r.json).toMatchObject({ xksProxyFleetSize: 1, ekmVendor: TOKEN_FACTS.manufacturer });
    expect(typeof r.json.xksProxyVendor).toBe('string');
    expect(typeof r.json.xksProxyModel).toBe('string');
    expect(r.json.ekmFleetDetails).toHaveLength(1);
    expect(r.json.ekmFleetDetails[0]).toMatchObject({ id: t.token.serial, healthStatus: 'ACTIVE' });
  });

  it('rejects {} and an empty requestMetadata with ValidationException', async () => {
    for (const body of [{}, { requestMetadata: {} }]) {
      const r = await xks.post('health', body);
      expect(r.status).toBe(400);
      expect(r.json.errorName).toBe('ValidationException');
    }
  });

  it('does not list the health key as an external key', async () => {
    const r = await xks.metadata('xks-proxy-health-check');
    expect(r.json.errorName).toBe('KeyNotFoundException');
  });
});

describe('authentication and paths', () => {
  it('accepts the second credential of the prefix', async () => {
    const r = await xks.health({ accessKeyId: SECOND_ACCESS_KEY_ID, secret: SECOND_SECRET });
    expect(r.status).toBe(200);
  });

  it.each([
    ['an unknown access key id', { accessKeyId: 'INVALIDBETWEEN2TENAND3TEN' }],
    ['a wrong secret', { secret: 'InvalidPleaseReplaceThisWithSomeSecretOfLength43' }],
    ['the wrong region', { region: 'eu-west-1' }],
    ['the wrong service', { service: 'kms' }],
    ['a signature older than 5 minutes', { signingDate: new Date(Date.now() - 6 * 60_000) }],
    ['a signature from the future', { signingDate: new Date(Date.now() + 6 * 60_000) }],
    ['a body changed after signing', { bodyAfterSigning: JSON.stringify({ requestMetadata: { kmsRequestId: 'x', kmsOperation: 'KmsHealthCheck' } }) }],
    ['no signature at all', { unsigned: true }],
  ])('rejects %s with AuthenticationFailedException', async (_name, opts) => {
    const r = await xks.post('keys/foo/metadata', { requestMetadata: metadata('DescribeKey') }, opts);
    expect(r.status).toBe(401);
    expect(r.json.errorName).toBe('AuthenticationFailedException');
  });

  it('checks the path before the signature: a wrong prefix is InvalidUriPathException even unsigned', async () => {
    for (const path of [`/${PREFIX}/invalid/kms/xks/v1/health`, '/kms/xks/v1/health', `/${PREFIX}/kms/xks/v1/keys/foo/sign`, `/${PREFIX}/kms/xks/v2/health`]) {
      const r = await signedRequest(t.httpUrl, path, '{}', { unsigned: true });
      expect(r.status, path).toBe(404);
      expect(r.json.errorName, path).toBe('InvalidUriPathException');
    }
  });

  it('answers 405 to GET on an XKS path', async () => {
    const r = await signedRequest(t.httpUrl, xksPath('health'), '', { method: 'GET' });
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('POST');
  });

  it('serves an unauthenticated GET /ping for load balancers', async () => {
    const r = await signedRequest(t.httpUrl, '/ping', '', { method: 'GET', unsigned: true });
    expect(r.status).toBe(200);
  });

  it('checks the body before the key: a malformed body for an unknown key is ValidationException', async () => {
    const r = await xks.post('keys/non_existing_key/encrypt', { requestMetadata: metadata('Encrypt') });
    expect(r.json.errorName).toBe('ValidationException');
  });
});

describe('GetKeyMetadata', () => {
  it('describes foo as an enabled AES_256 key that may encrypt and decrypt', async () => {
    const r = await xks.metadata('foo');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' });
  });

  it('reports the usage of the restricted keys', async () => {
    expect((await xks.metadata('encrypt_only_key')).json.keyUsage).toEqual(['ENCRYPT']);
    expect((await xks.metadata('decrypt_only_key')).json.keyUsage).toEqual(['DECRYPT']);
    expect((await xks.metadata('impotent_key')).json.keyUsage).toEqual([]);
  });

  it('answers KeyNotFoundException for an unknown key', async () => {
    const r = await xks.metadata('non_existing_key');
    expect(r.status).toBe(404);
    expect(r.json.errorName).toBe('KeyNotFoundException');
  });

  it('rejects a body without awsPrincipalArn', async () => {
    const r = await xks.post('keys/foo/metadata', { requestMetadata: { kmsRequestId: '1', kmsOperation: 'CreateKey' } });
    expect(r.json.errorName).toBe('ValidationException');
    expect(r.json.errorMessage).toContain('awsPrincipalArn');
  });
});

describe('Encrypt and Decrypt', () => {
  it('round-trips without AAD', async () => {
    const pt = Buffer.from('Hello World!');
    const enc = await xks.encrypt('foo', pt);
    expect(enc.status).toBe(200);
    expect(Buffer.from(enc.json.ciphertext, 'base64')).toHaveLength(pt.length);
    expect(Buffer.from(enc.json.initializationVector, 'base64')).toHaveLength(12);
    expect(Buffer.from(enc.json.authenticationTag, 'base64')).toHaveLength(16);
    expect(Buffer.from(enc.json.ciphertextMetadata, 'base64').length).toBeLessThanOrEqual(20);
    const dec = await xks.decrypt('foo', decryptFields(enc.json));
    expect(dec.status).toBe(200);
    expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(pt);
  });

  it('round-trips with AAD, and a missing or different AAD is InvalidCiphertextException', async () => {
    const aad = Buffer.from('project=nile,department=marketing');
    const enc = await xks.encrypt('foo', Buffer.from('secret'), { additionalAuthenticatedData: aad.toString('base64') });
    expect((await xks.decrypt('foo', decryptFields(enc.json, aad))).json.plaintext).toBe(Buffer.from('secret').toString('base64'));
    const missing = await xks.decrypt('foo', decryptFields(enc.json));
    expect(missing.status).toBe(400);
    expect(missing.json.errorName).toBe('InvalidCiphertextException');
    const other = await xks.decrypt('foo', decryptFields(enc.json, Buffer.from('project=amazon')));
    expect(other.json.errorName).toBe('InvalidCiphertextException');
  });

  it('computes the CDIV over AAD, metadata, IV, ciphertext and tag', async () => {
    const aad = randomBytes(40);
    for (const extra of [{ additionalAuthenticatedData: aad.toString('base64') }, {}]) {
      const enc = await xks.encrypt('foo', Buffer.from('plaintext\n'), { ...extra, ciphertextDataIntegrityValueAlgorithm: 'SHA_256' });
      expect(enc.status).toBe(200);
      const j = enc.json;
      const h = createHash('sha256');
      if ('additionalAuthenticatedData' in extra) h.update(aad);
      for (const f of [j.ciphertextMetadata, j.initializationVector, j.ciphertext, j.authenticationTag]) h.update(Buffer.from(f, 'base64'));
      expect(j.ciphertextDataIntegrityValue).toBe(h.digest('base64'));
    }
  });

  it('handles 4096 bytes of plaintext with 8192 bytes of AAD', async () => {
    const pt = randomBytes(4096);
    const aad = randomBytes(8192);
    const enc = await xks.encrypt('foo', pt, { additionalAuthenticatedData: aad.toString('base64') });
    expect(enc.status).toBe(200);
    const dec = await xks.decrypt('foo', decryptFields(enc.json, aad));
    expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(pt);
  });

  it('uses a fresh IV for every encrypt', async () => {
    const ivs = new Set<string>();
    for (let i = 0; i < 20; i++) ivs.add((await xks.encrypt('foo', Buffer.from('same'))).json.initializationVector);
    expect(ivs.size).toBe(20);
  });

  it('answers KeyNotFoundException for encrypt on an unknown key', async () => {
    const r = await xks.encrypt('non_existing_key', Buffer.from('x'));
    expect(r.status).toBe(404);
    expect(r.json.errorName).toBe('KeyNotFoundException');
  });

  it('rejects encrypt without plaintext', async () => {
    const r = await xks.post('keys/foo/encrypt', { requestMetadata: metadata('Encrypt'), encryptionAlgorithm: 'AES_GCM' });
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ errorName: 'ValidationException', errorMessage: 'plaintext is required' });
  });

  it('says a field of the wrong type is of the wrong type, not missing', async () => {
    const r = await xks.post('keys/foo/encrypt', { requestMetadata: metadata('Encrypt'), encryptionAlgorithm: 'AES_GCM', plaintext: 42 });
    expect(r.status).toBe(400);
    expect(r.json.errorName).toBe('ValidationException');
    expect(r.json.errorMessage).toMatch(/^plaintext: .*expected string/);
  });

  it('ignores unknown fields, as KMS may add some', async () => {
    const r = await xks.encrypt('foo', Buffer.from('x'), { someFutureField: 1 }, {});
    expect(r.status).toBe(200);
    const m = await xks.post('keys/foo/metadata', { requestMetadata: { ...metadata('CreateKey'), newField: 'x' }, other: [1] });
    expect(m.status).toBe(200);
  });

  it('accepts pretty-printed JSON, as curl-based clients send', async () => {
    const body = JSON.stringify({ requestMetadata: metadata('Encrypt'), plaintext: 'SGVsbG8=', encryptionAlgorithm: 'AES_GCM' }, null, 4);
    const r = await xks.post('keys/foo/encrypt', body);
    expect(r.status).toBe(200);
  });
});

describe('restricted keys', () => {
  it('encrypt_only_key encrypts but may not decrypt, nor encrypt with a CDIV', async () => {
    const enc = await xks.encrypt('encrypt_only_key', Buffer.from('x'));
    expect(enc.status).toBe(200);
    const dec = await xks.decrypt('encrypt_only_key', decryptFields(enc.json));
    expect(dec.json.errorName).toBe('InvalidKeyUsageException');
    const cdiv = await xks.encrypt('encrypt_only_key', Buffer.from('x'), { ciphertextDataIntegrityValueAlgorithm: 'SHA_256' });
    expect(cdiv.json.errorName).toBe('InvalidKeyUsageException');
  });

  it('decrypt_only_key and impotent_key may not encrypt', async () => {
    for (const key of ['decrypt_only_key', 'impotent_key']) {
      const r = await xks.encrypt(key, Buffer.from('x'));
      expect(r.status).toBe(400);
      expect(r.json.errorName).toBe('InvalidKeyUsageException');
    }
  });

  it('impotent_key may not decrypt', async () => {
    const enc = await xks.encrypt('foo', Buffer.from('x'));
    const r = await xks.decrypt('impotent_key', decryptFields(enc.json));
    expect(r.json.errorName).toBe('InvalidKeyUsageException');
  });
});
