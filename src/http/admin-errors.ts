// Admin API error names and their HTTP status, in one place. Names are KMS's where KMS has one (its JSON protocol:
// `{"__type": name, "message": ...}`, client errors 400), so AWS SDKs and people who know KMS read them as they expect.
import { AnswerError } from '../errors.js';
import { availabilityOf, HsmError, type Availability } from '../hsm/errors.js';
import { KeyError, type KeyErrorName } from '../keys/errors.js';

/** The names only this surface has; every key management name (keys/errors.ts) is an admin name too. */
type AdminOwnName =
  | 'InvalidUriPathException'
  | 'MethodNotAllowedException'
  | 'RequestEntityTooLargeException'
  | 'MissingAuthenticationTokenException'
  | 'IncompleteSignatureException'
  | 'InvalidSignatureException'
  | 'UnknownOperationException'
  | 'ThrottlingException'
  | 'DependencyTimeoutException'
  | 'KMSInternalException';
export type AdminErrorName = AdminOwnName | KeyErrorName;

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
  // Key management and import of key material (src/keys/errors.ts); KMS answers these with 400 too.
  NotFoundException: 400,
  AlreadyExistsException: 400,
  KMSInvalidStateException: 400,
  UnsupportedOperationException: 400,
  InvalidCiphertextException: 400,
  IncorrectKeyException: 400,
  ExpiredImportTokenException: 400,
  InvalidImportTokenException: 400,
  IncorrectKeyMaterialException: 400,
  ConflictException: 409, // another process is changing the key: retry
  // The HSM.
  ThrottlingException: 429,
  DependencyTimeoutException: 503,
  KMSInternalException: 500,
} as const satisfies Record<AdminErrorName, number>;

export class AdminError extends AnswerError<AdminErrorName> {
  override readonly name = 'AdminError';
  constructor(code: AdminErrorName, message: string) {
    super(code, message, ADMIN_ERRORS[code]);
  }
}

const BY_AVAILABILITY = {
  busy: () => new AdminError('ThrottlingException', 'the proxy is at its HSM capacity; retry'),
  timeout: () => new AdminError('DependencyTimeoutException', 'the HSM did not answer in time; retry'),
  unavailable: (e) => new AdminError('DependencyTimeoutException', `the HSM is unavailable (${e.code}); retry`),
  other: (e) => new AdminError('KMSInternalException', `HSM operation failed (${e.ckr ?? e.code})`),
} satisfies Record<Availability, (e: HsmError) => AdminError>;

/** Anything thrown while serving an admin request, as the error the client sees. */
export function toAdminError(err: unknown): AdminError {
  if (err instanceof AdminError) return err;
  if (err instanceof KeyError) return new AdminError(err.code, err.message);
  if (err instanceof HsmError) return BY_AVAILABILITY[availabilityOf(err.code)](err);
  return new AdminError('KMSInternalException', 'internal error');
}
