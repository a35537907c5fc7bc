// The PKCS#11 library under a test's proxy or HsmConnection, loaded again by the test itself. It is the same shared
// object in the same process (dlopen hands back the same instance; the proxy's control and call threads load it the
// same way), so it shares the library's process-wide state, which PKCS#11 keeps per application:
//   - C_Finalize through it finalises the library for the whole process: every handle the proxy holds is void and
//     every call answers CKR_CRYPTOKI_NOT_INITIALIZED (NSS: CKR_SESSION_HANDLE_INVALID) until the proxy initialises it
//     again;
//   - C_Logout on any session of the process logs out all of them, the proxy's login session included;
//   - C_CloseAllSessions(slot) closes every session of the process on that slot, the proxy's too (and with them the login).
// That is how a test breaks the token underneath a running proxy, with no hook in src/. The library is never
// initialised here: whoever opened the token did, and initialises it again when it recovers. Object handles are the
// application's, so a handle the proxy found names the same object here, and one made here is valid there.
import { findSlot, P, type Handle, type Pkcs11, type Template } from '../../src/hsm/module.js';

export interface TokenLibrary {
  /** This test's own pkcs11js on the library (for calls no method below makes). */
  readonly mod: Pkcs11;
  /** The token's slot, looked up now by its label. */
  slot(): Handle;
  /** C_Logout: every session of the process loses the user login. */
  logout(): void;
  /** C_Login as the user: every session of the process is logged in. */
  login(pin: string): void;
  /** C_CloseAllSessions on the token's slot: every session of the process, the login session included. */
  closeAllSessions(): void;
  /** C_Finalize: the library is finalised for the whole process. */
  finalize(): void;
  /** A read/write session of this test's own on the token; the caller closes it (mod.C_CloseSession). */
  openSession(): Handle;
  /** `fn` on a read/write session of this test's own, closed afterwards. */
  withSession<T>(fn: (session: Handle) => T): T;
  /** A token object made on a session of this test's own (the login is the process's, so private objects work). */
  createObject(template: Template): Handle;
}

const loaded = new Map<string, Pkcs11>();

/**
 * The library at `modulePath` (what the proxy loaded: the token's module, or the emulator in front of it), on the token
 * labelled `label`. Loaded once per process and path.
 */
export function tokenLibrary(token: { label: string; modulePath: string }, modulePath: string = token.modulePath): TokenLibrary {
  let mod = loaded.get(modulePath);
  if (!mod) {
    mod = new P.PKCS11();
    mod.load(modulePath); // dlopen + C_GetFunctionList only: no C_Initialize
    loaded.set(modulePath, mod);
  }
  const m = mod;
  const slot = () => findSlot(m, { tokenLabel: token.label });
  const openSession = () => m.C_OpenSession(slot(), P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
  const withSession = <T>(fn: (session: Handle) => T): T => {
    const s = openSession();
    try {
      return fn(s);
    } finally {
      // Closing a session other than the process's last one leaves the login as it is.
      try {
        m.C_CloseSession(s);
      } catch {
        // already closed (a C_CloseAllSessions in `fn`)
      }
    }
  };
  return {
    mod: m,
    slot,
    logout: () => withSession((s) => m.C_Logout(s)),
    login: (pin) => withSession((s) => m.C_Login(s, P.CKU_USER, pin)),
    closeAllSessions: () => m.C_CloseAllSessions(slot()),
    finalize: () => m.C_Finalize(),
    openSession,
    withSession,
    createObject: (template) => withSession((s) => m.C_CreateObject(s, template)),
  };
}
