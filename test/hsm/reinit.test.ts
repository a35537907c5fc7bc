// A device-level failure (here: the library finalised underneath the running server, so every call answers
// CKR_CRYPTOKI_NOT_INITIALIZED) is recovered by re-initialising the library, without a restart.
import { randomBytes } from 'node:crypto';
import { beforeAll, expect, it } from 'vitest';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';
import { TOKEN_FACTS } from '../helpers/test-token.js';
import { tokenLibrary, type TokenLibrary } from '../helpers/token-library.js';

const t = useProxyOnToken({ keys: { foo: { encrypt: true, decrypt: true } } });
/** The library under the proxy, loaded by this test: a C_Finalize or C_Logout through it is the proxy's too. */
let lib: TokenLibrary;
beforeAll(() => {
  lib = tokenLibrary(t.token);
});

it.each(['sync', 'async', 'thread'] as const)('re-initialises the PKCS#11 library and serves again (%s calls)', async (mode) => {
  t.proxy.hsm.capabilities.callMode = mode;
  const xks = xksClient(t.httpUrl);
  const before = await xks.encrypt('foo', Buffer.from('made before the failure'));
  expect(before.status).toBe(200);
  const generation = t.proxy.hsm.generation;

  lib.finalize();

  const pt = randomBytes(48);
  const enc = await xks.encrypt('foo', pt);
  expect(enc.status, enc.text).toBe(200);
  expect(t.proxy.hsm.generation).toBeGreaterThan(generation);
  const dec = await xks.decrypt('foo', decryptFields(enc.json));
  expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(pt);
  // A ciphertext from before the failure still decrypts: the key is the same token object.
  const old = await xks.decrypt('foo', decryptFields(before.json));
  expect(Buffer.from(old.json.plaintext, 'base64').toString()).toBe('made before the failure');
  expect((await xks.health()).json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
  // SoftHSM answers a finalised library with CKR_CRYPTOKI_NOT_INITIALIZED (a device error); NSS with
  // CKR_SESSION_HANDLE_INVALID, which recovers through a failed re-login and then the re-initialisation.
  expect(t.logs.some((l) => l.includes('hsm.recover') && (l.includes('DeviceError') || !TOKEN_FACTS.softhsm))).toBe(true);
});

// Counts sessions by probing handles 1..511, which only SoftHSM hands out (NSS's carry the slot in the top byte, so the
// count would be 0 and prove nothing).
it.skipIf(!TOKEN_FACTS.softhsm)('leaks no sessions across repeated lost logins', async () => {
  t.proxy.hsm.capabilities.callMode = 'async';
  const xks = xksClient(t.httpUrl);
  const { mod } = lib;
  // SoftHSM does not report ulSessionCount, but its session handles are small integers: count the valid ones.
  const sessions = () => {
    let open = 0;
    for (let h = 1; h < 512; h++) {
      const handle = Buffer.alloc(8);
      handle.writeUInt32LE(h, 0);
      try {
        mod.C_GetSessionInfo(handle);
        open++;
      } catch {
        // not a session
      }
    }
    return open;
  };
  // Warm the pool with concurrent work so that several sessions are open.
  await Promise.all(Array.from({ length: 20 }, () => xks.encrypt('foo', randomBytes(16))));
  for (let i = 0; i < 5; i++) {
    lib.logout(); // on a session of the test's own, closed again: it is not counted below
    const results = await Promise.all(Array.from({ length: 20 }, () => xks.encrypt('foo', randomBytes(16))));
    expect(results.every((r) => r.status === 200)).toBe(true);
  }
  // The pool (8) plus the login session, whatever happened before.
  expect(sessions()).toBeLessThanOrEqual(9);
});
