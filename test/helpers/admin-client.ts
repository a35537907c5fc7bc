// An admin API client for tests, signed by AWS's own SigV4 implementation (aws-sigv4.ts) with service xks-admin, never
// by the server's verifier. Requests are KMS-style: POST / with X-Amz-Target: XksAdmin.<Operation>.
import http from 'node:http';
import { awsSign } from './aws-sigv4.js';
import { readResponse, type XksResponse } from './xks-client.js';

export const ADMIN_ACCESS_KEY_ID = 'AKIAXKSADMINTEST0001';
export const ADMIN_SECRET = 'admin-secret/only+for+tests=0123456789abcdefXYZ';
export const ADMIN_REGION = 'us-east-1';

/** The config section for a proxy with the admin API on a loopback port; its secret comes from XKS_TEST_ADMIN_SECRET. */
export function adminConfig(): Record<string, unknown> {
  process.env.XKS_TEST_ADMIN_SECRET = ADMIN_SECRET;
  return {
    listener: { host: '127.0.0.1', port: 0 },
    region: ADMIN_REGION,
    credentials: [{ accessKeyId: ADMIN_ACCESS_KEY_ID, secret: { env: 'XKS_TEST_ADMIN_SECRET' } }],
  };
}

export interface AdminSendOptions {
  accessKeyId?: string;
  secret?: string;
  region?: string;
  service?: string;
  method?: string;
  path?: string;
  /** Sign at this time instead of now (expired signatures). */
  signingDate?: Date;
  /** Send this body instead of the signed one. */
  bodyAfterSigning?: string;
  /** Headers sent but not signed (added after signing). */
  unsignedHeaders?: Record<string, string>;
  /** Send without Authorization. */
  unsigned?: boolean;
  /** Replace the default content-type, x-amz-target (null: leave it out). */
  contentType?: string | null;
  target?: string | null;
}

/** Sends one admin request; `body` is JSON-encoded unless it is a string (sent as is). */
export async function adminRequest(baseUrl: string, operation: string, body: unknown = {}, opts: AdminSendOptions = {}): Promise<XksResponse> {
  const url = new URL(baseUrl);
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const path = opts.path ?? '/';
  const headers: Record<string, string> = { host: url.host };
  const contentType = opts.contentType === undefined ? 'application/x-amz-json-1.1' : opts.contentType;
  if (contentType !== null) headers['content-type'] = contentType;
  const target = opts.target === undefined ? `XksAdmin.${operation}` : opts.target;
  if (target !== null) headers['x-amz-target'] = target;
  if (!opts.unsigned) {
    const signed = await awsSign(
      { method: opts.method ?? 'POST', url, path, headers, body: text },
      {
        accessKeyId: opts.accessKeyId ?? ADMIN_ACCESS_KEY_ID,
        secret: opts.secret ?? ADMIN_SECRET,
        region: opts.region ?? ADMIN_REGION,
        service: opts.service ?? 'xks-admin',
        ...(opts.signingDate ? { signingDate: opts.signingDate } : {}),
      },
    );
    Object.assign(headers, signed);
  }
  Object.assign(headers, opts.unsignedHeaders);
  const sent = opts.bodyAfterSigning ?? text;
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path, method: opts.method ?? 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(sent)) } },
      (res) => readResponse(res, resolve, reject),
    );
    req.on('error', reject);
    req.end(sent);
  });
}

/** A client bound to one admin listener. */
export function adminClient(baseUrl: string, defaults: AdminSendOptions = {}) {
  const call = (operation: string, body: unknown = {}, opts: AdminSendOptions = {}) => adminRequest(baseUrl, operation, body, { ...defaults, ...opts });
  return {
    call,
    describe: (keyId: string, opts?: AdminSendOptions) => call('DescribeKey', { KeyId: keyId }, opts),
  };
}
