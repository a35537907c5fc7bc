// The admin surface's error table and the mapping of every failure below it (http/admin-errors.ts): known answers.
import { describe, expect, it } from 'vitest';
import { HsmError } from '../../src/hsm/errors.js';
import { ADMIN_ERRORS, AdminError, toAdminError } from '../../src/http/admin-errors.js';
import { KeyError, type KeyErrorName } from '../../src/keys/errors.js';

describe('toAdminError', () => {
  const keyNames: KeyErrorName[] = [
    'NotFoundException',
    'AlreadyExistsException',
    'KMSInvalidStateException',
    'ValidationException',
    'UnsupportedOperationException',
    'InvalidCiphertextException',
    'IncorrectKeyException',
    'ExpiredImportTokenException',
    'InvalidImportTokenException',
    'IncorrectKeyMaterialException',
  ];
  it.each(keyNames)('KeyError %s keeps its KMS name and message, as a 400', (name) => {
    const x = toAdminError(new KeyError(name, `key "k": ${name}`));
    expect([x.code, x.status, x.message]).toEqual([name, 400, `key "k": ${name}`]);
  });

  it('ConflictException (another process is changing the key) is a 409: retry', () => {
    expect(toAdminError(new KeyError('ConflictException', 'rotation in progress')).status).toBe(409);
  });

  it('HSM failures by what they mean for the caller: busy 429, gone or late 503, anything else 500', () => {
    const of = (e: HsmError) => {
      const x = toAdminError(e);
      return [x.code, x.status];
    };
    expect(of(new HsmError('PoolExhausted', 'x'))).toEqual(['ThrottlingException', 429]);
    expect(of(new HsmError('Timeout', 'x'))).toEqual(['DependencyTimeoutException', 503]);
    expect(of(new HsmError('NotLoggedIn', 'x'))).toEqual(['DependencyTimeoutException', 503]);
    expect(of(new HsmError('TemplateRefused', 'x', 'CKR_TEMPLATE_INCONSISTENT'))).toEqual(['KMSInternalException', 500]);
    // The XKS surface's own meanings of these codes do not apply here: a bad tag on an admin call is the HSM's fault.
    expect(of(new HsmError('DataInvalid', 'x'))).toEqual(['KMSInternalException', 500]);
  });

  it('answers anything else as KMSInternalException without its message', () => {
    const x = toAdminError(new Error('/etc/xks/secret: EACCES'));
    expect([x.code, x.status, x.message]).toEqual(['KMSInternalException', 500, 'internal error']);
  });

  it('every status in the table is one of the few the API documents', () => {
    expect(new Set(Object.values(ADMIN_ERRORS))).toEqual(new Set([400, 403, 404, 405, 409, 413, 429, 500, 503]));
    expect(new AdminError('MissingAuthenticationTokenException', 'x').status).toBe(403);
  });
});
