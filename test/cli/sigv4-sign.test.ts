// `xks call`'s SigV4 signer (src/cli/sigv4-sign.ts, node:crypto) against AWS's own (@smithy/signature-v4): the same
// request at the same time must get the same Authorization header, for XKS and admin-style requests.
import { describe, expect, it } from 'vitest';
import { signSigV4 } from '../../src/cli/sigv4-sign.js';
import { awsSign } from '../helpers/aws-sigv4.js';

const SECRET = 'PleaseReplaceThisWithSomeSecretOfLength43To64';

async function smithy(url: URL, headers: Record<string, string>, body: string, service: string, date: Date): Promise<string> {
  const signed = await awsSign(
    { method: 'POST', url, path: url.pathname, query: Object.fromEntries(url.searchParams), headers: { host: url.host, ...headers }, body },
    { accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS', secret: SECRET, region: 'us-east-1', service, applyChecksum: false, signingDate: date },
  );
  return signed.authorization!;
}

describe('signSigV4', () => {
  const date = new Date('2026-12-07T12:34:56.789Z');
  it.each([
    ['an XKS encrypt', 'http://127.0.0.1:8080/example/uri/path/prefix/kms/xks/v1/keys/foo/encrypt', {}, 'kms-xks-proxy'],
    ['a default HTTPS port and a key id with dots', 'https://xks.example.com/kms/xks/v1/keys/a.b-c_d/decrypt', {}, 'kms-xks-proxy'],
    ['an admin call with X-Amz-Target', 'http://127.0.0.1:9090/', { 'x-amz-target': 'XksAdmin.DescribeKey' }, 'xks-admin'],
    ['a query string', 'http://127.0.0.1:9090/x?b=2&a=1&c=x%20y', {}, 'xks-admin'],
  ])('signs %s as AWS does', async (_what, href, extra, service) => {
    const url = new URL(href);
    const body = JSON.stringify({ requestMetadata: { kmsRequestId: 'r1', kmsOperation: 'Encrypt' }, plaintext: 'aGVsbG8=' });
    const headers = { 'content-type': 'application/json', ...extra };
    const mine = signSigV4({ method: 'POST', url, headers, body, accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS', secret: SECRET, region: 'us-east-1', service, date });
    expect(mine['x-amz-date']).toBe('20261207T123456Z');
    expect(mine.host).toBe(url.host);
    expect(mine.authorization).toBe(await smithy(url, headers, body, service, date));
  });
});
