// `xks serve --workers 2`: two processes share the listener, each with its own PKCS#11 library; SIGTERM drains both.
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { freePort, spawnServe, type ServeProcess } from '../helpers/serve-process.js';
import { SECOND_ACCESS_KEY_ID, SECOND_SECRET } from '../helpers/proxy.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { decryptFields, signedRequest, xksClient } from '../helpers/xks-client.js';

let token: TestToken;
let server: ServeProcess;
const out = () => server.output();
let url: string;

beforeAll(async () => {
  ensureBuilt();
  token = createTestToken();
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  const file = writeTestConfig(token);
  const config = parse(readFileSync(file, 'utf8'));
  config.listeners.http.port = port;
  writeFileSync(file, stringify(config));
  server = spawnServe(token, file, ['--workers', '2']);
  // Both workers listening (they start one after the other).
  for (let i = 0; i < 200 && (out().match(/xks proxy listening/g) ?? []).length < 2; i++) await new Promise((r) => setTimeout(r, 100));
  expect((out().match(/xks proxy listening/g) ?? []).length, out()).toBe(2);
  // A key made while the workers run, by another process: both see it.
  await runXks(['keys', 'create', 'shared', '--config', file], { token });
});

afterAll(() => {
  server?.child.kill('SIGKILL');
  token?.cleanup();
});

it('serves concurrent round trips from both workers', async () => {
  const xks = xksClient(url);
  const results = await Promise.all(
    Array.from({ length: 60 }, async () => {
      const pt = randomBytes(64);
      const enc = await xks.encrypt('shared', pt);
      expect(enc.status, enc.text).toBe(200);
      const dec = await xks.decrypt('shared', decryptFields(enc.json));
      expect(dec.status, dec.text).toBe(200);
      return Buffer.from(dec.json.plaintext, 'base64').equals(pt);
    }),
  );
  expect(results.every(Boolean)).toBe(true);
  const workers = new Set([...out().matchAll(/"worker":(\d+)/g)].map((m) => m[1]));
  expect(workers.size).toBe(2);
});

it('rotates credentials on SIGHUP without a restart, and refuses a broken config', async () => {
  const file = (server.child.spawnargs[server.child.spawnargs.indexOf('--config') + 1])!;
  const config = parse(readFileSync(file, 'utf8'));
  const xks = xksClient(url);
  expect((await xks.health()).status).toBe(200);
  // Remove the first credential, add a third one.
  const third = { accessKeyId: 'THIRDCREDENTIALFORTESTS234', secret: 'ThirdSecretForRotationTests0123456789abcdefgh' };
  writeFileSync(join(dirname(file), 'secret3'), third.secret, { mode: 0o600 });
  config.prefixes[0].credentials = [config.prefixes[0].credentials[1], { accessKeyId: third.accessKeyId, secret: { file: 'secret3' } }];
  writeFileSync(file, stringify(config));
  server.child.kill('SIGHUP');
  const until = async (ok: () => Promise<boolean>) => {
    for (let i = 0; i < 50 && !(await ok()); i++) await new Promise((r) => setTimeout(r, 100));
  };
  // Both workers take it: every request, whichever worker serves it, sees the new credentials.
  await until(async () => (await xks.health()).status === 401);
  for (let i = 0; i < 10; i++) {
    expect((await xks.health()).status).toBe(401);
    expect((await xks.health({ accessKeyId: third.accessKeyId, secret: third.secret })).status).toBe(200);
    expect((await xks.health({ accessKeyId: SECOND_ACCESS_KEY_ID, secret: SECOND_SECRET })).status).toBe(200);
  }
  // A broken config is refused and the running one stays.
  writeFileSync(file, 'prefixes: [nonsense');
  server.child.kill('SIGHUP');
  await until(async () => out().includes('configuration reload refused'));
  expect(out()).toContain('configuration reload refused');
  expect((await xks.health({ accessKeyId: third.accessKeyId, secret: third.secret })).status).toBe(200);
  expect(out()).not.toContain(third.secret);
});

it('drains and exits cleanly on SIGTERM', async () => {
  const ping = await signedRequest(url, '/ping', '', { method: 'GET', unsigned: true });
  expect(ping.status).toBe(200);
  server.child.kill('SIGTERM');
  expect((await server.exited).code).toBe(0);
  expect(out()).not.toContain(token.userPin);
});

it('stops instead of retrying when workers cannot log in (a wrong PIN must not be tried again and again)', async () => {
  const file = writeTestConfig(token, { hsm: { pin: { env: 'XKS_TEST_WRONG_PIN' } } }, 'wrong-pin.yaml');
  const child = spawnServe(token, file, ['--workers', '2'], { XKS_TEST_WRONG_PIN: 'not-the-pin' });
  const { code } = await child.exited;
  const text = child.output();
  expect(code).toBe(1);
  expect(text).toContain('worker failed to start');
  expect((text.match(/CKR_PIN_INCORRECT/g) ?? []).length).toBe(1);
  expect(text).not.toContain('not-the-pin');
});
