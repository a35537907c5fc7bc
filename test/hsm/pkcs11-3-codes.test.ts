// A PKCS#11 3.x token answers a failed GCM tag check with CKR_AEAD_DECRYPT_FAILED (0x35), a code pkcs11js's 2.40
// headers lack and call CKR_VENDOR_DEFINED. To KMS it is a tampered ciphertext (400 InvalidCiphertextException), not
// an internal error, and the connection goes on serving: nothing is re-initialised. Our PKCS#11 emulator (test/emulator)
// answers the code in front of a SoftHSM token, in each way the proxy can make the call.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('a PKCS#11 3.x failed tag check (CKR_AEAD_DECRYPT_FAILED)', () => {
  let t: TestProxy;
  let control: EmulatorControl;

  beforeAll(async () => {
    buildEmulator();
    const token = createTestToken('pkcs11-3-codes');
    control = emulatorControl(token);
    t = await startProxyOnToken({ token, config: { hsm: control.hsm() }, keys: { foo: { encrypt: true, decrypt: true } } });
  }, 60_000);
  afterAll(async () => {
    await control?.set('');
    await t?.stop();
  });

  it.each(['sync', 'async', 'thread'] as const)('is InvalidCiphertextException, and the next decrypt works (%s calls)', async (mode) => {
    t.proxy.hsm.capabilities.callMode = mode;
    const xks = xksClient(t.httpUrl);
    const enc = await xks.encrypt('foo', Buffer.from('secret'));
    expect(enc.status, enc.text).toBe(200);
    await control.set('fail C_Decrypt 0x35 1\n');
    const refused = await xks.decrypt('foo', decryptFields(enc.json));
    expect(refused.status, refused.text).toBe(400);
    expect(refused.json.errorName).toBe('InvalidCiphertextException');
    await control.set('');
    const dec = await xks.decrypt('foo', decryptFields(enc.json));
    expect(dec.status, dec.text).toBe(200);
    expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe('secret');
  });
});
