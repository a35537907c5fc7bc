// Admin API error names and their HTTP status, in one place. Names are KMS's where KMS has one (its JSON protocol:
// `{"__type": name, "message": ...}`, client errors 400), so AWS SDKs and people who know KMS read them as they expect.
import { availabilityOf, HsmError } from '../hsm/errors.js';
import { ImportError } from '../import/errors.js';
import { KeyError, type KeyErrorName } from '../keys/errors.js';

export const ADMIN_ERRORS = {
  // Transport: before the request is authenticated.
  InvalidUriPathException: 404, // the admin API is POST / only
  MethodNotAllowedException: 405,
  RequestEntityTooLargeException: 413,
  // Authentication (SigV4, service xks-admin). All 403: none of them says whether an access key id exists.
  MissingAuthenticationTokenException: 403, // no Authorization header
  IncompleteSignatureException: 403, // Authorization not AWS4-HMAC-SHA256, or X-Amz-Target not signed
  InvalidSignatureException: 403, // wrong scope, expired, unknown access key, wrong secret, changed request
  // The request, once authenticated.
  UnknownOperationException: 400, // X-Amz-Target missing or not XksAdmin.<an operation>
  ValidationException: 400, // not JSON, not an object, wrong or unknown fields, values out of range
  // Key management (src/keys/errors.ts); KMS answers these with 400 too.
  NotFoundException: 400,
  AlreadyExistsException: 400,
  KMSInvalidStateException: 400,
  UnsupportedOperationException: 400,
  InvalidCiphertextException: 400,
  IncorrectKeyException: 400,
  // Import of key material (src/import/errors.ts).
  ExpiredImportTokenException: 400,
  InvalidImportTokenException: 400,
  IncorrectKeyMaterialException: 400,
  ConflictException: 409, // another process is changing the key: retry
  // The HSM.
  ThrottlingException: 429,
  DependencyTimeoutException: 503,
  KMSInternalException: 500,
} as const;
export type AdminErrorName = keyof typeof ADMIN_ERRORS;

export class AdminError extends Error {
  override readonly name = 'AdminError';
  readonly status: number;
  constructor(
    /** A key error name the table does not list yet still goes out under its own name, as a 400. */
    readonly errorName: AdminErrorName | KeyErrorName,
    message: string,
  ) {
    super(message.replace(/[^\x20-\x7e]/g, '?').slice(0, 500));
    this.status = (ADMIN_ERRORS as Record<string, number>)[errorName] ?? 400;
  }
}

/** Anything thrown while serving an admin request, as the error the client sees. */
export function toAdminError(err: unknown): AdminError {
  if (err instanceof AdminError) return err;
  if (err instanceof KeyError) return new AdminError(err.code, err.message);
  if (err instanceof ImportError) return new AdminError(err.code as AdminErrorName, err.message);
  if (err instanceof HsmError) {
    switch (availabilityOf(err.kind)) {
      case 'busy':
        return new AdminError('ThrottlingException', 'the proxy is at its HSM capacity; retry');
      case 'timeout':
        return new AdminError('DependencyTimeoutException', 'the HSM did not answer in time; retry');
      case 'unavailable':
        return new AdminError('DependencyTimeoutException', `the HSM is unavailable (${err.kind}); retry`);
      default:
        return new AdminError('KMSInternalException', `HSM operation failed (${err.ckr ?? err.kind})`);
    }
  }
  return new AdminError('KMSInternalException', 'internal error');
}
