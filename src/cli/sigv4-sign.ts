// AWS Signature Version 4 signing for `xks call`, with node:crypto. Written apart from the server's verifier
// (http/sigv4.ts) so that a mistake in one is not mirrored in the other; test/cli/sigv4-sign.test.ts compares it with
// AWS's own signer (@smithy/signature-v4). Pure: the request's parts and a time in, the headers to send out.
import { createHash, createHmac } from 'node:crypto';

export interface SigningInput {
  method: string;
  url: URL;
  /** Headers to sign and send besides host and x-amz-date (content-type, x-amz-target ...). */
  headers: Record<string, string>;
  body: string;
  accessKeyId: string;
  secret: string;
  region: string;
  service: string;
  date: Date;
}

/** The headers to send: the given ones (lower-case names), host, x-amz-date and authorization, all of them signed. */
export function signSigV4(i: SigningInput): Record<string, string> {
  const amzDate = i.date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, ''); // 20261207T120000Z
  const day = amzDate.slice(0, 8);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(i.headers)) headers[k.toLowerCase()] = v;
  headers.host = i.url.host;
  headers['x-amz-date'] = amzDate;
  const names = Object.keys(headers).sort();
  const canonicalHeaders = names.map((n) => `${n}:${headers[n]!.trim().replace(/\s+/g, ' ')}\n`).join('');
  const signedHeaders = names.join(';');
  const canonicalRequest = [i.method, canonicalPath(i.url.pathname), canonicalQuery(i.url.searchParams), canonicalHeaders, signedHeaders, sha256Hex(i.body)].join('\n');
  const scope = `${day}/${i.region}/${i.service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
  let key = hmac(`AWS4${i.secret}`, day);
  for (const part of [i.region, i.service, 'aws4_request']) key = hmac(key, part);
  const signature = createHmac('sha256', key).update(stringToSign).digest('hex');
  return { ...headers, authorization: `AWS4-HMAC-SHA256 Credential=${i.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}` };
}

/** RFC 3986 encoding of each segment, as SigV4 asks of services other than S3 (the path as sent, encoded again). */
function canonicalPath(path: string): string {
  return path.split('/').map(uriEncode).join('/') || '/';
}

function canonicalQuery(params: URLSearchParams): string {
  return [...params]
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}
