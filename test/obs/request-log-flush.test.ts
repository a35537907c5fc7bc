// The request log is buffered (src/obs/logger.ts: out at 4 KiB or every 100 ms). An operator tailing the log of an
// idle `xks serve` still sees each request's line at once, and the lines of the last requests before SIGTERM are
// written before the process exits.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { freePort, spawnServe, type ServeProcess } from '../helpers/serve-process.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { metadata, xksClient } from '../helpers/xks-client.js';

let token: TestToken;
let serve: ServeProcess;
let url: string;

beforeAll(async () => {
  ensureBuilt();
  token = createTestToken('logflush');
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  const file = writeTestConfig(token, { listeners: { http: { host: '127.0.0.1', port } } });
  const created = await runXks(['keys', 'create', 'foo'], { token, configFile: file });
  expect(created.code, created.stderr).toBe(0);
  serve = spawnServe(token, file, ['--workers', '1']);
  await serve.waitFor((out) => out.includes('xks proxy listening'), 30_000, 'the worker listening');
}, 60_000);

afterAll(async () => {
  if (serve && serve.child.exitCode === null) serve.child.kill('SIGKILL');
  token?.cleanup();
});

const lineOf = (id: string) => serve.logLines().find((l) => l.msg === 'xks request' && l.kmsRequestId === id);

it("an idle server's request line appears within a fraction of a second", async () => {
  const xks = xksClient(url);
  const id = `idle-${Date.now()}`;
  const r = await xks.encrypt('foo', Buffer.from('one request'), { requestMetadata: metadata('Encrypt', { kmsRequestId: id }) });
  expect(r.status).toBe(200);
  const sent = Date.now();
  await serve.waitFor(() => lineOf(id) !== undefined, 2_000, `the line of ${id}`);
  // 100 ms flush period, plus the pipe and the test's 50 ms polling.
  expect(Date.now() - sent).toBeLessThan(1_000);
  expect(lineOf(id)).toMatchObject({ operation: 'Encrypt', keyId: 'foo', outcome: 'ok', status: 200 });
});

it('the lines of the requests answered just before SIGTERM are in the log when the process has exited', async () => {
  const xks = xksClient(url);
  const ids = Array.from({ length: 5 }, (_, i) => `last-${i}-${Date.now()}`);
  for (const id of ids) {
    const r = await xks.encrypt('foo', Buffer.from('late'), { requestMetadata: metadata('Encrypt', { kmsRequestId: id }) });
    expect(r.status).toBe(200);
  }
  serve.child.kill('SIGTERM');
  const { code } = await serve.exited;
  expect(code).toBe(0);
  for (const id of ids) expect(lineOf(id), id).toMatchObject({ outcome: 'ok', status: 200 });
});
