// The listeners: HTTPS (TLS 1.2+, the spec's cipher suites, optional mTLS) and plain HTTP for use behind a TLS load balancer.
// Every listener bounds what a client can hold: a connection must deliver its headers within a few seconds, an idle
// keep-alive connection is closed, and each listener holds a bounded number of connections, below the descriptor limit.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Config } from '../config/schema.js';
import type { Incidents } from '../obs/incidents.js';

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

/** What one set of listeners lets its clients hold (config `listeners`; fixed for the admin and ops listeners). */
export interface ConnectionLimits {
  /** Connections each listener holds at once; beyond it a new connection is closed as soon as it is accepted. */
  maxConnections: number;
  /** A connection must deliver a request's headers within this (a new connection: from its first byte on). */
  headersTimeoutMs: number;
  /** A keep-alive connection idle this long between requests is closed. */
  idleTimeoutMs: number;
}

/** The admin and operations listeners: a few clients (an operator's tools, Prometheus, probes), never many. */
export const SMALL_LISTENER_CONNECTIONS = 64;

/** Descriptors kept for everything but the XKS listeners: stdio, the PKCS#11 library and its files, the audit trail, logs. */
const RESERVED_DESCRIPTORS = 128;

/** The soft limit on open descriptors (Node raises it to the hard limit at start-up); undefined where it cannot be read. */
export function descriptorLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    return soft === undefined || soft === 'unlimited' ? undefined : Number(soft) || undefined;
  } catch {
    return undefined; // not Linux
  }
}

/**
 * The XKS listeners' connection limit: the configured one, or 1024; either way below the descriptor limit once the
 * small listeners and a reserve are taken off, shared by the XKS listeners. At the descriptor limit a listener cannot
 * accept at all, and the limit is what keeps that from happening. `lowered` says when the configured one did not fit.
 */
export function xksConnectionLimit(
  configured: number | undefined,
  xksListeners: number,
  smallListeners: number,
  fdLimit = descriptorLimit(),
): { maxConnections: number; lowered: boolean } {
  const wanted = configured ?? 1024;
  if (fdLimit === undefined) return { maxConnections: wanted, lowered: false };
  const room = Math.floor((fdLimit - RESERVED_DESCRIPTORS - smallListeners * SMALL_LISTENER_CONNECTIONS) / Math.max(1, xksListeners));
  const fits = Math.max(16, room);
  return { maxConnections: Math.min(wanted, fits), lowered: configured !== undefined && configured > fits };
}

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

/**
 * Node's server options for the limits. Node checks header and request deadlines on a timer
 * (`connectionsCheckingInterval`, 30 s by default): a quarter of the header timeout makes the bound real. A request
 * must be complete within the header timeout plus 10 s (the XKS handler's own budget, 240 ms, is far shorter; the
 * admin API takes larger bodies).
 */
function serverOptions(limits: ConnectionLimits): http.ServerOptions {
  return {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.headersTimeoutMs + 10_000,
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 4))),
    // Probes from the kernel find peers that vanished without a FIN while a request is in flight.
    keepAlive: true,
    keepAliveInitialDelay: 30_000,
  };
}

function tune(server: http.Server, limits: ConnectionLimits, name: string, incidents: Incidents): void {
  server.keepAliveTimeout = limits.idleTimeoutMs;
  server.maxHeadersCount = 64;
  // Beyond the limit a new connection is closed as soon as it is accepted. Connections already open (KMS reuses its
  // own) keep serving; the ones holding the limit without sending are closed by the header timeout. Not Node's
  // server.maxConnections: under node:cluster a worker at that limit hands the connection back to the primary, which
  // queues it (holding a descriptor, with no timeout) until a worker takes it.
  let open = 0;
  server.on('connection', (socket: Socket) => {
    if (open >= limits.maxConnections) {
      socket.destroy();
      incidents.warn(`limit:${name}`, { listener: name, maxConnections: limits.maxConnections }, 'connection limit reached: new connections are closed');
      return;
    }
    open++;
    socket.once('close', () => open--);
  });
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

/** The listeners of one surface (XKS: http and https; admin and ops: http only), named in log lines by `name`. */
export async function startListeners(
  config: Pick<Config['listeners'], 'http' | 'https'>,
  handler: Handler,
  incidents: Incidents,
  limits: ConnectionLimits,
  name: string,
): Promise<Listening> {
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
      const s = http.createServer(serverOptions(limits), handler);
      tune(s, limits, config.https ? `${name}-http` : name, incidents);
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
          ...serverOptions(limits),
          // A client that never finishes its handshake holds its connection no longer than one without headers.
          handshakeTimeout: limits.headersTimeoutMs,
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
            const subject = socket.getPeerCertificate()?.subject?.CN;
            incidents.warn(`mtls:${String(subject)}`, { remote: socket.remoteAddress, subject }, 'mTLS client subject refused');
            socket.destroy();
          }
        });
      }
      s.on('tlsClientError', (err, socket) => {
        incidents.warn(`tls:${err.message}`, { remote: socket.remoteAddress, reason: err.message }, 'TLS handshake refused');
      });
      tune(s, limits, config.http ? `${name}-https` : name, incidents);
      servers.push(s);
      result.https = await listen(s, c.host, c.port);
    }
  } catch (e) {
    await result.close();
    throw e;
  }
  return result;
}
