// XKS error names and their HTTP status, in one place (spec "Errors"). Domain errors become XksErrors here.
import { AnswerError } from '../errors.js';
import { HsmError, availabilityOf, type Availability, type HsmErrorCode } from '../hsm/errors.js';

export const XKS_ERRORS = {
  ValidationException: 400,
  InvalidStateException: 400,
  InvalidCiphertextException: 400,
  InvalidKeyUsageException: 400,
  AuthenticationFailedException: 401,
  AccessDeniedException: 403,
  KeyNotFoundException: 404,
  InvalidUriPathException: 404,
  ThrottlingException: 429,
  UnsupportedOperationException: 501,
  DependencyTimeoutException: 503,
  InternalException: 500,
} as const;
export type XksErrorName = keyof typeof XKS_ERRORS;

export class XksError extends AnswerError<XksErrorName> {
  override readonly name = 'XksError';
  constructor(
    code: XksErrorName,
    message: string,
    /** Only for the one status the table lacks: 405 for a GET on an XKS path. */
    status?: number,
  ) {
    super(code, message, status ?? XKS_ERRORS[code]);
  }
}

/** HSM codes that say something about the request itself; any other code is answered by what it means for availability. */
const HSM_REFUSALS: Partial<Record<HsmErrorCode, () => XksError>> = {
  KeyFunctionNotPermitted: () => new XksError('InvalidKeyUsageException', 'the key may not perform this operation'),
  DataInvalid: () => new XksError('InvalidCiphertextException', 'the ciphertext, IV, tag, AAD or metadata do not authenticate'),
};

const BY_AVAILABILITY = {
  busy: () => new XksError('ThrottlingException', 'the proxy is at its HSM capacity; retry'),
  timeout: () => new XksError('DependencyTimeoutException', 'the HSM did not answer in time'),
  unavailable: (e) => new XksError('DependencyTimeoutException', `the HSM is unavailable (${e.code})`),
  other: (e) => new XksError('InternalException', `HSM operation failed (${e.ckr ?? e.code})`),
} satisfies Record<Availability, (e: HsmError) => XksError>;

/** Anything thrown below the HTTP layer, as the XKS error a client sees. */
export function toXksError(err: unknown): XksError {
  if (err instanceof XksError) return err;
  if (err instanceof HsmError) return HSM_REFUSALS[err.code]?.() ?? BY_AVAILABILITY[availabilityOf(err.code)](err);
  return new XksError('InternalException', 'internal error');
}
