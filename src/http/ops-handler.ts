// The operations listener (off by default, loopback when on): GET /metrics for Prometheus, GET /health for readiness
// probes (the deep check: an encrypt and decrypt in the HSM, cached; 200 while the process serves, ACTIVE or DEGRADED,
// 503 when UNAVAILABLE; no SigV4, so keep this listener off the network KMS reaches), GET /ping for liveness. Nothing
// else, and nothing secret.
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface OpsSources {
  metrics(): Promise<{ contentType: string; body: string }>;
  health(): Promise<{ status: string; [detail: string]: unknown }>;
}

export function createOpsHandler(src: OpsSources) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    const answer = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    switch (path) {
      case '/ping':
        answer(200, 'application/json', '{"status":"ok"}');
        return;
      case '/metrics':
        src.metrics().then(
          (m) => answer(200, m.contentType, m.body),
          (e: Error) => answer(500, 'text/plain', `metrics unavailable: ${e.message}\n`),
        );
        return;
      case '/health':
        src.health().then(
          (h) => answer(readiness(h.status), 'application/json', JSON.stringify(h)),
          (e: Error) => answer(503, 'application/json', JSON.stringify({ status: 'UNAVAILABLE', detail: e.message })),
        );
        return;
      default:
        answer(404, 'text/plain', 'not found: /metrics, /health, /ping\n');
    }
  };
}

/**
 * The readiness answer for a health status. DEGRADED serves (audit.onFailure serve: requests are answered as usual while
 * the trail cannot be sealed; a sibling worker fails): taking every replica out of service for it would turn an audit
 * fault into an outage. The body says which.
 */
function readiness(status: string): number {
  return status === 'ACTIVE' || status === 'DEGRADED' ? 200 : 503;
}
