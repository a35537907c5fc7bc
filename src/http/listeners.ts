// The listeners: HTTPS (TLS 1.2+, the spec's cipher suites, optional mTLS) and plain HTTP for use behind a TLS load balancer.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Config } from '../config/schema.js';
import type { Logger } from '../obs/logger.js';

// TLS 1.3 suites first, then the TLS 1.2 suites the spec names (xks-api.md "Transport").
const CIPHERS = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_128_GCM_SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

type Handler = http.RequestListener;

export interface Listening {
  servers: (http.Server | https.Server)[];
  http?: AddressInfo;
  https?: AddressInfo;
  close(): Promise<void>;
}

/** Whether a client certificate's CN or a DNS subjectAltName is one of the accepted subjects. */
export function subjectAllowed(cert: { subject?: Record<string, unknown>; subjectaltname?: string } | undefined, allowed: string[]): boolean {
  if (!cert || !cert.subject) return false;
  const names = new Set<string>();
  const cn = cert.subject.CN;
  if (typeof cn === 'string') names.add(cn);
  else if (Array.isArray(cn)) cn.forEach((c) => names.add(String(c)));
  for (const part of (cert.subjectaltname ?? '').split(',')) {
    const m = /^\s*DNS:(.+)$/.exec(part);
    if (m) names.add(m[1]!.trim());
  }
  return allowed.some((a) => names.has(a));
}

function tune(server: http.Server): void {
  server.keepAliveTimeout = 65_000; // longer than typical load balancer idle timeouts
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  server.maxHeadersCount = 64;
}

function listen(server: http.Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

export async function startListeners(config: Config['listeners'], handler: Handler, logger: Logger): Promise<Listening> {
  const servers: (http.Server | https.Server)[] = [];
  const result: Listening = {
    servers,
    close: async () => {
      // Stop accepting, close idle keep-alive connections, let requests in flight finish; after a grace period close
      // whatever is left, so that shutdown always reaches C_Finalize.
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              const force = setTimeout(() => s.closeAllConnections(), 5_000);
              force.unref();
              s.close(() => {
                clearTimeout(force);
                resolve();
              });
              s.closeIdleConnections();
            }),
        ),
      );
    },
  };
  try {
    if (config.http) {
      const s = http.createServer(handler);
      tune(s);
      servers.push(s);
      result.http = await listen(s, config.http.host, config.http.port);
    }
    if (config.https) {
      const c = config.https;
      const mtls = c.mtls;
      const s = https.createServer(
        {
          cert: readFileSync(c.certFile),
          key: readFileSync(c.keyFile),
          minVersion: 'TLSv1.2',
          ciphers: CIPHERS,
          honorCipherOrder: true,
          ...(mtls ? { requestCert: true, rejectUnauthorized: true, ca: readFileSync(mtls.clientCaFile) } : {}),
        },
        handler,
      );
      if (mtls) {
        // The CA check happens in the handshake; the subject check right after it, before any request is read:
        // prepended, because the HTTP server's own secureConnection listener starts reading requests.
        s.prependListener('secureConnection', (socket: TLSSocket) => {
          if (!subjectAllowed(socket.getPeerCertificate(), mtls.allowedSubjects)) {
            logger.warn({ remote: socket.remoteAddress, subject: socket.getPeerCertificate()?.subject?.CN }, 'mTLS client subject refused');
            socket.destroy();
          }
        });
      }
      s.on('tlsClientError', (err, socket) => {
        logger.warn({ remote: socket.remoteAddress, reason: err.message }, 'TLS handshake refused');
      });
      tune(s);
      servers.push(s);
      result.https = await listen(s, c.host, c.port);
    }
  } catch (e) {
    await result.close();
    throw e;
  }
  return result;
}
