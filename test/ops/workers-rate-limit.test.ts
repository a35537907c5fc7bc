// A key store's rate limit under `xks serve --workers 2`: the configured rate is the key store's, whatever the number
// of worker processes (config.sample.yaml: "rate limit for this key store"; rate-limit.ts: "the HSM never sees more
// than the operator allowed"). Connections spread over both workers must not get twice the burst.
import http from 'node:http';
import type https from 'node:https';
import { readFileSync, writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { freePort, spawnServe, type ServeProcess } from '../helpers/serve-process.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

const RATE = 5;
const BURST = 10;

let token: TestToken;
let serve: ServeProcess;
let url: string;

beforeAll(async () => {
  ensureBuilt();
  token = createTestToken('workers-rate');
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  const file = writeTestConfig(token);
  const config = parse(readFileSync(file, 'utf8'));
  config.listeners.http.port = port;
  config.prefixes[0].rateLimit = { requestsPerSecond: RATE, burst: BURST };
  writeFileSync(file, stringify(config));
  const created = await runXks(['keys', 'create', 'foo'], { token, configFile: file });
  expect(created.code, created.stderr).toBe(0);
  serve = spawnServe(token, file, ['--workers', '2']);
  await serve.waitFor((out) => (out.match(/xks proxy listening/g) ?? []).length >= 2, 40_000, 'both workers listening');
  await new Promise((r) => setTimeout(r, 2_500)); // full buckets
}, 60_000);

afterAll(async () => {
  if (serve && serve.child.exitCode === null) {
    serve.child.kill('SIGTERM');
    await Promise.race([serve.exited, new Promise((r) => setTimeout(r, 15_000))]);
    if (serve.child.exitCode === null) serve.child.kill('SIGKILL');
  }
  token?.cleanup();
});

it('a burst over both workers gets the key store burst, not one burst per worker', async () => {
  const started = performance.now();
  // A new connection per request: the primary hands them to the two workers in turn.
  const rs = await Promise.all(
    Array.from({ length: 60 }, () => xksClient(url, { agent: new http.Agent({ keepAlive: false }) as unknown as https.Agent }).encrypt('foo', Buffer.from('x'))),
  );
  const seconds = (performance.now() - started) / 1000;
  const ok = rs.filter((r) => r.status === 200).length;
  expect(rs.filter((r) => r.status !== 200).every((r) => r.status === 429)).toBe(true);
  expect(ok).toBeGreaterThanOrEqual(BURST);
  expect(ok, `${ok} of 60 accepted in ${seconds.toFixed(2)} s`).toBeLessThanOrEqual(BURST + Math.ceil(seconds * RATE) + 1);
});
