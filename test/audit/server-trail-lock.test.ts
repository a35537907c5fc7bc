// A serving process holds its audit trail's lock for its lifetime: a second `xks serve` with the same host and role
// (here: the same audit directory, worker slot 1) refuses to start with a named error before it touches the trail,
// instead of resuming the live file, renaming it `*-unsealed.jsonl` under the running process and writing a segment of
// its own. A holder that is gone (a worker killed with SIGKILL) is taken over at once by its replacement.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trailFileName } from '../../src/audit/audit-trail.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { count, freePort, spawnServe, type ServeProcess } from '../helpers/serve-process.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('two servers on one audit trail', () => {
  let token: TestToken;
  let dir: string;
  let first: ServeProcess;
  let second: ServeProcess | undefined;
  let url: string;
  const configFor = (port: number, name: string) =>
    writeTestConfig(token, { listeners: { http: { host: '127.0.0.1', port } }, audit: { dir, checkpointEvery: 2, checkpointSeconds: 1 } }, name);
  const trail = () => join(dir, trailFileName('w1'));
  const checkpoints = () => readFileSync(trail(), 'utf8').split('\n').filter((l) => l.includes('"type":"checkpoint"')).length;
  async function waitFor(what: string, pred: () => boolean, ms = 15_000): Promise<void> {
    for (const end = Date.now() + ms; !pred(); await sleep(100)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }

  beforeAll(async () => {
    ensureBuilt();
    token = createTestToken('server-trail-lock');
    dir = join(token.dir, 'audit');
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const config = configFor(port, 'first.yaml');
    expect((await runXks(['keys', 'create', 'foo'], { token, configFile: config })).code).toBe(0);
    first = spawnServe(token, config, ['--workers', '1']);
    await first.waitFor((out) => out.includes('"xks proxy listening"'), 30_000, 'the first server listening');
  }, 60_000);
  afterAll(async () => {
    second?.child.kill('SIGKILL');
    first?.child.kill('SIGTERM');
    await first?.exited;
    token?.cleanup();
  });

  it('refuses to start a second server on the live trail, with a named error, and leaves the trail to the first', async () => {
    const xks = xksClient(url);
    for (let i = 0; i < 4; i++) expect((await xks.encrypt('foo', Buffer.from('first'))).status).toBe(200);
    await waitFor('a checkpoint', () => checkpoints() >= 2);

    second = spawnServe(token, configFor(await freePort(), 'second.yaml'), ['--workers', '1']);
    const ended = await Promise.race([second.exited, sleep(25_000).then(() => undefined)]);
    expect(ended, second.output().slice(-2000)).toBeDefined();
    expect(ended!.code).not.toBe(0);
    expect(second.output()).toMatch(/AuditTrailLocked: the audit trail \S+-w1\.jsonl is locked by process \d+ on /);
    expect(second.output()).not.toMatch(/"xks proxy listening"/);

    // The first goes on writing into its file, never renamed, and seals it.
    expect(readdirSync(dir).filter((f) => f.includes('-w1'))).toEqual([trailFileName('w1'), `${trailFileName('w1')}.lock`]);
    const before = checkpoints();
    for (let i = 0; i < 4; i++) expect((await xks.encrypt('foo', Buffer.from('first again'))).status).toBe(200);
    await waitFor('another checkpoint', () => checkpoints() > before);
  }, 40_000);

  it('is taken over at once from a holder that is gone: the replacement of a killed worker starts', async () => {
    const pid = first.logLines().find((l) => l.msg === 'xks proxy listening')!.pid as number;
    process.kill(pid, 'SIGKILL');
    await first.waitFor((out) => count(out, '"xks proxy listening"') >= 2, 20_000, 'the replacement worker listening');
    expect(first.output()).not.toMatch(/AuditTrailLocked/);
    expect((await xksClient(url).encrypt('foo', Buffer.from('after'))).status).toBe(200);
  }, 30_000);
});
