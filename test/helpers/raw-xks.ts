// Sends arbitrary body bytes (invalid UTF-8, oversized, chunked) to the proxy, signed by AWS's SigV4 (aws-sigv4.ts)
// exactly as KMS signs (SignedHeaders=host;x-amz-date). For malformed-input and fuzz tests.
import http from 'node:http';
import { awsSign, type SigV4Credential } from './aws-sigv4.js';
import { ACCESS_KEY_ID, REGION, SECRET } from './proxy.js';
import { readResponse, type XksResponse } from './xks-client.js';

export interface RawSendOptions {
  /** Send without Content-Length, in chunks (Transfer-Encoding: chunked). */
  chunked?: boolean;
  /** Sign with the credentials but then send these bytes instead (401 cases). */
  bodyAfterSigning?: Buffer;
}

const AS_KMS: SigV4Credential = { accessKeyId: ACCESS_KEY_ID, secret: SECRET, region: REGION, service: 'kms-xks-proxy', applyChecksum: false };

export async function sendRaw(baseUrl: string, path: string, body: Buffer | string, opts: RawSendOptions = {}): Promise<XksResponse> {
  const url = new URL(baseUrl);
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const signed = await awsSign({ method: 'POST', url, path, headers: { host: url.host }, body: bytes }, AS_KMS);
  const sent = opts.bodyAfterSigning ?? bytes;
  const headers: Record<string, string> = { ...signed, 'content-type': 'application/json' };
  if (!opts.chunked) headers['content-length'] = String(sent.length);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, path, method: 'POST', headers, agent: false }, (res) =>
      readResponse(res, resolve, reject),
    );
    // The server may answer and close before it has read an oversized body: a write error is then expected, and the
    // answer may still arrive. Give it a moment before calling the request failed.
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE' && e.code !== 'ECONNRESET') reject(e);
      else setTimeout(() => reject(e), 1000).unref();
    });
    if (opts.chunked) {
      for (let i = 0; i < sent.length; i += 4096) req.write(sent.subarray(i, i + 4096));
      req.end();
    } else {
      req.end(sent);
    }
  });
}
