// A key handle carries the library generation it came from. After a re-initialisation (C_Finalize + C_Initialize) the
// library numbers its objects afresh, so an old number can name another key: a handle held across one must be
// refused (and re-resolved by its caller), never used, or a ciphertext is made under a key other than the one asked for.
import { createDecipheriv, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HsmError } from '../../src/hsm/errors.js';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { P } from '../../src/hsm/module.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createKnownAesKey, libraryOf, openTestHsm } from '../helpers/test-hsm.js';
import { createTestToken, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';

describe('one connection', () => {
  let token: TestToken;
  let hsm: HsmConnection;
  const FOO = randomBytes(32);
  const BAR = randomBytes(32);

  beforeAll(async () => {
    token = createTestToken('stale-handles');
    hsm = await openTestHsm(token, { acquireTimeoutMs: 5_000 });
  });
  afterAll(() => {
    hsm?.close();
    token?.cleanup();
  });

  const openWith = (value: Buffer, iv: Buffer, ct: Buffer, tag: Buffer) => {
    const d = createDecipheriv('aes-256-gcm', value, iv);
    d.setAuthTag(tag);
    return Buffer.concat([d.update(ct), d.final()]);
  };

  it.each(['sync', 'async', 'thread'] as const)('refuses a handle from before a re-initialisation (%s calls), and the key found again works', async (mode) => {
    hsm.capabilities.callMode = mode;
    const foo = await createKnownAesKey(hsm, FOO, { label: `foo-${mode}` });
    await createKnownAesKey(hsm, BAR, { label: `bar-${mode}` });
    const before = await hsm.encryptGcm(foo, Buffer.from('before'), Buffer.alloc(0));
    expect(openWith(FOO, before.iv, before.ciphertext, before.tag).toString()).toBe('before');

    // The library is finalised underneath the connection; the next call re-initialises it. Finding bar first gives it
    // one of the first numbers of the new library, which is what foo's handle was (SoftHSM counts from 1 again).
    libraryOf(hsm).finalize();
    const [bar] = await hsm.findObjects({ label: `bar-${mode}` });
    expect(bar).toBeDefined();

    const stale = await hsm.encryptGcm(foo, Buffer.from('after'), Buffer.alloc(0)).then(
      (out) => out,
      (e: unknown) => e,
    );
    expect(stale, 'the stale handle never reaches the library').toBeInstanceOf(HsmError);
    expect((stale as HsmError).code).toBe('ObjectHandleInvalid');
    expect((stale as HsmError).ckr).toBeUndefined();
    for (const call of [() => hsm.sign({ mechanism: 0x251 }, foo, Buffer.from('x')), () => hsm.describeObject(foo), () => hsm.destroyObject(foo)]) {
      await expect(call()).rejects.toMatchObject({ code: 'ObjectHandleInvalid' });
    }

    const [again] = await hsm.findObjects({ label: `foo-${mode}` });
    const after = await hsm.encryptGcm(again!, Buffer.from('after'), Buffer.alloc(0));
    expect(openWith(FOO, after.iv, after.ciphertext, after.tag).toString()).toBe('after');
  });

  it('refuses a handle this connection did not hand out', async () => {
    // A key made behind the connection's back, a session object on a session of the test's own (open until the end):
    // a valid number in this process, but not one the connection handed out.
    const { mod, openSession } = libraryOf(hsm);
    const session = openSession();
    try {
      const raw = mod.C_CreateObject(session, [
        { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
        { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
        { type: P.CKA_VALUE, value: FOO },
        { type: P.CKA_ENCRYPT, value: true },
      ]);
      await expect(hsm.encryptGcm(raw, Buffer.from('x'), Buffer.alloc(0))).rejects.toMatchObject({ code: 'ObjectHandleInvalid', ckr: undefined });
    } finally {
      mod.C_CloseSession(session);
    }
  });
});

// Recoveries forced the way a real device fails: through our emulator's control file (test/emulator), each round failing
// one C_Encrypt with CKR_DEVICE_ERROR and the probe after it, so the proxy re-initialises the library while other
// requests hold handles. The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('a server under load while the library is re-initialised again and again', () => {
  let t: TestProxy;
  let control: EmulatorControl;
  beforeAll(async () => {
    buildEmulator();
    const token = createTestToken('reinit-load');
    control = emulatorControl(token);
    t = await startProxyOnToken({
      token,
      config: { hsm: control.hsm() },
      keys: { foo: { encrypt: true, decrypt: true }, bar: { encrypt: true, decrypt: true } },
    });
  }, 60_000);
  afterAll(async () => {
    await control?.set('');
    await t?.stop();
  });

  it('makes every ciphertext under the key asked for', { timeout: 60_000 }, async () => {
    const xks = xksClient(t.httpUrl);
    const made: { key: string; enc: unknown; pt: Buffer }[] = [];
    const statuses = new Map<number, number>();
    const generation = t.proxy.hsm.generation;
    let stop = false;
    const breaker = (async () => {
      for (let i = 0; i < 15; i++) {
        await sleep(60);
        await control.set(`# round ${i}\nfail C_Encrypt CKR_DEVICE_ERROR 1\nfail C_GetTokenInfo CKR_DEVICE_ERROR 1\n`);
      }
      await sleep(60);
      await control.set('');
      stop = true;
    })();
    const client = async (key: string) => {
      while (!stop) {
        const pt = randomBytes(32);
        const r = await xks.encrypt(key, pt);
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (r.status === 200) made.push({ key, enc: r.json, pt });
        else expect(r.json?.errorName, r.text).toMatch(/^(ThrottlingException|DependencyTimeoutException)$/);
      }
    };
    await Promise.all([breaker, ...['foo', 'bar', 'foo', 'bar', 'foo', 'bar'].map(client)]);
    expect(t.proxy.hsm.generation - generation, 'the library was re-initialised under load').toBeGreaterThanOrEqual(5);
    expect(made.length).toBeGreaterThan(20);
    // The last fault may have left a recovery backing off (calls answer 503 until its retry): KMS retries a 503, and
    // so does this, until the HSM answers again (bounded), before every ciphertext must decrypt.
    for (let waited = 0; (await xks.encrypt('foo', Buffer.from('up?'))).status !== 200; waited += 50) {
      expect(waited, 'the proxy serves again within 5 s of the last fault').toBeLessThan(5000);
      await sleep(50);
    }
    for (const m of made) {
      const dec = await xks.decrypt(m.key, decryptFields(m.enc));
      expect(dec.status, `a ciphertext made for ${m.key} decrypts under ${m.key}: ${dec.text}`).toBe(200);
      expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(m.pt);
    }
    // Only named answers: no 500 from a handle of another generation.
    expect(statuses.get(500) ?? 0, JSON.stringify([...statuses])).toBe(0);
  });
});
