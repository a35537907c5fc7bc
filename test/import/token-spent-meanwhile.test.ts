// Two imports with one token, the first held inside its unwrap (our PKCS#11 emulator, test/emulator, holds its
// C_UnwrapKey) while the second commits and spends the token (its wrapping key pair is destroyed). The first then
// unwraps with a destroyed key: its answer is the token's, InvalidImportTokenException, as for any reuse of a spent
// token, not InvalidCiphertextException, which would tell the customer their key material is wrong. One version, the
// second's; the customer's material is what the key uses.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImportService } from '../../src/import/import-service.js';
import { KeyError } from '../../src/keys/errors.js';
import { expectProxyUses, wrapMaterial } from '../helpers/byok-customer.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('an import whose token another import spends while it unwraps', () => {
  let t: TestProxy;
  let control: EmulatorControl;
  let svc: ImportService;

  beforeAll(async () => {
    buildEmulator();
    const token = createTestToken('token-spent');
    control = emulatorControl(token);
    t = await startProxyOnToken({ token, config: { hsm: control.hsm() } });
    // Calls on libuv's pool, so that one held call does not hold the other import's.
    t.proxy.hsm.capabilities.callMode = 'async';
    svc = new ImportService(t.proxy.hsm, t.proxy.catalogue, t.proxy.lifecycle);
  }, 60_000);
  afterAll(async () => {
    await control?.set('');
    await t?.stop();
  });

  it.each(['RSA_AES_KEY_WRAP_SHA_256', 'RSAES_OAEP_SHA_1'] as const)('%s: answers InvalidImportTokenException; the other import is the version', async (algorithm) => {
    const id = `spent-${algorithm.toLowerCase()}`;
    await t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true }, origin: 'EXTERNAL' });
    const p = await svc.getParametersForImport({ KeyId: id, WrappingAlgorithm: algorithm, WrappingKeySpec: 'RSA_2048' });
    const material = randomBytes(32);
    const blob = wrapMaterial(algorithm, p.PublicKey, material);
    const input = { KeyId: id, ImportToken: p.ImportToken, EncryptedKeyMaterial: blob, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' as const };

    await control.set('hang C_UnwrapKey 1500 1\n');
    const held = svc.importKeyMaterial(input).then(
      (r) => r,
      (e: unknown) => e,
    );
    // The held import is inside its first C_UnwrapKey; this one's are not held.
    await sleep(300);
    const second = await svc.importKeyMaterial(input);
    expect(second).toMatchObject({ KeyId: id, KeyMaterialVersion: 1 });
    const first = await held;
    await control.set('');
    expect(first).toBeInstanceOf(KeyError);
    expect((first as KeyError).code, (first as KeyError).message).toBe('InvalidImportTokenException');
    expect((await t.proxy.lifecycle.get(id)).versions.size).toBe(1);
    await expectProxyUses(t.httpUrl, id, material);
  });
});
