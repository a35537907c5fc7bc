// HEALTHCHECK: exit 0 when the proxy answers 200 to GET /ping. No curl in the image; node does it.
// XKS_HEALTHCHECK_URL overrides the URL (e.g. https://127.0.0.1:8443/ping for an HTTPS-only listener without mTLS;
// the certificate is not checked: this only asks whether the local process serves).
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';

const url = new URL(process.env.XKS_HEALTHCHECK_URL || 'http://127.0.0.1:8080/ping');
const get = url.protocol === 'https:' ? httpsGet : httpGet;
const req = get(url, { timeout: 3000, rejectUnauthorized: false }, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', (e) => {
  console.error(`healthcheck: ${url.href}: ${e.message}`);
  process.exit(1);
});
