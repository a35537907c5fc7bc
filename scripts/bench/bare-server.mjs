// The node:http ceiling for `npm run bench`: read the body, JSON.parse it, Base64-decode, AES-256-GCM in node:crypto
// (random 12-byte IV, the same AAD layout as the proxy) and answer the same compact JSON. No SigV4, no HSM, no checks
// beyond what the work needs: nothing a real proxy could do faster on this machine. Reports its port over IPC.
import http from 'node:http';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const KEY = randomBytes(32);
const METADATA = Buffer.from([1, 0, 0, 0, 1]); // the proxy's ciphertextMetadata for key version 1
const METADATA_B64 = METADATA.toString('base64');
const EMPTY = Buffer.alloc(0);

function gcmAad(aad, metadata) {
  const out = Buffer.allocUnsafe(2 + aad.length + 1 + metadata.length);
  out.writeUInt16BE(aad.length, 0);
  aad.copy(out, 2);
  out.writeUInt8(metadata.length, 2 + aad.length);
  metadata.copy(out, 3 + aad.length);
  return out;
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function encrypt(json) {
  const plaintext = Buffer.from(json.plaintext, 'base64');
  const aad = json.additionalAuthenticatedData ? Buffer.from(json.additionalAuthenticatedData, 'base64') : EMPTY;
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', KEY, iv);
  c.setAAD(gcmAad(aad, METADATA));
  const ciphertext = Buffer.concat([c.update(plaintext), c.final()]);
  return {
    authenticationTag: c.getAuthTag().toString('base64'),
    ciphertext: ciphertext.toString('base64'),
    ciphertextMetadata: METADATA_B64,
    initializationVector: iv.toString('base64'),
  };
}

function decrypt(json) {
  const aad = json.additionalAuthenticatedData ? Buffer.from(json.additionalAuthenticatedData, 'base64') : EMPTY;
  const metadata = json.ciphertextMetadata ? Buffer.from(json.ciphertextMetadata, 'base64') : EMPTY;
  const d = createDecipheriv('aes-256-gcm', KEY, Buffer.from(json.initializationVector, 'base64'));
  d.setAAD(gcmAad(aad, metadata));
  d.setAuthTag(Buffer.from(json.authenticationTag, 'base64'));
  const plaintext = Buffer.concat([d.update(Buffer.from(json.ciphertext, 'base64')), d.final()]);
  return { plaintext: plaintext.toString('base64') };
}

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    chunks.push(c);
    size += c.length;
  });
  req.on('end', () => {
    try {
      const json = JSON.parse((chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)).toString('utf8'));
      send(res, 200, req.url.endsWith('/decrypt') ? decrypt(json) : encrypt(json));
    } catch (e) {
      send(res, 400, { errorName: 'ValidationException', errorMessage: String(e?.message ?? e) });
    }
  });
});
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1', () => process.send?.({ port: server.address().port }));
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
