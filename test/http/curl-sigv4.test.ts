// Requests signed by the system curl's --aws-sigv4, exactly as AWS's test client (aws-kms-xksproxy-test-client) sends
// them: content-type;host;x-amz-date signed, the port kept in Host, pretty-printed JSON bodies. Over HTTP and mTLS.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPki, KMS_CLIENT_CN, type TestPki } from '../helpers/pki.js';
import { ACCESS_KEY_ID, PREFIX, REGION, SECOND_ACCESS_KEY_ID, SECOND_SECRET, SECRET, startTestProxy, type TestProxy } from '../helpers/proxy.js';

let t: TestProxy;
let pki: TestPki;

beforeAll(async () => {
  pki = createTestPki();
  t = await startTestProxy({
    https: { certFile: pki.server.cert, keyFile: pki.server.key, mtls: { clientCaFile: pki.caCert, allowedSubjects: [KMS_CLIENT_CN] } },
    keys: { foo: { encrypt: true, decrypt: true } },
  });
});
afterAll(async () => {
  await t?.stop();
  pki?.cleanup();
});

interface CurlResult {
  exitCode: number;
  status?: number;
  json?: any;
  body: string;
  stderr: string;
}

let bodies = 0;

/** POST `body` (pretty-printed, from a file, as the test client's heredoc) with curl's own SigV4 signing. */
async function curl(rest: string, body: unknown, opts: { base?: string; user?: string; tls?: string[]; verbose?: boolean } = {}): Promise<CurlResult> {
  const file = join(t.token.dir, `body-${++bodies}.json`);
  writeFileSync(file, `${JSON.stringify(body, null, 4)}\n`);
  const url = `${opts.base ?? t.httpUrl}/${PREFIX}/kms/xks/v1/${rest}`;
  const args = [
    url, '--silent', '--show-error', '--max-time', '10',
    ...(opts.tls ?? []),
    ...(opts.verbose ? ['--verbose'] : []),
    '-H', 'Content-Type: application/json',
    '--aws-sigv4', `aws:amz:${REGION}:kms-xks-proxy`,
    '--user', opts.user ?? `${ACCESS_KEY_ID}:${SECRET}`,
    '--data-binary', `@${file}`,
    '--write-out', '\n%{http_code}',
  ];
  try {
    const r = await promisify(execFile)('curl', args);
    const lines = r.stdout.split('\n');
    const status = Number(lines.pop());
    const text = lines.join('\n');
    let json: unknown;
    try {
      json = JSON.parse(lines[lines.length - 1] ?? ''); // the test client reads the last line
    } catch {
      json = undefined;
    }
    return { exitCode: 0, status, json, body: text, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { exitCode: typeof err.code === 'number' ? err.code : -1, body: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

const requestMetadata = (op: string) => ({
  awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
  kmsKeyArn: 'arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab',
  kmsOperation: op,
  kmsRequestId: randomBytes(16).toString('hex'),
  kmsViaService: 'ebs',
});

describe('curl --aws-sigv4 over HTTP', () => {
  it('gets the health status', async () => {
    const r = await curl('health', { requestMetadata: { kmsOperation: 'KmsHealthCheck', kmsRequestId: 'curl-health' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(200);
    expect(r.json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
    expect(r.body).not.toContain('\n'); // one compact line
  });

  it('signs as the test client does: content-type;host;x-amz-date, with the port in Host', async () => {
    const r = await curl('health', { requestMetadata: { kmsOperation: 'KmsHealthCheck', kmsRequestId: 'curl-v' } }, { verbose: true });
    expect(r.status).toBe(200);
    const port = new URL(t.httpUrl).port;
    expect(r.stderr).toContain(`> Host: 127.0.0.1:${port}`);
    expect(r.stderr).toMatch(/Authorization: AWS4-HMAC-SHA256 Credential=[A-Z2-7]+\/\d{8}\/us-east-1\/kms-xks-proxy\/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=[0-9a-f]{64}/);
  });

  it('gets the key metadata', async () => {
    const r = await curl('keys/foo/metadata', { requestMetadata: requestMetadata('CreateKey') });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' });
  });

  it('encrypts and decrypts 4096 bytes with 8192 bytes of AAD and a CDIV', async () => {
    const pt = randomBytes(4096);
    const aad = randomBytes(8192).toString('base64');
    const enc = await curl('keys/foo/encrypt', {
      requestMetadata: requestMetadata('Encrypt'),
      additionalAuthenticatedData: aad,
      plaintext: pt.toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
      ciphertextDataIntegrityValueAlgorithm: 'SHA_256',
    });
    expect(enc.status, enc.body).toBe(200);
    expect(typeof enc.json.ciphertextDataIntegrityValue).toBe('string');
    const dec = await curl('keys/foo/decrypt', {
      requestMetadata: requestMetadata('Decrypt'),
      additionalAuthenticatedData: aad,
      encryptionAlgorithm: 'AES_GCM',
      ciphertext: enc.json.ciphertext,
      ciphertextMetadata: enc.json.ciphertextMetadata,
      initializationVector: enc.json.initializationVector,
      authenticationTag: enc.json.authenticationTag,
    });
    expect(dec.status, dec.body).toBe(200);
    expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(pt);
  });

  it('accepts the second credential of the prefix', async () => {
    const r = await curl('health', { requestMetadata: { kmsOperation: 'KmsHealthCheck', kmsRequestId: 'c2' } }, { user: `${SECOND_ACCESS_KEY_ID}:${SECOND_SECRET}` });
    expect(r.status).toBe(200);
  });

  it.each([
    ['a wrong secret', `${ACCESS_KEY_ID}:InvalidPleaseReplaceThisWithSomeSecretOfLength43`],
    ['an unknown access key id', `INVALIDBETWEEN2TENAND3TEN:${SECRET}`],
  ])('answers %s with AuthenticationFailedException', async (_name, user) => {
    const r = await curl('keys/foo/encrypt', { requestMetadata: requestMetadata('Encrypt'), plaintext: 'SGVsbG8=', encryptionAlgorithm: 'AES_GCM' }, { user });
    expect(r.status).toBe(401);
    expect(r.json.errorName).toBe('AuthenticationFailedException');
  });
});

describe('curl --aws-sigv4 over HTTPS with mTLS', () => {
  const tlsArgs = (cert: { cert: string; key: string }) => ['--cacert', pki.caCert, '--cert', cert.cert, '--key', cert.key];

  it('gets the health status with the configured client certificate', async () => {
    const r = await curl('health', { requestMetadata: { kmsOperation: 'KmsHealthCheck', kmsRequestId: 'mtls' } }, { base: t.httpsUrl!, tls: tlsArgs(pki.client) });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(200);
    expect(r.json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
  });

  it.each([
    ['an expired', () => pki.expired],
    ['a self-signed', () => pki.selfSigned],
  ])('fails with %s client certificate, as AWS test_negative_mtls does', async (_name, cert) => {
    const r = await curl('health', { requestMetadata: { kmsOperation: 'KmsHealthCheck', kmsRequestId: 'bad-mtls' } }, { base: t.httpsUrl!, tls: tlsArgs(cert()) });
    expect(r.exitCode).not.toBe(0);
    expect(r.status).toBeUndefined();
  });
});
