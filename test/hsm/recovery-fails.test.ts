// When recovery itself fails (the token removed, C_Initialize refusing), every request gets a named 503 that KMS reads
// as "retry later", never a 500 InternalException; once the HSM is back, the proxy serves again without a restart.
// Faults come from our PKCS#11 emulator's control file (test/emulator), forwarding to a SoftHSM token.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('an HSM that cannot be recovered', () => {
  let t: TestProxy;
  let control: EmulatorControl;
  const setControl = (text: string) => control.set(text);

  beforeAll(async () => {
    buildEmulator();
    const token = createTestToken('unrecoverable');
    control = emulatorControl(token);
    t = await startProxyOnToken({
      token,
      config: { hsm: control.hsm() },
      keys: { foo: { encrypt: true, decrypt: true } },
    });
  }, 60_000);
  afterAll(async () => {
    await setControl('');
    await t?.stop();
  });

  it('answers a named 503 while the token is gone, and serves again once it is back', async () => {
    const xks = xksClient(t.httpUrl);
    expect((await xks.encrypt('foo', Buffer.from('before'))).status).toBe(200);
    // Every call fails as if the token were removed, C_Initialize included: recovery cannot succeed.
    await setControl('fail * CKR_DEVICE_REMOVED\n');
    const answers = [];
    for (let i = 0; i < 10; i++) answers.push(await xks.encrypt('foo', Buffer.from('while gone')));
    for (const a of answers) {
      expect(a.status, a.text).toBe(503);
      expect(a.json.errorName).toBe('DependencyTimeoutException');
    }
    await setControl('');
    // Recovery is tried again with a doubling delay (at most 2 s), with or without requests.
    let back = false;
    for (let i = 0; i < 60 && !back; i++) {
      await new Promise((r) => setTimeout(r, 50));
      back = (await xks.encrypt('foo', Buffer.from('after'))).status === 200;
    }
    expect(back).toBe(true);
    expect(t.logs.some((l) => l.includes('hsm.recover'))).toBe(true);
  });

  it('serves again when the token comes back under another slot id (a partition or HSM server added back)', async () => {
    const xks = xksClient(t.httpUrl);
    expect((await xks.encrypt('foo', Buffer.from('before'))).status).toBe(200);
    // A device error, then the token is gone: the probe fails, the re-initialisation finds no token, recovery fails.
    await setControl('fail C_Encrypt CKR_DEVICE_ERROR 1\nfail C_GetTokenInfo CKR_TOKEN_NOT_PRESENT\nfail C_GetSlotList CKR_TOKEN_NOT_PRESENT\nfail C_OpenSession CKR_TOKEN_NOT_PRESENT\n');
    for (let i = 0; i < 5; i++) {
      const a = await xks.encrypt('foo', Buffer.from('while gone'));
      expect(a.status, a.text).toBe(503);
    }
    // The token is back, enumerated under a new slot id: the one the proxy holds answers CKR_SLOT_ID_INVALID.
    await setControl('slot_offset 256\n');
    // No request comes: the proxy tries again on its own (with backoff) and finds the token.
    let up = false;
    for (let i = 0; i < 60 && !up; i++) {
      await new Promise((r) => setTimeout(r, 50));
      up = await t.proxy.hsm.ping(); // asks the HSM about the login, and is false while the connection is down
    }
    expect(up, 'recovered without traffic').toBe(true);
    let last;
    for (let i = 0; i < 40; i++) {
      last = await xks.encrypt('foo', Buffer.from('after'));
      if (last.status === 200) break;
      expect(last.status, last.text).toBe(503);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(last!.status, last!.text).toBe(200);
    const health = await xks.health();
    expect(health.json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
  });
});
