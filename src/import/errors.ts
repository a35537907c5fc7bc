// Errors of the import of key material, named as AWS KMS names them for GetParametersForImport, ImportKeyMaterial and
// DeleteImportedKeyMaterial. The admin API maps each name to a status (all 400 in KMS); the CLI prints the message.
// Messages never say which step inside an unwrap failed: one message for every blob that does not unwrap.

export const IMPORT_ERROR_NAMES = [
  /** The import token's 24 hours are over: call GetParametersForImport again. */
  'ExpiredImportTokenException',
  /** Forged, altered, already used, or made for another key. */
  'InvalidImportTokenException',
  /** The encrypted key material does not unwrap under the token's wrapping key with its algorithm. */
  'InvalidCiphertextException',
  /** Not 32 bytes, or not the material imported before. */
  'IncorrectKeyMaterialException',
  'NotFoundException',
  'KMSInvalidStateException',
  'UnsupportedOperationException',
  'ValidationException',
] as const;
export type ImportErrorName = (typeof IMPORT_ERROR_NAMES)[number];

export class ImportError extends Error {
  override readonly name = 'ImportError';
  constructor(
    readonly code: ImportErrorName,
    message: string,
  ) {
    super(message);
  }
}

/** The one answer for a blob that does not unwrap, whatever step refused it. */
export function notUnwrappable(): ImportError {
  return new ImportError('InvalidCiphertextException', 'the encrypted key material does not unwrap with this import token\'s wrapping key and algorithm');
}

export function invalidToken(): ImportError {
  return new ImportError('InvalidImportTokenException', 'the import token is not valid for this key: it was altered, made for another key, or used already');
}
