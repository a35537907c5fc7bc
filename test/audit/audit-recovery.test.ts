// The audit trail stays sealed across HSM recoveries: a lost login, a failing HMAC that makes the library
// re-initialise, and a library finalised underneath the server. Each recovery voids the key handles the signer found
// before (SoftHSM numbers objects afresh), so the signer must find its key again; checkpoints go on being made, and
// the built `xks audit verify` accepts the whole trail. A real server on our PKCS#11 emulator (faults from its control
// file) over a SoftHSM token.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(TOKEN_KIND !== 'softhsm')('the audit trail across HSM recoveries', () => {
  let t: TestProxy;
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
  }, 120_000);
  afterAll(async () => {
    await setControl('');
    await t?.stop();
    t?.token.cleanup();
  });

  /** Requests after the fault, then a checkpoint must follow them within a few checkpoint intervals. */
  async function expectSealedAfter(what: string, fault: () => unknown) {
    const xks = xksClient(t.httpUrl);
    expect((await xks.encrypt('foo', Buffer.from('before'))).status).toBe(200);
    const generation = t.proxy.hsm.generation;
    await fault();
    for (let i = 0; i < 10; i++) expect((await xks.encrypt('foo', Buffer.from(`after ${what} ${i}`))).status).toBe(200);
    await setControl('');
    const lastEvent = Math.max(...trailLines().filter((l) => l.type === 'event').map((l) => l.seq));
    for (let i = 0; i < 50 && !trailLines().some((l) => l.type === 'checkpoint' && l.seq > lastEvent); i++) await sleep(100);
    expect(t.proxy.hsm.generation, `${what}: a recovery happened`).toBeGreaterThan(generation);
    expect(trailLines().some((l) => l.type === 'checkpoint' && l.seq > lastEvent), `${what}: sealed after the recovery`).toBe(true);
  }

  it('goes on making checkpoints after a lost login', async () => {
    await expectSealedAfter('a lost login', () => {
      const { mod, loginSession } = t.proxy.hsm.moduleForTests;
      mod.C_Logout(loginSession);
    });
  });

  it('goes on making checkpoints after a failing HMAC re-initialised the library', async () => {
    // C_Sign fails once as a device error and the probe finds the device gone: the library is re-initialised.
    await expectSealedAfter('a failing HMAC', () => setControl('fail C_Sign CKR_DEVICE_ERROR 1\nfail C_GetTokenInfo CKR_DEVICE_ERROR 1\n'));
  });

  it('goes on making checkpoints after the library was finalised underneath it', async () => {
    await expectSealedAfter('C_Finalize', () => t.proxy.hsm.moduleForTests.mod.C_Finalize());
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
