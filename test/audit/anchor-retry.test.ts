// A checkpoint whose HSM anchor could not be made is anchored again by a retry (with backoff), whether or not new lines
// arrive: with audit.onFailure refuse, a proxy whose anchor failed once would otherwise refuse key operations until
// traffic happened to make another checkpoint. A real server on our PKCS#11 emulator, whose control file makes the
// anchor's C_GenerateKey fail once.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditAnchors } from '../../src/audit/audit-anchor.js';
import { trailId } from '../../src/audit/audit-record.js';
import { trailFileName } from '../../src/audit/audit-trail.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(TOKEN_KIND !== 'softhsm')('a failed HSM anchor', () => {
  let t: TestProxy;
  let control: EmulatorControl;
  let file: string;
  const setControl = (text: string) => control.set(text);
  const lastCheckpointSeq = () =>
    Math.max(
      ...readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { seq: number; type: string })
        .filter((l) => l.type === 'checkpoint')
        .map((l) => l.seq),
    );
  const anchoredSeq = async () => (await new AuditAnchors(t.proxy.hsm).latest(trailId(resolve(file))))?.seq;
  async function waitFor(what: string, pred: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
    for (const end = Date.now() + ms; !(await pred()); await sleep(50)) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    }
  }

  beforeAll(async () => {
    buildEmulator();
    const token = createTestToken('audit-anchor-retry');
    control = emulatorControl(token);
    const dir = join(token.dir, 'audit');
    file = join(dir, trailFileName('main'));
    t = await startProxyOnToken({
      token,
      config: {
        hsm: control.hsm(),
        // No checkpoint by time during the test: only the retry can mend the anchor.
        audit: { dir, checkpointEvery: 2, checkpointSeconds: 600, onFailure: 'refuse' },
      },
      keys: { foo: { encrypt: true, decrypt: true } },
    });
  }, 60_000);
  afterAll(async () => {
    await setControl('');
    await t?.stop();
  });

  it('is anchored again by a retry with no new line, and a refusing proxy serves again', async () => {
    const xks = xksClient(t.httpUrl);
    for (let i = 0; i < 2; i++) expect((await xks.encrypt('foo', Buffer.from('before'))).status).toBe(200);
    await t.proxy.audit!.checkpoint();
    await waitFor('the first anchor', async () => (await anchoredSeq()) === lastCheckpointSeq());
    const before = lastCheckpointSeq();

    await setControl('fail C_GenerateKey CKR_DEVICE_MEMORY 1\n');
    for (let i = 0; i < 2; i++) expect((await xks.encrypt('foo', Buffer.from('anchor fails'))).status).toBe(200);
    await t.proxy.audit!.checkpoint();
    await waitFor('the failed anchor', () => /^anchor: /.test(t.proxy.audit!.status.failing ?? ''));
    expect(lastCheckpointSeq()).toBeGreaterThan(before);
    expect(await anchoredSeq()).toBe(before);

    // No request meanwhile (a refused request is a line, and would start a checkpoint of its own): the retry alone.
    const lines = t.proxy.audit!.status.lines;
    await waitFor('the anchor made again', () => t.proxy.audit!.status.failing === undefined);
    expect(t.proxy.audit!.status.lines).toBe(lines);
    expect(await anchoredSeq()).toBe(lastCheckpointSeq());
    expect((await xks.encrypt('foo', Buffer.from('after'))).status).toBe(200);
  });
});
