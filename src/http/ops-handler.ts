// The operations listener (off by default, loopback when on): GET /metrics for Prometheus, GET /health for readiness
// probes (the deep check: an encrypt and decrypt in the HSM, cached; 200 when ACTIVE, 503 otherwise; no SigV4, so
// keep this listener off the network KMS reaches), GET /ping for liveness. Nothing else, and nothing secret.
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
          (h) => answer(h.status === 'ACTIVE' ? 200 : 503, 'application/json', JSON.stringify(h)),
          (e: Error) => answer(503, 'application/json', JSON.stringify({ status: 'UNAVAILABLE', detail: e.message })),
        );
        return;
      default:
        answer(404, 'text/plain', 'not found: /metrics, /health, /ping\n');
    }
  };
}
