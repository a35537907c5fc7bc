// The import's errors that have one fixed message: messages never say which step inside an unwrap failed, so every
// blob that does not unwrap gets the same answer. The error class and its names are keys/errors.ts's.
import { KeyError } from '../keys/errors.js';

/** The one answer for a blob that does not unwrap, whatever step refused it. */
export function notUnwrappable(): KeyError {
  return new KeyError('InvalidCiphertextException', 'the encrypted key material does not unwrap with this import token\'s wrapping key and algorithm');
}

export function invalidToken(): KeyError {
  return new KeyError('InvalidImportTokenException', 'the import token is not valid for this key: it was altered, made for another key, or used already');
}
