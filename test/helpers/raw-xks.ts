// Sends arbitrary body bytes (invalid UTF-8, oversized, chunked) to the proxy, signed by @smithy/signature-v4
// exactly as KMS signs (SignedHeaders=host;x-amz-date). For malformed-input and fuzz tests.
import http from 'node:http';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import { ACCESS_KEY_ID, REGION, SECRET } from './proxy.js';
import { readResponse, type XksResponse } from './xks-client.js';

export interface RawSendOptions {
  /** Send without Content-Length, in chunks (Transfer-Encoding: chunked). */
  chunked?: boolean;
  /** Sign with the credentials but then send these bytes instead (401 cases). */
  bodyAfterSigning?: Buffer;
}

const signer = new SignatureV4({
  credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET },
  region: REGION,
  service: 'kms-xks-proxy',
  sha256: Sha256,
  applyChecksum: false,
});

export async function sendRaw(baseUrl: string, path: string, body: Buffer | string, opts: RawSendOptions = {}): Promise<XksResponse> {
  const url = new URL(baseUrl);
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const signed = await signer.sign({
    method: 'POST',
    protocol: url.protocol,
    hostname: url.hostname,
    port: Number(url.port),
    path,
    headers: { host: url.host },
    body: bytes,
  });
  const sent = opts.bodyAfterSigning ?? bytes;
  const headers: Record<string, string> = { ...(signed.headers as Record<string, string>), 'content-type': 'application/json' };
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
