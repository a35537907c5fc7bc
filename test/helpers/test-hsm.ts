// An HsmConnection on a test token with its kind's profile, and AES keys whose value the test knows (so that the
// HSM's output can be checked against node:crypto). Test-only: keys the proxy makes are never extractable.
import { randomBytes } from 'node:crypto';
import { HsmConnection, type Handle, type HsmOptions } from '../../src/hsm/hsm-connection.js';
import { P, type Template } from '../../src/hsm/module.js';
import { loadProfile } from '../../src/hsm/profile.js';
import type { TestToken } from './test-token.js';
import { tokenLibrary, type TokenLibrary } from './token-library.js';

/** The library and token each connection opened here was opened on. */
const opened = new WeakMap<HsmConnection, { label: string; modulePath: string }>();

export async function openTestHsm(token: TestToken, options: Partial<HsmOptions> = {}): Promise<HsmConnection> {
  const opts: HsmOptions = {
    ...token.library,
    profile: loadProfile(token.profile),
    tokenLabel: token.label,
    pin: token.userPin,
    poolSize: 4,
    acquireTimeoutMs: 1_000,
    operationTimeoutMs: 5_000,
    ...options,
  };
  const hsm = await HsmConnection.open(opts);
  opened.set(hsm, { label: opts.tokenLabel ?? token.label, modulePath: opts.modulePath });
  return hsm;
}

/**
 * The PKCS#11 library under a connection opened by openTestHsm, loaded by the test itself (test/helpers/token-library.ts):
 * what a test does through it (a C_Finalize, a C_Logout, a key made with a known value) happens to the connection too.
 */
export function libraryOf(hsm: HsmConnection): TokenLibrary {
  const at = opened.get(hsm);
  if (!at) throw new Error('libraryOf: the connection was not opened by openTestHsm');
  return tokenLibrary(at, at.modulePath);
}

/**
 * An AES key with a known value, readable and extractable: a token object (it outlives a re-initialisation of the
 * library), found again through the connection so that its handle is one the connection handed out (it refuses others).
 */
export async function createKnownAesKey(
  hsm: HsmConnection,
  value: Buffer,
  opts: { encrypt?: boolean; decrypt?: boolean; label?: string } = {},
): Promise<Handle> {
  return createTokenObject(hsm, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_VALUE, value },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: false },
    { type: P.CKA_EXTRACTABLE, value: true },
    { type: P.CKA_ENCRYPT, value: opts.encrypt ?? true },
    { type: P.CKA_DECRYPT, value: opts.decrypt ?? true },
    { type: P.CKA_LABEL, value: opts.label ?? 'known-test-key' },
  ]);
}

/**
 * A token object made from a raw template (test-only values such as a known CKA_VALUE), with a random CKA_ID, found again
 * through the connection: the connection uses only handles it handed out itself.
 */
export async function createTokenObject(hsm: HsmConnection, template: Template): Promise<Handle> {
  const id = randomBytes(8);
  libraryOf(hsm).createObject([...template.filter((a) => a.type !== P.CKA_TOKEN && a.type !== P.CKA_ID), { type: P.CKA_TOKEN, value: true }, { type: P.CKA_ID, value: id }]);
  const [handle] = await hsm.findObjects({ id });
  if (!handle) throw new Error('the test object was not found after it was made');
  return handle;
}
