// The audit trail stays sealed across HSM recoveries: a lost login, a failing HMAC that makes the library
// re-initialise, and a library finalised underneath the server. Each recovery voids the key handles the signer found
// before (SoftHSM numbers objects afresh), so the signer must find its key again; checkpoints go on being made, and
// the built `xks audit verify` accepts the whole trail. A real server on our PKCS#11 emulator (faults from its control
// file) over a SoftHSM token.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { buildEmulator, emulatorControl, EMULATOR, type EmulatorControl } from '../helpers/emulator.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { ANCHOR_LABEL, parseAnchorObjectId } from '../../src/audit/audit-anchor.js';
import { tokenLibrary, type TokenLibrary } from '../helpers/token-library.js';
import { xksClient } from '../helpers/xks-client.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(TOKEN_KIND !== 'softhsm')('the audit trail across HSM recoveries', () => {
  let t: TestProxy;
  /** The library the proxy loaded (the emulator), loaded by this test: a C_Logout or C_Finalize through it is the proxy's too. */
  let lib: TokenLibrary;
  let control: EmulatorControl;
  let auditDir: string;
  const setControl = (text: string) => control.set(text);
  const trailFile = () => join(auditDir, readdirSync(auditDir).find((f) => f.endsWith('-main.jsonl'))!);
  const trailLines = () => readFileSync(trailFile(), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { seq: number; type: string });

  beforeAll(async () => {
    ensureBuilt();
    buildEmulator();
    const token = createTestToken('audit-recovery');
    control = emulatorControl(token);
    auditDir = join(token.dir, 'audit');
    t = await startProxyOnToken({
      token,
      cleanupToken: false,
      config: {
        hsm: control.hsm(),
        audit: { dir: auditDir, checkpointEvery: 4, checkpointSeconds: 1 },
      },
      keys: { foo: { encrypt: true, decrypt: true } },
    });
    lib = tokenLibrary(token, EMULATOR);
  }, 120_000);
  afterAll(async () => {
    await setControl('');
    await t?.stop();
    t?.token.cleanup();
  });

  /**
   * Until what the requests so far set going on the proxy's PKCS#11 control thread is done: the trail sealed up to its
   * last line, that checkpoint anchored in the token and the older anchor of the trail destroyed. A C_Finalize made by
   * the test while SoftHSM runs a call on another thread frees what that call is using (the process crashes: a real
   * HSM's library does not do that to its client), and a checkpoint's MAC and anchor run right after a request.
   */
  async function settled() {
    for (let i = 0; i < 100; i++) {
      const last = trailLines().at(-1);
      if (last?.type === 'checkpoint') {
        const anchors = (await t.proxy.hsm.findSecretKeys({ label: ANCHOR_LABEL })).map((k) => parseAnchorObjectId(k.id));
        const newest = anchors.find((a) => a?.seq === last.seq);
        if (newest && anchors.filter((a) => a?.trail === newest.trail).length === 1) return;
      }
      await sleep(50);
    }
    throw new Error('the trail was not sealed and anchored within 5 s');
  }

  /** Requests after the fault, then a checkpoint must follow them within a few checkpoint intervals. */
  async function expectSealedAfter(what: string, fault: () => unknown, opts: { settleFirst?: boolean } = {}) {
    const xks = xksClient(t.httpUrl);
    expect((await xks.encrypt('foo', Buffer.from('before'))).status).toBe(200);
    const generation = t.proxy.hsm.generation;
    if (opts.settleFirst) await settled();
    await fault();
    for (let i = 0; i < 10; i++) expect((await xks.encrypt('foo', Buffer.from(`after ${what} ${i}`))).status).toBe(200);
    const lastEvent = Math.max(...trailLines().filter((l) => l.type === 'event').map((l) => l.seq));
    // Emulator faults stay armed until then: one that no checkpoint met during the requests meets the next one's MAC
    // (cleared before, it could go unused, and no recovery happen).
    for (let i = 0; i < 50 && !trailLines().some((l) => l.type === 'checkpoint' && l.seq > lastEvent); i++) await sleep(100);
    await setControl('');
    expect(t.proxy.hsm.generation, `${what}: a recovery happened`).toBeGreaterThan(generation);
    expect(trailLines().some((l) => l.type === 'checkpoint' && l.seq > lastEvent), `${what}: sealed after the recovery`).toBe(true);
  }

  it('goes on making checkpoints after a lost login', async () => {
    await expectSealedAfter('a lost login', () => lib.logout());
  });

  it('goes on making checkpoints after a failing HMAC re-initialised the library', async () => {
    // C_Sign fails once as a device error and the probe finds the device gone: the library is re-initialised.
    await expectSealedAfter('a failing HMAC', () => setControl('fail C_Sign CKR_DEVICE_ERROR 1\nfail C_GetTokenInfo CKR_DEVICE_ERROR 1\n'));
  });

  it('goes on making checkpoints after the library was finalised underneath it', async () => {
    // Finalised while the proxy is idle, between its HSM calls (see settled()).
    await expectSealedAfter('C_Finalize', () => lib.finalize(), { settleFirst: true });
  });

  it('leaves a trail that `xks audit verify` accepts', async () => {
    await t.proxy.audit!.close();
    const failures = t.logs.filter((l) => l.includes('audit trail write failed'));
    expect(failures.length, failures.slice(0, 3).join('\n')).toBeLessThan(10);
    const r = await runXks(['audit', 'verify', ...readdirSync(auditDir).filter((f) => f.endsWith('.jsonl')).map((f) => join(auditDir, f))], { token: t.token, configFile: t.configFile });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^OK /m);
  });
});
