// XKS error names and their HTTP status, in one place (spec "Errors"). Domain errors become XksErrors here.
import { availabilityOf, HsmError } from '../hsm/errors.js';

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

export class XksError extends Error {
  override readonly name = 'XksError';
  readonly status: number;
  constructor(
    readonly errorName: XksErrorName,
    message: string,
    /** Only for the one status the table lacks: 405 for a GET on an XKS path. */
    status?: number,
  ) {
    // KMS writes the message to the customer's CloudWatch Logs: printable ASCII, under 512 characters, no secrets.
    super(message.replace(/[^\x20-\x7e]/g, '?').slice(0, 500));
    this.status = status ?? XKS_ERRORS[errorName];
  }
}

/** Anything thrown below the HTTP layer, as the XKS error a client sees. */
export function toXksError(err: unknown): XksError {
  if (err instanceof XksError) return err;
  if (err instanceof HsmError) {
    if (err.kind === 'KeyFunctionNotPermitted') return new XksError('InvalidKeyUsageException', 'the key may not perform this operation');
    if (err.kind === 'DataInvalid') return new XksError('InvalidCiphertextException', 'the ciphertext, IV, tag, AAD or metadata do not authenticate');
    switch (availabilityOf(err.kind)) {
      case 'busy':
        return new XksError('ThrottlingException', 'the proxy is at its HSM capacity; retry');
      case 'timeout':
        return new XksError('DependencyTimeoutException', 'the HSM did not answer in time');
      case 'unavailable':
        return new XksError('DependencyTimeoutException', `the HSM is unavailable (${err.kind})`);
      default:
        return new XksError('InternalException', `HSM operation failed (${err.ckr ?? err.kind})`);
    }
  }
  return new XksError('InternalException', 'internal error');
}
