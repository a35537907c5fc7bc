// An HsmConnection on a test token with its kind's profile, and AES keys whose value the test knows (so that the
// HSM's output can be checked against node:crypto). Test-only: keys the proxy makes are never extractable.
import { HsmConnection, type Handle, type HsmOptions } from '../../src/hsm/hsm-connection.js';
import { P } from '../../src/hsm/module.js';
import { loadProfile } from '../../src/hsm/profile.js';
import type { TestToken } from './test-token.js';

export function openTestHsm(token: TestToken, options: Partial<HsmOptions> = {}): Promise<HsmConnection> {
  return HsmConnection.open({
    ...token.library,
    profile: loadProfile(token.profile),
    tokenLabel: token.label,
    pin: token.userPin,
    poolSize: 4,
    acquireTimeoutMs: 1_000,
    operationTimeoutMs: 5_000,
    ...options,
  });
}

/**
 * An AES key with a known value, readable and extractable, made on the login session. A session object unless
 * `token` (a token object outlives a re-initialisation of the library).
 */
export function createKnownAesKey(
  hsm: HsmConnection,
  value: Buffer,
  opts: { encrypt?: boolean; decrypt?: boolean; token?: boolean; label?: string } = {},
): Handle {
  const { mod, loginSession } = hsm.moduleForTests;
  return mod.C_CreateObject(loginSession, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_VALUE, value },
    { type: P.CKA_TOKEN, value: opts.token ?? false },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: false },
    { type: P.CKA_EXTRACTABLE, value: true },
    { type: P.CKA_ENCRYPT, value: opts.encrypt ?? true },
    { type: P.CKA_DECRYPT, value: opts.decrypt ?? true },
    { type: P.CKA_LABEL, value: opts.label ?? 'known-test-key' },
  ]);
}
