// The vendor profiles run: the proxy, with hsm/emulated-<vendor>.yaml, on a SoftHSM token behind our emulator
// imposing that vendor's documented behaviour (test/emulator/pkcs11-emulator.c). XKS round trips with each profile's IV
// mode, tampered ciphertexts named as such (never a device failure), rotation and state changes on a token where
// CKA_ID cannot change (CloudHSM), and CloudHSM's throttling answered as busy without re-initialising the library.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';

const versionOf = (a: { ciphertextMetadata: string }) => Buffer.from(a.ciphertextMetadata, 'base64').readUInt32BE(1);

// The emulator forwards to SoftHSM: it runs in the SoftHSM pass of the suite.
describe.skipIf(TOKEN_KIND !== 'softhsm').each(['cloudhsm', 'luna', 'nshield'] as const)('profile emulated-%s', (vendor) => {
  let t: TestProxy;
  let control: EmulatorControl;
  const setControl = (text: string) => control.set(text);

  beforeAll(async () => {
    buildEmulator();
    const token = createTestToken(`emu-${vendor}`);
    control = emulatorControl(token);
    t = await startProxyOnToken({
      token,
      config: { hsm: { profile: `emulated-${vendor}`, libraryParameters: control.hsm(vendor).libraryParameters } },
      keys: { foo: { encrypt: true, decrypt: true } },
    });
  }, 60_000);
  afterAll(async () => t?.stop());

  it('serves encrypt and decrypt with the IV the HSM made, and names a tampered tag InvalidCiphertextException', async () => {
    expect(t.proxy.hsm.info.libraryDescription).toContain('emulator');
    const xks = xksClient(t.httpUrl);
    const aad = randomBytes(24);
    const pt = randomBytes(100);
    const ivs = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const enc = await xks.encrypt('foo', pt, { additionalAuthenticatedData: aad.toString('base64') });
      expect(enc.status, enc.text).toBe(200);
      ivs.add(enc.json.initializationVector);
      expect(Buffer.from(enc.json.initializationVector, 'base64')).toHaveLength(12);
      const dec = await xks.decrypt('foo', decryptFields(enc.json, aad));
      expect(dec.status, dec.text).toBe(200);
      expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(pt);
    }
    expect(ivs.size).toBe(5);
    const enc = await xks.encrypt('foo', pt);
    const tag = Buffer.from(enc.json.authenticationTag, 'base64');
    tag[0]! ^= 1;
    const bad = await xks.decrypt('foo', { ...decryptFields(enc.json), authenticationTag: tag.toString('base64') });
    expect(bad.status, bad.text).toBe(400);
    expect(bad.json.errorName).toBe('InvalidCiphertextException');
    expect(t.logs.some((l) => l.includes('hsm.recover'))).toBe(false);
  });

  it('rotates, disables and enables keys without changing any CKA_ID; older ciphertexts decrypt', async () => {
    const xks = xksClient(t.httpUrl);
    const before = await xks.encrypt('foo', Buffer.from('before rotation'));
    expect(await t.proxy.lifecycle.rotate('foo')).toMatchObject({ Rotated: true, Version: 2 });
    await t.proxy.lifecycle.disable('foo');
    expect((await xks.metadata('foo')).json.keyStatus).toBe('DISABLED');
    await t.proxy.lifecycle.enable('foo');
    await t.proxy.catalogue.refresh('foo');
    const after = await xks.encrypt('foo', Buffer.from('after rotation'));
    expect(versionOf(after.json)).toBe(2);
    expect((await xks.decrypt('foo', decryptFields(before.json))).status).toBe(200);
    expect((await xks.decrypt('foo', decryptFields(after.json))).status).toBe(200);
  });

  it.runIf(vendor === 'cloudhsm')('CloudHSM refuses a CKA_ID change, as its documentation says', async () => {
    const key = await t.proxy.lifecycle.get('foo');
    await expect(t.proxy.hsm.setAttributes(key.current!.object, [{ type: 0x102, value: Buffer.from('xks:other') }])).rejects.toMatchObject({
      ckr: 'CKR_ATTRIBUTE_READ_ONLY',
    });
  });

  it.runIf(vendor === 'cloudhsm')('answers throttling as ThrottlingException without re-initialising, and serves again after', async () => {
    const xks = xksClient(t.httpUrl);
    await setControl('throttle\n');
    // The key is read again from the token (C_GetAttributeValue on each object): throttled, the device still answers.
    t.proxy.catalogue.invalidate('foo');
    await expect(t.proxy.lifecycle.get('foo')).rejects.toMatchObject({ code: 'Busy', ckr: 'CKR_DEVICE_ERROR' });
    t.proxy.catalogue.invalidate('foo');
    const m = await xks.metadata('foo');
    expect(m.status, m.text).toBe(429);
    expect(m.json.errorName).toBe('ThrottlingException');
    await setControl('');
    const enc = await xks.encrypt('foo', Buffer.from('after throttling'));
    expect(enc.status, enc.text).toBe(200);
    expect(t.logs.some((l) => l.includes('hsm.recover'))).toBe(false);
  });
});
