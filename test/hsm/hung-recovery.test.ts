// What a connection does with calls that outlive their budget (an HSM that hangs), through our emulator's control file
// (test/emulator): a session that opens after its caller gave up is closed, not leaked; and the library is never
// finalised and re-initialised while a call is still out (that call would then run with an old session and key number
// in the new library), but tried again once it has returned.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import { createKnownAesKey, openTestHsm } from '../helpers/test-hsm.js';
import { createTestToken, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';


// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('calls past their budget', () => {
  let token: TestToken;
  let hsm: HsmConnection;
  let control: EmulatorControl;
  let counted: string;
  const setControl = (text: string) => control.set(text);
  const calls = (fn: string) => (existsSync(counted) ? readFileSync(counted, 'utf8').split('\n').filter((l) => l === fn).length : 0);

  beforeEach(async () => {
    buildEmulator();
    token = createTestToken('hung-recovery');
    control = emulatorControl(token);
    counted = join(token.dir, 'calls');
    hsm = await openTestHsm(token, {
      modulePath: control.hsm().module,
      libraryParameters: control.hsm().libraryParameters,
      poolSize: 2,
      operationTimeoutMs: 200,
      controlTimeoutMs: 300,
    });
  });
  afterEach(async () => {
    await control?.set('');
    await sleep(50);
    hsm?.close();
    token?.cleanup();
  });

  it('closes a session that opened after its caller timed out', async () => {
    await setControl(`hang C_OpenSession 800\ncount C_CloseSession ${counted}\n`);
    await expect(hsm.findObjects({ label: 'anything' })).rejects.toMatchObject({ code: 'Timeout' });
    await sleep(1_000); // the open returns
    expect(calls('C_CloseSession'), 'the late session is closed').toBeGreaterThanOrEqual(1);
  });

  it('does not re-initialise the library while a call is still out, and recovers once it has returned', { timeout: 20_000 }, async () => {
    const key = await createKnownAesKey(hsm, randomBytes(32));
    expect(hsm.capabilities.callMode).toBe('thread');
    await setControl(`hang C_Encrypt 2500 1\ncount C_Finalize ${counted}\n`);
    const started = performance.now();
    // Out on the call thread for 2.5 s; its caller is told Timeout at 200 ms.
    await expect(hsm.encryptGcm(key, Buffer.from('x'), Buffer.alloc(0))).rejects.toMatchObject({ code: 'Timeout' });
    // A device error that the probe confirms: the connection wants to re-initialise the library.
    await setControl(`hang C_Encrypt 2500 0\ncount C_Finalize ${counted}\nfail C_FindObjectsInit CKR_DEVICE_ERROR 1\nfail C_GetTokenInfo CKR_DEVICE_ERROR 1\n`);
    await expect(hsm.findObjects({ label: 'anything' })).rejects.toBeDefined();
    while (performance.now() - started < 2_300) await sleep(50);
    expect(calls('C_Finalize'), 'not while the encrypt is out').toBe(0);
    // The call returns at 2.5 s; the connection, down meanwhile, tries again on its own and serves.
    let ok = false;
    for (let i = 0; i < 80 && !ok; i++) {
      await sleep(100);
      ok = await hsm.findObjects({ label: 'anything' }).then(
        () => true,
        () => false,
      );
    }
    expect(ok, 'served again (the device answers: a new login was enough)').toBe(true);
  });
});
