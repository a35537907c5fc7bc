// hsm/errors.ts on its own (no token): every PKCS#11 failure becomes a named HsmError, and what each name means to the
// session pool (poisonsSession), to a caller that must answer now (availabilityOf) and to recovery (needsRecovery).
// The errors are made as pkcs11js makes them (Pkcs11Error "CKR_NAME:code", NativeError without a CKR) and as the
// control and call threads hand them back (the message's first line and the numeric code).
import pkcs11js from 'pkcs11js';
import { describe, expect, it } from 'vitest';
import {
  availabilityOf,
  ckrMeanings,
  ckrName,
  HsmError,
  needsRecovery,
  poisonsSession,
  STANDARD_MEANINGS,
  toHsmError,
  type HsmErrorCode,
} from '../../src/hsm/errors.js';
import { loadProfile } from '../../src/hsm/profile.js';

/** A CKR's value as pkcs11js exports it; undefined for codes its (PKCS#11 2.40) headers lack. */
const codeOf = (name: string): number | undefined => (pkcs11js as unknown as Record<string, number | undefined>)[name];

/** What pkcs11js throws when a call returns `rv` (its native layer's "NAME:code", parsed by Pkcs11Error). */
function pkcs11Error(name: string): Error {
  const code = codeOf(name);
  if (code === undefined) throw new Error(`pkcs11js has no ${name}`);
  return new pkcs11js.Pkcs11Error(`${name}:${code}`);
}

/** What the control or call thread hands back: a plain Error with the message's first line and the numeric code. */
function threadError(message: string, code?: number): Error {
  return Object.assign(new Error(message), { code });
}

const SOFTHSM = ckrMeanings(loadProfile('softhsm2'));
const NSHIELD = ckrMeanings(loadProfile('nshield'));
const NSS = ckrMeanings(loadProfile('nss'));
const CLOUDHSM = ckrMeanings(loadProfile('cloudhsm'));

describe('ckrName', () => {
  it('reads the name pkcs11js puts in the message', () => {
    const e = pkcs11Error('CKR_DEVICE_ERROR');
    expect(e.message).toBe('CKR_DEVICE_ERROR');
    expect(ckrName(e)).toBe('CKR_DEVICE_ERROR');
  });

  it('finds the name anywhere in a longer message, the first one if several', () => {
    expect(ckrName(new Error('C_CreateObject failed: CKR_TEMPLATE_INCOMPLETE:208 (see log)'))).toBe('CKR_TEMPLATE_INCOMPLETE');
    expect(ckrName(new Error('CKR_PIN_INCORRECT then CKR_PIN_LOCKED'))).toBe('CKR_PIN_INCORRECT');
    expect(ckrName(new Error('CKR_VENDOR_DEFINED'))).toBe('CKR_VENDOR_DEFINED');
  });

  it('falls back on a numeric code when the message names none', () => {
    expect(ckrName(threadError('failed', 0x30))).toBe('CKR_DEVICE_ERROR');
    expect(ckrName(threadError('failed', 0xb3))).toBe('CKR_SESSION_HANDLE_INVALID');
    expect(ckrName(threadError('failed', 0x101))).toBe('CKR_USER_NOT_LOGGED_IN');
    expect(ckrName(threadError('failed', 0x5))).toBe('CKR_GENERAL_ERROR');
    // The message wins over the code.
    expect(ckrName(threadError('CKR_PIN_LOCKED', 0x30))).toBe('CKR_PIN_LOCKED');
  });

  it('has no name for a code no CKR has, a code that is not a number, or code 0 (CKR_OK, never a failure)', () => {
    expect(ckrName(threadError('failed', 0x7fff_0000))).toBeUndefined();
    expect(ckrName(threadError('failed', undefined))).toBeUndefined();
    expect(ckrName(Object.assign(new Error('failed'), { code: '48' }))).toBeUndefined();
    expect(ckrName(Object.assign(new Error('failed'), { code: 'ENOENT' }))).toBeUndefined();
    // pkcs11js's own errors without a CKR carry code 0: "PKCS11 module not loaded yet", bad arguments.
    const native = new pkcs11js.NativeError('PKCS11 module not loaded yet');
    expect((native as unknown as { code: unknown }).code).toBe(0);
    expect(ckrName(native)).toBeUndefined();
    expect(ckrName(threadError('not a PKCS#11 call: C_Nope', 0))).toBeUndefined();
  });

  it('names by its number a code pkcs11js calls CKR_VENDOR_DEFINED: a PKCS#11 3.x code, or a vendor\'s own', () => {
    // What pkcs11js throws for a code its 2.40 headers lack, natively and from a call or control thread.
    const native = (code: number) => new pkcs11js.Pkcs11Error(`CKR_VENDOR_DEFINED:${code}`);
    expect(native(0x35).message).toBe('CKR_VENDOR_DEFINED');
    for (const e of [native(0x35), threadError('CKR_VENDOR_DEFINED', 0x35), threadError('failed', 0x35)]) {
      expect(ckrName(e)).toBe('CKR_AEAD_DECRYPT_FAILED');
    }
    expect(ckrName(native(0x1b))).toBe('CKR_ACTION_PROHIBITED');
    expect(ckrName(native(0x201))).toBe('CKR_TOKEN_RESOURCE_EXCEEDED');
    expect(ckrName(native(0x202))).toBe('CKR_OPERATION_CANCEL_FAILED');
    expect(ckrName(native(0x203))).toBe('CKR_KEY_EXHAUSTED');
    expect(ckrName(native(0x8000_0123))).toBe('CKR_VENDOR_DEFINED+0x123');
    expect(ckrName(threadError('failed', 0x8000_0000))).toBe('CKR_VENDOR_DEFINED+0x0');
    // A code in no table below the vendor range keeps the name pkcs11js gave; without a code, so does the message.
    expect(ckrName(native(0x7fff_0000))).toBe('CKR_VENDOR_DEFINED');
    expect(ckrName(new Error('CKR_VENDOR_DEFINED'))).toBe('CKR_VENDOR_DEFINED');
  });

  it('only reads Errors', () => {
    expect(ckrName('CKR_DEVICE_ERROR')).toBeUndefined();
    expect(ckrName({ message: 'CKR_DEVICE_ERROR', code: 0x30 })).toBeUndefined();
    expect(ckrName(undefined)).toBeUndefined();
    expect(ckrName(null)).toBeUndefined();
    expect(ckrName(0x30)).toBeUndefined();
  });

  it('is not fooled by lower case or a name cut short', () => {
    expect(ckrName(new Error('ckr_device_error'))).toBeUndefined();
    expect(ckrName(new Error('CKR_'))).toBeUndefined();
  });
});

describe('toHsmError', () => {
  // The standard's meanings, by name: the whole table, spelled out independently of the source.
  const STANDARD: [string, HsmErrorCode][] = [
    ['CKR_KEY_FUNCTION_NOT_PERMITTED', 'KeyFunctionNotPermitted'],
    ['CKR_KEY_TYPE_INCONSISTENT', 'KeyFunctionNotPermitted'],
    ['CKR_ENCRYPTED_DATA_INVALID', 'DataInvalid'],
    ['CKR_ENCRYPTED_DATA_LEN_RANGE', 'DataInvalid'],
    ['CKR_DATA_INVALID', 'DataInvalid'],
    ['CKR_DATA_LEN_RANGE', 'DataInvalid'],
    ['CKR_AEAD_DECRYPT_FAILED', 'DataInvalid'],
    ['CKR_SIGNATURE_INVALID', 'DataInvalid'],
    ['CKR_OBJECT_HANDLE_INVALID', 'ObjectHandleInvalid'],
    ['CKR_KEY_HANDLE_INVALID', 'ObjectHandleInvalid'],
    ['CKR_SESSION_HANDLE_INVALID', 'SessionInvalid'],
    ['CKR_SESSION_CLOSED', 'SessionInvalid'],
    ['CKR_USER_NOT_LOGGED_IN', 'NotLoggedIn'],
    ['CKR_DEVICE_ERROR', 'DeviceError'],
    ['CKR_DEVICE_REMOVED', 'DeviceError'],
    ['CKR_DEVICE_MEMORY', 'DeviceError'],
    ['CKR_TOKEN_NOT_PRESENT', 'DeviceError'],
    ['CKR_SLOT_ID_INVALID', 'DeviceError'],
    ['CKR_TOKEN_NOT_RECOGNIZED', 'DeviceError'],
    ['CKR_CRYPTOKI_NOT_INITIALIZED', 'DeviceError'],
    ['CKR_FUNCTION_FAILED', 'DeviceError'],
    ['CKR_GENERAL_ERROR', 'DeviceError'],
    ['CKR_PIN_INCORRECT', 'PinIncorrect'],
    ['CKR_PIN_LEN_RANGE', 'PinIncorrect'],
    ['CKR_PIN_LOCKED', 'PinLocked'],
    ['CKR_MECHANISM_INVALID', 'MechanismUnsupported'],
    ['CKR_MECHANISM_PARAM_INVALID', 'MechanismUnsupported'],
    ['CKR_OPERATION_ACTIVE', 'OperationActive'],
    ['CKR_BUFFER_TOO_SMALL', 'BufferTooSmall'],
    ['CKR_ARGUMENTS_BAD', 'ArgumentsBad'],
    ['CKR_ATTRIBUTE_READ_ONLY', 'AttributeReadOnly'],
    ['CKR_ATTRIBUTE_TYPE_INVALID', 'TemplateRefused'],
    ['CKR_ATTRIBUTE_VALUE_INVALID', 'TemplateRefused'],
    ['CKR_TEMPLATE_INCOMPLETE', 'TemplateRefused'],
    ['CKR_TEMPLATE_INCONSISTENT', 'TemplateRefused'],
    ['CKR_KEY_SIZE_RANGE', 'TemplateRefused'],
  ];

  // CKR_AEAD_DECRYPT_FAILED (PKCS#11 3.0) is not in pkcs11js 2.1.7's headers: it names that code CKR_VENDOR_DEFINED,
  // so only an error whose message spells the name (not one from pkcs11js itself) is read as it.
  const KNOWN_TO_PKCS11JS = STANDARD.filter(([name]) => codeOf(name) !== undefined);

  it.each(STANDARD)('%s is %s, with the CKR in its message and ckr', (name, kind) => {
    for (const e of codeOf(name) === undefined ? [threadError(name)] : [pkcs11Error(name), threadError(name, codeOf(name))]) {
      const h = toHsmError(e);
      expect(h).toBeInstanceOf(HsmError);
      expect(h.code).toBe(kind);
      expect(h.ckr).toBe(name);
      expect(h.message).toBe(`PKCS#11 call failed: ${name}`);
    }
  });

  it.each(KNOWN_TO_PKCS11JS)('%s by its numeric code alone is %s too', (name, kind) => {
    const h = toHsmError(threadError('PKCS#11 call failed', codeOf(name)));
    expect(h.code).toBe(kind);
    expect(h.ckr).toBe(name);
  });

  it('a CKR the proxy gives no meaning is Unknown, and still named', () => {
    for (const name of ['CKR_RANDOM_NO_RNG', 'CKR_USER_ALREADY_LOGGED_IN', 'CKR_ATTRIBUTE_SENSITIVE', 'CKR_CANCEL', 'CKR_FUNCTION_NOT_SUPPORTED']) {
      const h = toHsmError(pkcs11Error(name));
      expect(h.code, name).toBe('Unknown');
      expect(h.ckr).toBe(name);
      expect(h.message).toBe(`PKCS#11 call failed: ${name}`);
    }
    const vendor = toHsmError(new pkcs11js.Pkcs11Error('CKR_VENDOR_DEFINED:2147483939'));
    expect(vendor).toMatchObject({ code: 'Unknown', ckr: 'CKR_VENDOR_DEFINED+0x123', message: 'PKCS#11 call failed: CKR_VENDOR_DEFINED+0x123' });
  });

  it('a 3.x token\'s failed tag (CKR_AEAD_DECRYPT_FAILED, which pkcs11js calls CKR_VENDOR_DEFINED) is DataInvalid', () => {
    for (const meanings of [STANDARD_MEANINGS, SOFTHSM, NSHIELD, NSS, CLOUDHSM]) {
      expect(toHsmError(new pkcs11js.Pkcs11Error('CKR_VENDOR_DEFINED:53'), 'decrypt', meanings)).toMatchObject({ code: 'DataInvalid', ckr: 'CKR_AEAD_DECRYPT_FAILED' });
    }
  });

  it('a vendor\'s own code in a profile\'s badTag or busy list is read as the profile says', () => {
    const meanings = ckrMeanings({ errors: { badTag: ['CKR_VENDOR_DEFINED+0x121'], busy: ['CKR_VENDOR_DEFINED+0x2a'] } });
    expect(toHsmError(new pkcs11js.Pkcs11Error(`CKR_VENDOR_DEFINED:${0x8000_0121}`), 'decrypt', meanings).code).toBe('DataInvalid');
    expect(toHsmError(new pkcs11js.Pkcs11Error(`CKR_VENDOR_DEFINED:${0x8000_0122}`), 'decrypt', meanings).code).toBe('Unknown');
    expect(meanings.busy.has(ckrName(new pkcs11js.Pkcs11Error(`CKR_VENDOR_DEFINED:${0x8000_002a}`))!)).toBe(true);
  });

  it('anything without a CKR is Unknown, with no ckr', () => {
    for (const e of [new Error('boom'), new TypeError('Parameter 1 must be a Buffer'), new pkcs11js.NativeError('PKCS11 module not loaded yet'), 'CKR_DEVICE_ERROR', undefined, null, { code: 0x30 }, threadError('x', 0x7fff_0001)]) {
      const h = toHsmError(e);
      expect(h.code).toBe('Unknown');
      expect(h.ckr).toBeUndefined();
      expect(h.message).toBe('PKCS#11 call failed');
    }
  });

  it('an HsmError passes through untouched, whatever the context', () => {
    const original = new HsmError('Timeout', 'the HSM did not answer', 'CKR_GENERAL_ERROR');
    expect(toHsmError(original)).toBe(original);
    expect(toHsmError(original, 'decrypt', SOFTHSM)).toBe(original);
  });

  describe("a profile's bad-tag codes", () => {
    it('are DataInvalid only on a decrypt (SoftHSM 2.6: CKR_GENERAL_ERROR)', () => {
      const onDecrypt = toHsmError(pkcs11Error('CKR_GENERAL_ERROR'), 'decrypt', SOFTHSM);
      expect(onDecrypt).toMatchObject({ code: 'DataInvalid', ckr: 'CKR_GENERAL_ERROR', message: 'the ciphertext did not authenticate' });
      expect(toHsmError(pkcs11Error('CKR_GENERAL_ERROR'), 'other', SOFTHSM).code, 'elsewhere a device failure').toBe('DeviceError');
      expect(toHsmError(pkcs11Error('CKR_GENERAL_ERROR'), undefined, SOFTHSM).code, 'the default context is other').toBe('DeviceError');
    });

    it("are another profile's device failure (nShield: CKR_FUNCTION_FAILED)", () => {
      expect(toHsmError(pkcs11Error('CKR_FUNCTION_FAILED'), 'decrypt', NSHIELD).code).toBe('DataInvalid');
      expect(toHsmError(pkcs11Error('CKR_FUNCTION_FAILED'), 'other', NSHIELD).code).toBe('DeviceError');
      expect(toHsmError(pkcs11Error('CKR_GENERAL_ERROR'), 'decrypt', NSHIELD).code, 'not in its list').toBe('DeviceError');
      expect(toHsmError(pkcs11Error('CKR_FUNCTION_FAILED'), 'decrypt', SOFTHSM).code, "not in SoftHSM's list").toBe('DeviceError');
    });

    it('without a profile (the standard meanings) a decrypt failure keeps its standard kind', () => {
      expect(STANDARD_MEANINGS.badTag.size).toBe(0);
      expect(toHsmError(pkcs11Error('CKR_GENERAL_ERROR'), 'decrypt').code).toBe('DeviceError');
      expect(toHsmError(pkcs11Error('CKR_GENERAL_ERROR'), 'decrypt', NSS).code).toBe('DeviceError');
      expect(toHsmError(pkcs11Error('CKR_ENCRYPTED_DATA_INVALID'), 'decrypt', NSS).code, 'the standard bad tag').toBe('DataInvalid');
    });

    it('leave other codes on a decrypt as they are', () => {
      expect(toHsmError(pkcs11Error('CKR_DEVICE_ERROR'), 'decrypt', SOFTHSM).code).toBe('DeviceError');
      expect(toHsmError(pkcs11Error('CKR_SESSION_HANDLE_INVALID'), 'decrypt', SOFTHSM).code).toBe('SessionInvalid');
      expect(toHsmError(new Error('boom'), 'decrypt', SOFTHSM).code).toBe('Unknown');
    });

    it('are read by code as well as by message (an error from the call thread)', () => {
      expect(toHsmError(threadError('failed', 0x5), 'decrypt', SOFTHSM).code).toBe('DataInvalid');
    });
  });

  it('ckrMeanings takes both lists from the profile', () => {
    expect([...SOFTHSM.badTag]).toEqual(['CKR_GENERAL_ERROR']);
    expect([...NSHIELD.badTag]).toEqual(['CKR_FUNCTION_FAILED']);
    expect([...CLOUDHSM.busy].sort()).toEqual(['CKR_DEVICE_ERROR', 'CKR_FUNCTION_FAILED', 'CKR_OPERATION_ACTIVE']);
    expect(ckrMeanings({ errors: { badTag: ['CKR_A'], busy: ['CKR_B', 'CKR_B'] } })).toEqual({ badTag: new Set(['CKR_A']), busy: new Set(['CKR_B']) });
  });

  it('an HsmError is an Error named HsmError', () => {
    const e = new HsmError('PinLocked', 'locked', 'CKR_PIN_LOCKED');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('HsmError');
    expect(String(e)).toBe('HsmError: locked');
    expect(new HsmError('Closed', 'closing').ckr).toBeUndefined();
  });
});

describe('what each kind means', () => {
  type Meaning = { poisons: boolean; availability: ReturnType<typeof availabilityOf>; recover: boolean };
  // Every kind (a Record: the compiler insists on all of them), with its meaning for the pool, the caller, recovery.
  const MEANING: Record<HsmErrorCode, Meaning> = {
    // The request's own fault, or a stale handle the caller re-resolves: the session is fine.
    KeyFunctionNotPermitted: { poisons: false, availability: 'other', recover: false },
    DataInvalid: { poisons: false, availability: 'other', recover: false },
    ObjectHandleInvalid: { poisons: false, availability: 'unavailable', recover: false },
    TemplateRefused: { poisons: false, availability: 'other', recover: false },
    // The session, the login or the device are gone: recover.
    SessionInvalid: { poisons: true, availability: 'unavailable', recover: true },
    NotLoggedIn: { poisons: true, availability: 'unavailable', recover: true },
    DeviceError: { poisons: true, availability: 'unavailable', recover: true },
    // Unavailable, but not for a recovery to fix (a PIN, a missing token, shutting down).
    PinIncorrect: { poisons: true, availability: 'unavailable', recover: false },
    PinLocked: { poisons: true, availability: 'unavailable', recover: false },
    TokenNotFound: { poisons: true, availability: 'unavailable', recover: false },
    Closed: { poisons: true, availability: 'unavailable', recover: false },
    // Retry soon.
    Busy: { poisons: true, availability: 'busy', recover: false },
    PoolExhausted: { poisons: true, availability: 'busy', recover: false },
    Timeout: { poisons: true, availability: 'timeout', recover: false },
    // Anything else leaves the session suspect (an operation may be left open on it).
    MechanismUnsupported: { poisons: true, availability: 'other', recover: false },
    OperationActive: { poisons: true, availability: 'other', recover: false },
    BufferTooSmall: { poisons: true, availability: 'other', recover: false },
    ArgumentsBad: { poisons: true, availability: 'other', recover: false },
    AttributeReadOnly: { poisons: true, availability: 'other', recover: false },
    Unknown: { poisons: true, availability: 'other', recover: false },
  };

  it.each(Object.entries(MEANING) as [HsmErrorCode, Meaning][])('%s: %o', (kind, m) => {
    expect(poisonsSession(kind), 'poisonsSession').toBe(m.poisons);
    expect(availabilityOf(kind), 'availabilityOf').toBe(m.availability);
    expect(needsRecovery(kind), 'needsRecovery').toBe(m.recover);
  });

  it('every kind that needs recovery also poisons its session and reads as unavailable', () => {
    for (const kind of Object.keys(MEANING) as HsmErrorCode[]) {
      if (!needsRecovery(kind)) continue;
      expect(poisonsSession(kind), kind).toBe(true);
      expect(availabilityOf(kind), kind).toBe('unavailable');
    }
  });

  it('a bad tag on a decrypt costs no session and no recovery, on SoftHSM where the code is CKR_GENERAL_ERROR', () => {
    const kind = toHsmError(pkcs11Error('CKR_GENERAL_ERROR'), 'decrypt', SOFTHSM).code;
    expect(poisonsSession(kind)).toBe(false);
    expect(needsRecovery(kind)).toBe(false);
    const elsewhere = toHsmError(pkcs11Error('CKR_GENERAL_ERROR'), 'other', SOFTHSM).code;
    expect(poisonsSession(elsewhere)).toBe(true);
    expect(needsRecovery(elsewhere)).toBe(true);
  });
});
