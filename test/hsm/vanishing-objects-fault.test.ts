// The search of vanishing-objects.test.ts made deterministic with our PKCS#11 emulator (test/emulator) in front of
// SoftHSM: C_GetAttributeValue answers CKR_OBJECT_HANDLE_INVALID, as for an object destroyed since C_FindObjects.
// Once: the search is made again and answers every object there is. Always: after a few searches it fails with a
// named error, in time, and the connection serves as before once the fault is gone.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { GENERIC_SECRET_KEY_GEN } from '../../src/hsm/mechanisms.js';
import { inertSecretTemplate } from '../../src/hsm/templates.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import { openTestHsm } from '../helpers/test-hsm.js';
import { createTestToken, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('a search whose object vanishes before it is read (emulated)', () => {
  let token: TestToken;
  let control: EmulatorControl;
  let hsm: HsmConnection;
  const label = 'vanishing';

  beforeAll(async () => {
    buildEmulator();
    token = createTestToken('vanishing-fault');
    control = emulatorControl(token);
    const { module, libraryParameters } = control.hsm();
    hsm = await openTestHsm(token, { modulePath: module, libraryParameters });
    for (let i = 0; i < 3; i++) await hsm.generateKey(inertSecretTemplate(label, randomBytes(8)), GENERIC_SECRET_KEY_GEN);
  }, 60_000);
  afterAll(async () => {
    await control?.set('');
    hsm?.close();
    token?.cleanup();
  });

  it.each(['sync', 'async', 'thread'] as const)('once: searches again and answers all three (%s calls)', async (mode) => {
    hsm.capabilities.callMode = mode;
    await control.set('fail C_GetAttributeValue CKR_OBJECT_HANDLE_INVALID 1\n');
    const found = await hsm.findSecretKeys({ label });
    expect(found.map((o) => o.label)).toEqual([label, label, label]);
    await control.set('');
  });

  it('every time: a named error within a second, and the next search works once the fault is gone', async () => {
    await control.set('fail C_GetAttributeValue CKR_OBJECT_HANDLE_INVALID\n');
    const started = performance.now();
    await expect(hsm.findSecretKeys({ label })).rejects.toMatchObject({ code: 'ObjectHandleInvalid', ckr: 'CKR_OBJECT_HANDLE_INVALID' });
    expect(performance.now() - started).toBeLessThan(1_000);
    await control.set('');
    expect(await hsm.findSecretKeys({ label })).toHaveLength(3);
  });
});
