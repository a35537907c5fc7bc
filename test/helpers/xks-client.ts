// An XKS client for tests, signed by AWS's own SigV4 implementation (aws-sigv4.ts), never the server's verifier.
import http from 'node:http';
import https from 'node:https';
import { awsSign } from './aws-sigv4.js';
import { ACCESS_KEY_ID, PREFIX, REGION, SECRET } from './proxy.js';

export interface XksResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

export interface SendOptions {
  method?: string;
  accessKeyId?: string;
  secret?: string;
  region?: string;
  service?: string;
  /** Sign at this time instead of now (expired signatures). */
  signingDate?: Date;
  /** Change the body after signing. */
  bodyAfterSigning?: string;
  unsigned?: boolean;
  headers?: Record<string, string>;
  agent?: https.Agent | http.Agent;
  prefix?: string;
}

/** Collects a response: status, headers, text and, when the text is JSON, the parsed value. */
export function readResponse(res: http.IncomingMessage, resolve: (r: XksResponse) => void, reject: (e: Error) => void): void {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
  });
  res.on('error', reject);
}

export async function signedRequest(baseUrl: string, path: string, body: string, opts: SendOptions = {}): Promise<XksResponse> {
  const url = new URL(baseUrl);
  const headers: Record<string, string> = {
    host: url.host,
    'content-type': 'application/json',
    ...opts.headers,
  };
  if (!opts.unsigned) {
    const signed = await awsSign(
      { method: opts.method ?? 'POST', url, path, headers, body },
      {
        accessKeyId: opts.accessKeyId ?? ACCESS_KEY_ID,
        secret: opts.secret ?? SECRET,
        region: opts.region ?? REGION,
        service: opts.service ?? 'kms-xks-proxy',
        ...(opts.signingDate ? { signingDate: opts.signingDate } : {}),
      },
    );
    Object.assign(headers, signed);
  }
  const sent = opts.bodyAfterSigning ?? body;
  const lib = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(
      {
        host: url.hostname,
        port: url.port,
        path,
        method: opts.method ?? 'POST',
        headers: { ...headers, 'content-length': String(Buffer.byteLength(sent)) },
        ...(opts.agent ? { agent: opts.agent } : {}),
      },
      (res) => readResponse(res, resolve, reject),
    );
    req.on('error', reject);
    req.end(sent);
  });
}

export const xksPath = (rest: string, prefix = PREFIX) => (prefix ? `/${prefix}/kms/xks/v1/${rest}` : `/kms/xks/v1/${rest}`);

export const metadata = (op: string, extra: Record<string, unknown> = {}) => ({
  awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
  kmsKeyArn: 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
  kmsOperation: op,
  kmsRequestId: `req-${Math.random().toString(36).slice(2)}`,
  kmsViaService: 'ebs',
  ...extra,
});

/** A small client bound to one proxy URL (or to a function that gives it when a request is made). */
export function xksClient(baseUrl: string | (() => string), defaults: SendOptions = {}) {
  const post = (rest: string, body: unknown, opts: SendOptions = {}) =>
    signedRequest(typeof baseUrl === 'string' ? baseUrl : baseUrl(), xksPath(rest, opts.prefix ?? defaults.prefix), typeof body === 'string' ? body : JSON.stringify(body), { ...defaults, ...opts });
  return {
    post,
    health: (opts?: SendOptions) => post('health', { requestMetadata: { kmsRequestId: 'h1', kmsOperation: 'KmsHealthCheck' } }, opts),
    metadata: (key: string, opts?: SendOptions) => post(`keys/${key}/metadata`, { requestMetadata: metadata('CreateKey') }, opts),
    encrypt: (key: string, plaintext: Buffer, extra: Record<string, unknown> = {}, opts?: SendOptions) =>
      post(`keys/${key}/encrypt`, { requestMetadata: metadata('Encrypt'), plaintext: plaintext.toString('base64'), encryptionAlgorithm: 'AES_GCM', ...extra }, opts),
    decrypt: (key: string, fields: Record<string, unknown>, opts?: SendOptions) =>
      post(`keys/${key}/decrypt`, { requestMetadata: metadata('Decrypt'), encryptionAlgorithm: 'AES_GCM', ...fields }, opts),
  };
}

export type XksClient = ReturnType<typeof xksClient>;

/** The decrypt fields from an encrypt response. */
export function decryptFields(enc: any, aad?: Buffer): Record<string, unknown> {
  return {
    ciphertext: enc.ciphertext,
    initializationVector: enc.initializationVector,
    authenticationTag: enc.authenticationTag,
    ...(enc.ciphertextMetadata !== undefined ? { ciphertextMetadata: enc.ciphertextMetadata } : {}),
    ...(aad ? { additionalAuthenticatedData: aad.toString('base64') } : {}),
  };
}
