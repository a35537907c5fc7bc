// Initialising a token through PKCS#11 (development and tests on SoftHSM): the PINs come from the caller's memory,
// never from a command line where `ps` would show them, as `softhsm2-util --init-token --pin` would.
import { toHsmError } from './errors.js';
import { findSlot, infoText, loadModule, P, type LibrarySpec } from './module.js';

export interface TokenInitOptions extends LibrarySpec {
  label: string;
  soPin: string;
  userPin: string;
}

/** Initialises the first uninitialised slot as `label`; does nothing when a token with that label exists. */
export function initToken(opts: TokenInitOptions): { created: boolean; serial: string } {
  const mod = loadModule(opts);
  try {
    try {
      const slot = findSlot(mod, { tokenLabel: opts.label });
      return { created: false, serial: infoText(mod.C_GetTokenInfo(slot).serialNumber) };
    } catch {
      // not there yet
    }
    const free = mod.C_GetSlotList(true).find((s) => (mod.C_GetTokenInfo(s).flags & P.CKF_TOKEN_INITIALIZED) === 0);
    if (!free) throw new Error('no uninitialised token slot is available');
    mod.C_InitToken(free, opts.soPin, opts.label.padEnd(32, ' '));
    // SoftHSM moves a freshly initialised token to a new slot id: find it again by label.
    const slot = findSlot(mod, { tokenLabel: opts.label });
    const session = mod.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
    mod.C_Login(session, P.CKU_SO, opts.soPin);
    mod.C_InitPIN(session, opts.userPin);
    mod.C_Logout(session);
    mod.C_CloseSession(session);
    return { created: true, serial: infoText(mod.C_GetTokenInfo(slot).serialNumber) };
  } catch (e) {
    throw e instanceof Error && /CKR_/.test(e.message) ? toHsmError(e) : e;
  } finally {
    mod.C_Finalize();
  }
}
