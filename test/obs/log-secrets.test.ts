// What the proxy logs: one line per XKS request with the fields an operator correlates with KMS and CloudTrail,
// and never a plaintext, a SigV4 secret or a PIN, at any log level, for successful and failed requests alike.
import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { PREFIX, SECOND_ACCESS_KEY_ID, SECOND_SECRET, SECRET } from '../helpers/proxy.js';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields, metadata, type XksResponse } from '../helpers/xks-client.js';
import { tokenSecrets } from '../helpers/test-token.js';

// trace: the most verbose level an operator could turn on must not leak either.
const t = useProxyOnToken({
  logLevel: 'trace',
  keys: { foo: { encrypt: true, decrypt: true }, decrypt_only: { encrypt: false, decrypt: true } },
});
const { xks } = t;

/** Every request this file sends: its kmsRequestId and what the log line must say. */
interface Sent {
  rid: string;
  operation: string;
  keyId?: string;
  status: number;
  errorName?: string;
  authenticated: boolean;
}
const sent: Sent[] = [];
const plaintexts: Buffer[] = [];

const WRONG_SECRET = 'WrongSecretWrongSecretWrongSecretWrongSecret0';

let n = 0;
const rid = (what: string) => `log-test-${what}-${++n}-${randomBytes(4).toString('hex')}`;

async function send(
  operation: string,
  keyId: string | undefined,
  body: Record<string, unknown>,
  opts: { secret?: string; accessKeyId?: string } = {},
): Promise<XksResponse> {
  const id = rid(operation);
  const rest = operation === 'GetHealthStatus' ? 'health' : `keys/${keyId}/${{ Encrypt: 'encrypt', Decrypt: 'decrypt', GetKeyMetadata: 'metadata' }[operation]}`;
  const md = operation === 'GetHealthStatus' ? { kmsRequestId: id, kmsOperation: 'KmsHealthCheck' } : metadata(operation, { kmsRequestId: id });
  const r = await xks.post(rest, { requestMetadata: md, ...body }, opts);
  sent.push({ rid: id, operation, ...(keyId ? { keyId } : {}), status: r.status, ...(r.json?.errorName ? { errorName: r.json.errorName } : {}), authenticated: r.status !== 401 });
  return r;
}

function distinctivePlaintext(label: string): Buffer {
  // Text (so a utf8 leak is findable) with random bytes after it (so base64 and hex forms are unique).
  const p = Buffer.concat([Buffer.from(`TOP-SECRET-${label}-PLAINTEXT-`), randomBytes(24)]);
  plaintexts.push(p);
  return p;
}

beforeAll(async () => {
  for (let i = 0; i < 3; i++) {
    const pt = distinctivePlaintext(`rt${i}`);
    const aad = Buffer.from(`tenant=acme-${i}`);
    const enc = await send('Encrypt', 'foo', { plaintext: pt.toString('base64'), encryptionAlgorithm: 'AES_GCM', additionalAuthenticatedData: aad.toString('base64') });
    expect(enc.status).toBe(200);
    const dec = await send('Decrypt', 'foo', { encryptionAlgorithm: 'AES_GCM', ...decryptFields(enc.json, aad) });
    expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(pt);
    // Wrong AAD: InvalidCiphertextException.
    const bad = await send('Decrypt', 'foo', { encryptionAlgorithm: 'AES_GCM', ...decryptFields(enc.json, Buffer.from('other')) });
    expect(bad.json.errorName).toBe('InvalidCiphertextException');
  }
  // With the CDIV, through the second credential.
  const pt = distinctivePlaintext('cdiv');
  const cdiv = await send('Encrypt', 'foo', { plaintext: pt.toString('base64'), encryptionAlgorithm: 'AES_GCM', ciphertextDataIntegrityValueAlgorithm: 'SHA_256' },
    { accessKeyId: SECOND_ACCESS_KEY_ID, secret: SECOND_SECRET });
  expect(cdiv.status).toBe(200);
  // Failures that carry a plaintext: key may not encrypt, unknown key, bad algorithm, wrong secret.
  const usage = await send('Encrypt', 'decrypt_only', { plaintext: distinctivePlaintext('usage').toString('base64'), encryptionAlgorithm: 'AES_GCM' });
  expect(usage.json.errorName).toBe('InvalidKeyUsageException');
  const missing = await send('Encrypt', 'no_such_key', { plaintext: distinctivePlaintext('nokey').toString('base64'), encryptionAlgorithm: 'AES_GCM' });
  expect(missing.json.errorName).toBe('KeyNotFoundException');
  const algo = await send('Encrypt', 'foo', { plaintext: distinctivePlaintext('algo').toString('base64'), encryptionAlgorithm: 'AES_CBC' });
  expect(algo.json.errorName).toBe('ValidationException');
  for (let i = 0; i < 2; i++) {
    const auth = await send('Encrypt', 'foo', { plaintext: distinctivePlaintext(`auth${i}`).toString('base64'), encryptionAlgorithm: 'AES_GCM' }, { secret: WRONG_SECRET });
    expect(auth.json.errorName).toBe('AuthenticationFailedException');
  }
  const authHealth = await send('GetHealthStatus', undefined, {}, { secret: WRONG_SECRET });
  expect(authHealth.status).toBe(401);
  expect((await send('GetKeyMetadata', 'foo', {})).status).toBe(200);
  expect((await send('GetHealthStatus', undefined, {})).status).toBe(200);
});

const requestLines = () => t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'xks request');

describe('request log lines', () => {
  it('writes exactly one line per request', () => {
    expect(requestLines()).toHaveLength(sent.length);
  });

  it('gives each authenticated request its kmsRequestId, operation, prefix, key, outcome and duration', () => {
    const lines = requestLines();
    for (const s of sent.filter((x) => x.authenticated)) {
      const mine = lines.filter((l) => l.kmsRequestId === s.rid);
      expect(mine, s.rid).toHaveLength(1);
      const l = mine[0]!;
      expect(l).toMatchObject({ operation: s.operation, prefix: PREFIX, status: s.status });
      if (s.keyId) expect(l.keyId).toBe(s.keyId);
      expect(typeof l.ms).toBe('number');
      if (s.status === 200) {
        expect(l.outcome).toBe('ok');
        // The key version used, for the crypto operations: what a rotation audit needs.
        if (s.operation === 'Encrypt' || s.operation === 'Decrypt') expect(l.keyVersion, s.rid).toBe(1);
      } else {
        expect(l.outcome).toBe('error');
        expect(l.errorName).toBe(s.errorName);
      }
    }
  });

  it('names the access key id that signed, and which one (of two credentials) it was', () => {
    const lines = requestLines();
    const ids = new Set(lines.filter((l) => l.outcome === 'ok').map((l) => l.accessKeyId));
    expect(ids).toContain(SECOND_ACCESS_KEY_ID);
    expect(ids.size).toBe(2);
  });

  it('logs failed authentications as AuthenticationFailedException with operation, prefix and key', () => {
    const failed = requestLines().filter((l) => l.errorName === 'AuthenticationFailedException');
    expect(failed).toHaveLength(sent.filter((s) => !s.authenticated).length);
    for (const l of failed) {
      expect(l).toMatchObject({ outcome: 'error', status: 401, prefix: PREFIX });
      expect(['Encrypt', 'GetHealthStatus']).toContain(l.operation);
      expect(typeof l.ms).toBe('number');
    }
  });

  it('gives failed authentications their kmsRequestId too, so an operator can match KMS connection errors', () => {
    const lines = requestLines();
    for (const s of sent.filter((x) => !x.authenticated)) {
      expect(lines.filter((l) => l.kmsRequestId === s.rid), `no log line with kmsRequestId ${s.rid}`).toHaveLength(1);
    }
  });
});

describe('secrets in the logs', () => {
  it('logged something at all (the checks below are not vacuous)', () => {
    expect(t.logs.length).toBeGreaterThan(sent.length);
    expect(plaintexts.length).toBeGreaterThanOrEqual(9);
  });

  it('never logs a plaintext, in utf8, base64 or hex', () => {
    for (const p of plaintexts) {
      const forms = [p.toString('base64'), p.toString('hex'), p.toString('hex').toUpperCase(), p.subarray(0, p.indexOf('-PLAINTEXT-') + 11).toString('utf8')];
      for (const line of t.logs) for (const f of forms) expect(line.includes(f), `log line contains ${f}: ${line}`).toBe(false);
    }
  });

  it('never logs a SigV4 secret, the user PIN or the SO PIN', () => {
    for (const s of [SECRET, SECOND_SECRET, WRONG_SECRET, ...tokenSecrets(t.token)]) {
      for (const line of t.logs) expect(line.includes(s), `log line contains a secret: ${line}`).toBe(false);
    }
  });

  it('never logs the request signature', () => {
    // A signature is not a secret, but the Authorization header is redacted by design: check it stays so.
    for (const line of t.logs) expect(line).not.toMatch(/Signature=[0-9a-f]{64}/);
  });
});
