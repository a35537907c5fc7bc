// Errors of key management and of the import of key material, named as AWS KMS names them (operators and SDKs know
// these). One class for both: the admin API maps each name to a status in one table (http/admin-errors.ts), and the
// CLI prints the message.
import { ProxyError } from '../errors.js';

export type KeyErrorName =
  | 'NotFoundException'
  | 'AlreadyExistsException'
  | 'KMSInvalidStateException'
  | 'ValidationException'
  | 'UnsupportedOperationException'
  /** Another process is changing the same key (a rotation in progress): retry. */
  | 'ConflictException'
  /** A wrapping key, KEK, backup file or encrypted key material that does not verify, unwrap or fit. */
  | 'InvalidCiphertextException'
  | 'IncorrectKeyException'
  /** The import token's 24 hours are over: call GetParametersForImport again. */
  | 'ExpiredImportTokenException'
  /** Forged, altered, already used, or made for another key. */
  | 'InvalidImportTokenException'
  /** Not 32 bytes, or not the material imported before. */
  | 'IncorrectKeyMaterialException';

export class KeyError extends ProxyError<KeyErrorName> {
  override readonly name = 'KeyError';
}
