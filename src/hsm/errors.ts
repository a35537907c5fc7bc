// Every PKCS#11 return code becomes a named HsmError here, and only here (architecture: "every failure has a name").
import pkcs11js from 'pkcs11js';
import { ProxyError } from '../errors.js';

/** What went wrong, in the terms the rest of the proxy acts on. */
export type HsmErrorCode =
  | 'KeyFunctionNotPermitted' // the key's CKA_ENCRYPT/CKA_DECRYPT forbids the operation
  | 'DataInvalid' // ciphertext, tag, IV or AAD do not authenticate (or the data is malformed for the mechanism)
  | 'ObjectHandleInvalid' // the cached handle no longer names an object: re-resolve
  | 'SessionInvalid' // the session was closed underneath us: open another
  | 'NotLoggedIn' // the login was lost: log in again
  | 'DeviceError' // the device or library failed: re-initialise
  | 'PinIncorrect'
  | 'PinLocked'
  | 'TokenNotFound'
  | 'MechanismUnsupported'
  | 'OperationActive' // a previous call left an operation open on the session
  | 'BufferTooSmall'
  | 'ArgumentsBad'
  | 'AttributeReadOnly'
  | 'TemplateRefused' // the token refused a template (an attribute it does not support, or an inconsistent one)
  | 'Busy' // the device answered "throttled" (a profile's busy codes, with the device still answering a probe)
  | 'PoolExhausted' // no session became free within the wait budget
  | 'Timeout' // the HSM did not answer within the operation budget
  | 'Closed' // the HSM layer is shutting down
  | 'Unknown';

export class HsmError extends ProxyError<HsmErrorCode> {
  override readonly name = 'HsmError';
  constructor(
    code: HsmErrorCode,
    message: string,
    /** The CKR name, when the error came from the module. */
    readonly ckr?: string,
  ) {
    super(code, message);
  }
}

const CKR_CODE: Record<string, HsmErrorCode> = {
  CKR_KEY_FUNCTION_NOT_PERMITTED: 'KeyFunctionNotPermitted',
  CKR_KEY_TYPE_INCONSISTENT: 'KeyFunctionNotPermitted',
  CKR_ENCRYPTED_DATA_INVALID: 'DataInvalid',
  CKR_ENCRYPTED_DATA_LEN_RANGE: 'DataInvalid',
  CKR_DATA_INVALID: 'DataInvalid',
  CKR_DATA_LEN_RANGE: 'DataInvalid',
  CKR_AEAD_DECRYPT_FAILED: 'DataInvalid',
  CKR_SIGNATURE_INVALID: 'DataInvalid',
  CKR_OBJECT_HANDLE_INVALID: 'ObjectHandleInvalid',
  CKR_KEY_HANDLE_INVALID: 'ObjectHandleInvalid',
  CKR_SESSION_HANDLE_INVALID: 'SessionInvalid',
  CKR_SESSION_CLOSED: 'SessionInvalid',
  CKR_USER_NOT_LOGGED_IN: 'NotLoggedIn',
  CKR_DEVICE_ERROR: 'DeviceError',
  CKR_DEVICE_REMOVED: 'DeviceError',
  CKR_DEVICE_MEMORY: 'DeviceError',
  CKR_TOKEN_NOT_PRESENT: 'DeviceError',
  // The slot the connection holds is gone (the token was enumerated again under another id): find it again.
  CKR_SLOT_ID_INVALID: 'DeviceError',
  CKR_TOKEN_NOT_RECOGNIZED: 'DeviceError',
  CKR_CRYPTOKI_NOT_INITIALIZED: 'DeviceError',
  CKR_FUNCTION_FAILED: 'DeviceError',
  CKR_PIN_INCORRECT: 'PinIncorrect',
  CKR_PIN_LEN_RANGE: 'PinIncorrect',
  CKR_PIN_LOCKED: 'PinLocked',
  CKR_MECHANISM_INVALID: 'MechanismUnsupported',
  CKR_MECHANISM_PARAM_INVALID: 'MechanismUnsupported',
  CKR_OPERATION_ACTIVE: 'OperationActive',
  CKR_BUFFER_TOO_SMALL: 'BufferTooSmall',
  CKR_ARGUMENTS_BAD: 'ArgumentsBad',
  CKR_ATTRIBUTE_READ_ONLY: 'AttributeReadOnly',
  CKR_ATTRIBUTE_TYPE_INVALID: 'TemplateRefused',
  CKR_ATTRIBUTE_VALUE_INVALID: 'TemplateRefused',
  CKR_TEMPLATE_INCOMPLETE: 'TemplateRefused',
  CKR_TEMPLATE_INCONSISTENT: 'TemplateRefused',
  CKR_KEY_SIZE_RANGE: 'TemplateRefused',
};

/**
 * What a token's codes mean where PKCS#11 leaves it open (HSM profile `errors`): which codes a failed tag check
 * answers, and which mean "busy" while the device still answers.
 */
export interface CkrMeanings {
  badTag: ReadonlySet<string>;
  busy: ReadonlySet<string>;
}

/** The standard's meanings only: for code that runs before a profile is known (token init). */
export const STANDARD_MEANINGS: CkrMeanings = { badTag: new Set(), busy: new Set() };

export function ckrMeanings(profile: { errors: { badTag: string[]; busy: string[] } }): CkrMeanings {
  return { badTag: new Set(profile.errors.badTag), busy: new Set(profile.errors.busy) };
}

/**
 * Codes of PKCS#11 3.0 and 3.1 (OASIS pkcs11t.h) that pkcs11js 2.1.7's 2.40 headers lack: it calls each of them
 * CKR_VENDOR_DEFINED. A 3.x token answers a failed GCM tag check with CKR_AEAD_DECRYPT_FAILED.
 */
const CKR_AFTER_240: Readonly<Record<number, string>> = {
  0x1b: 'CKR_ACTION_PROHIBITED',
  0x35: 'CKR_AEAD_DECRYPT_FAILED',
  0x201: 'CKR_TOKEN_RESOURCE_EXCEEDED',
  0x202: 'CKR_OPERATION_CANCEL_FAILED',
  0x203: 'CKR_KEY_EXHAUSTED',
};
const CKR_VENDOR_DEFINED = 0x8000_0000;

/** A code's name: pkcs11js's, a later standard's, or a vendor's own number as CKR_VENDOR_DEFINED+0x... */
function nameOfCode(code: number): string | undefined {
  for (const [name, value] of Object.entries(pkcs11js)) {
    if (name.startsWith('CKR_') && name !== 'CKR_VENDOR_DEFINED' && value === code) return name;
  }
  if (CKR_AFTER_240[code]) return CKR_AFTER_240[code];
  return code >= CKR_VENDOR_DEFINED ? `CKR_VENDOR_DEFINED+0x${(code - CKR_VENDOR_DEFINED).toString(16)}` : undefined;
}

/**
 * The CKR name of a pkcs11js error; C_CreateObject and friends carry it only in the message. pkcs11js spells every
 * code its headers lack "CKR_VENDOR_DEFINED": then the numeric code says which (so a profile can list a vendor's code).
 */
export function ckrName(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = (err as { code?: unknown }).code;
  // 0 is CKR_OK, never a failure: pkcs11js gives its own errors that carry no CKR ("PKCS11 module not loaded yet",
  // a bad argument) code 0, and those must not read as CKR_OK.
  const numbered = typeof code === 'number' && code !== 0 ? nameOfCode(code) : undefined;
  const m = /(CKR_[A-Z0-9_]+)/.exec(err.message);
  if (m) return m[1] === 'CKR_VENDOR_DEFINED' ? (numbered ?? m[1]) : m[1];
  return numbered;
}

/**
 * Wraps whatever a pkcs11js call threw. `context` says what we were doing, so that a profile's bad-tag codes on a
 * decrypt or an unwrap of outside data (SoftHSM 2.6.1: CKR_GENERAL_ERROR; nShield: CKR_FUNCTION_FAILED) read as
 * DataInvalid, never as a device failure to recover from.
 */
export function toHsmError(err: unknown, context: 'decrypt' | 'other' = 'other', meanings: CkrMeanings = STANDARD_MEANINGS): HsmError {
  if (err instanceof HsmError) return err;
  const ckr = ckrName(err);
  if (ckr !== undefined && context === 'decrypt' && meanings.badTag.has(ckr)) {
    return new HsmError('DataInvalid', 'the ciphertext did not authenticate', ckr);
  }
  const code: HsmErrorCode = (ckr !== undefined ? CKR_CODE[ckr] : undefined) ?? (ckr === 'CKR_GENERAL_ERROR' ? 'DeviceError' : 'Unknown');
  return new HsmError(code, ckr ? `PKCS#11 call failed: ${ckr}` : 'PKCS#11 call failed', ckr);
}

/** Codes after which the session must not go back to the pool. */
export function poisonsSession(code: HsmErrorCode): boolean {
  return code !== 'KeyFunctionNotPermitted' && code !== 'DataInvalid' && code !== 'ObjectHandleInvalid' && code !== 'TemplateRefused';
}

/**
 * What a failure means to a caller that must answer now, whatever its protocol: `busy` (retry soon: no session came
 * free), `timeout` (the HSM did not answer in time), `unavailable` (the HSM or its login is gone), or `other` (about
 * this request: its data, its key, its template). Every code is classified here; the compiler refuses a new one that is not.
 */
export type Availability = 'busy' | 'timeout' | 'unavailable' | 'other';

const AVAILABILITY = {
  KeyFunctionNotPermitted: 'other',
  DataInvalid: 'other',
  ObjectHandleInvalid: 'unavailable', // still stale after the caller re-resolved it: the HSM is being recovered, retry
  SessionInvalid: 'unavailable',
  NotLoggedIn: 'unavailable',
  DeviceError: 'unavailable',
  PinIncorrect: 'unavailable',
  PinLocked: 'unavailable',
  TokenNotFound: 'unavailable',
  MechanismUnsupported: 'other',
  OperationActive: 'other',
  BufferTooSmall: 'other',
  ArgumentsBad: 'other',
  AttributeReadOnly: 'other',
  TemplateRefused: 'other',
  Busy: 'busy',
  PoolExhausted: 'busy',
  Timeout: 'timeout',
  Closed: 'unavailable',
  Unknown: 'other',
} as const satisfies Record<HsmErrorCode, Availability>;

export function availabilityOf(code: HsmErrorCode): Availability {
  return AVAILABILITY[code];
}

/** The HSM itself failed or is busy (retry later), as against a refusal of this request's data, key or template. */
export function isHsmUnavailable(e: unknown): e is HsmError {
  return e instanceof HsmError && AVAILABILITY[e.code] !== 'other';
}

/** Codes after which the whole module should be recovered (reopen sessions, log in again, or re-initialise). */
export function needsRecovery(code: HsmErrorCode): boolean {
  return code === 'SessionInvalid' || code === 'NotLoggedIn' || code === 'DeviceError';
}
