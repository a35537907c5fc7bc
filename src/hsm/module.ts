// Loading and initialising the PKCS#11 library. pkcs11js is imported only under src/hsm.
import pkcs11js from 'pkcs11js';

// Under native ES modules only the default import carries the constants.
export const P = pkcs11js;
export type Pkcs11 = pkcs11js.PKCS11;
export type Handle = pkcs11js.Handle;
export type Template = pkcs11js.Template;
export type Mechanism = pkcs11js.Mechanism;

/** CKF_OS_LOCKING_OK: without it SoftHSM turns its locking off and concurrent calls crash the process. */
export const CKF_OS_LOCKING_OK = 2;

/** Which PKCS#11 library to load, and the parameters its C_Initialize needs (NSS softoken cannot start without them). */
export interface LibrarySpec {
  modulePath: string;
  /**
   * Passed to every C_Initialize (first start, re-initialisation, ceremonies, token init) in pReserved, as NSS reads
   * them (pkcs11js's `libraryParameters`). Most libraries take none.
   */
  libraryParameters?: string | undefined;
}

/** The C_Initialize arguments for a library; the same for the first initialisation and every re-initialisation. */
export function initializeArgs(spec: LibrarySpec): pkcs11js.InitializationOptions {
  if (!spec.libraryParameters) return { flags: CKF_OS_LOCKING_OK };
  // pkcs11js 2.1.7 copies the string into a buffer one byte short and drops its last character
  // (src/pkcs11.cpp, C_Initialize: napi_get_value_string_utf8 into `new CK_CHAR[length]`): a trailing space absorbs it.
  return { flags: CKF_OS_LOCKING_OK, libraryParameters: `${spec.libraryParameters} ` };
}

export function loadModule(spec: LibrarySpec): Pkcs11 {
  const mod = new pkcs11js.PKCS11();
  mod.load(spec.modulePath);
  mod.C_Initialize(initializeArgs(spec));
  return mod;
}

/** A fixed-width PKCS#11 info string without its padding: spaces, and NUL bytes on some tokens (tpm2-pkcs11). */
export function infoText(s: string): string {
  return s.replace(/^[\s\0]+|[\s\0]+$/g, '');
}

export interface SlotChoice {
  tokenLabel?: string | undefined;
  tokenSerial?: string | undefined;
}

/** The slot whose token matches by label or serial; never "the first slot" (SoftHSM always lists an empty extra one). */
export function findSlot(mod: Pkcs11, choice: SlotChoice): Handle {
  return pickSlot(
    mod.C_GetSlotList(true).map((slot) => ({ slot, info: mod.C_GetTokenInfo(slot) })),
    choice,
  );
}

/** Of the slots listed with their token info, the one whose token matches `choice`. */
export function pickSlot(slots: { slot: Handle; info: pkcs11js.TokenInfo }[], choice: SlotChoice): Handle {
  const seen: string[] = [];
  for (const { slot, info } of slots) {
    const label = infoText(info.label);
    const serial = infoText(info.serialNumber);
    seen.push(`"${label}" (serial ${serial})`);
    if (choice.tokenSerial !== undefined && serial !== choice.tokenSerial) continue;
    if (choice.tokenLabel !== undefined && label !== choice.tokenLabel) continue;
    if ((info.flags & P.CKF_TOKEN_INITIALIZED) === 0) continue;
    return slot;
  }
  const wanted = choice.tokenSerial ? `serial ${choice.tokenSerial}` : `label "${choice.tokenLabel}"`;
  throw new Error(`no token with ${wanted}; tokens present: ${seen.length ? seen.join(', ') : 'none'}`);
}

/** Attribute template entries read back as booleans. */
export function readBool(value: Buffer | undefined): boolean {
  return value !== undefined && value.length > 0 && value[0] !== 0;
}
