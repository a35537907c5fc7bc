// `xks serve --workers 2` when one worker's PKCS#11 library breaks and the other's does not: GetHealthStatus tells the
// truth for the process whichever worker answers it (never ACTIVE while a worker fails), and the broken worker is
// replaced. The fault comes from our emulator's control file, aimed at one worker's pid (test/emulator).
import http from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import { freePort, spawnServe, type ServeProcess } from '../helpers/serve-process.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('one of two workers broken', () => {
  let token: TestToken;
  let server: ServeProcess;
  const out = () => server.output();
  let url: string;
  let control: EmulatorControl;
  /** The pids of the workers listening now, from their "xks proxy listening" lines. */
  const listening = () =>
    out()
      .split('\n')
      .filter((l) => l.includes('"xks proxy listening"'))
      .map((l) => (JSON.parse(l) as { pid: number }).pid);

  beforeAll(async () => {
    ensureBuilt();
    token = createTestToken('workers-health');
    control = emulatorControl(token);
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const file = writeTestConfig(token, {
      hsm: control.hsm(),
      health: { maxAgeMs: 200, replaceWorkerAfterSeconds: 4 },
    });
    const config = parse(readFileSync(file, 'utf8'));
    config.listeners.http.port = port;
    writeFileSync(file, stringify(config));
    await runXks(['keys', 'create', 'foo', '--config', file], { token });
    server = spawnServe(token, file, ['--workers', '2']);
    for (let i = 0; i < 200 && listening().length < 2; i++) await sleep(100);
    expect(listening(), out()).toHaveLength(2);
  }, 60_000);

  afterAll(() => {
    server?.child.kill('SIGKILL');
    token?.cleanup();
  });

  it('answers DEGRADED or UNAVAILABLE from either worker while one fails, then replaces that one and is ACTIVE again', { timeout: 60_000 }, async () => {
    // New connections each time, so that both workers answer.
    const xks = xksClient(url, { agent: new http.Agent({ keepAlive: false }) });
    const [broken] = listening();
    // That worker's token goes away for good (its re-initialisation finds none); the other worker's does not.
    await control.set(
      [`@${broken} fail C_Encrypt CKR_DEVICE_ERROR 1`, `@${broken} fail C_GetTokenInfo CKR_TOKEN_NOT_PRESENT`, `@${broken} fail C_GetSlotList CKR_TOKEN_NOT_PRESENT`, `@${broken} fail C_OpenSession CKR_TOKEN_NOT_PRESENT`].join('\n') + '\n',
    );
    const statuses = new Set<number>();
    for (let i = 0; i < 20; i++) statuses.add((await xks.encrypt('foo', Buffer.from('x'))).status);
    expect([...statuses].sort(), 'one worker serves, the other answers a named 503').toEqual([200, 503]);

    // Once the primary has heard from both (every 2 s), no answer says ACTIVE.
    await sleep(2_500);
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) seen.add((await xks.health()).json.ekmFleetDetails[0].healthStatus);
    expect([...seen].sort()).toEqual(['DEGRADED', 'UNAVAILABLE']);

    // Replaced after replaceWorkerAfterSeconds (the other worker passes all along): a new worker, and ACTIVE again.
    for (let i = 0; i < 150 && !listening().some((p) => p !== broken && !listening().slice(0, 2).includes(p)); i++) await sleep(100);
    expect(out()).toContain('replacing it');
    expect(listening().length).toBeGreaterThanOrEqual(3);
    await sleep(2_500);
    const after = new Set<string>();
    for (let i = 0; i < 8; i++) after.add((await xks.health()).json.ekmFleetDetails[0].healthStatus);
    expect([...after]).toEqual(['ACTIVE']);
    for (let i = 0; i < 8; i++) expect((await xks.encrypt('foo', Buffer.from('x'))).status).toBe(200);
  });
});
