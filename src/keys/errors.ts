// Errors of key management, named as AWS KMS names them (operators and SDKs know these). The admin API maps each
// to an HTTP status in one place (http/admin-errors.ts); the CLI prints the message.

export const KEY_ERROR_NAMES = [
  'NotFoundException',
  'AlreadyExistsException',
  'KMSInvalidStateException',
  'ValidationException',
  'UnsupportedOperationException',
  /** Another process is changing the same key (a rotation in progress): retry. */
  'ConflictException',
  /** A wrapping key, KEK or backup file that does not verify or does not fit. */
  'InvalidCiphertextException',
  'IncorrectKeyException',
] as const;
export type KeyErrorName = (typeof KEY_ERROR_NAMES)[number];

export class KeyError extends Error {
  override readonly name = 'KeyError';
  constructor(
    readonly code: KeyErrorName,
    message: string,
  ) {
    super(message);
  }
}
