// The XKS surface's error table and the mapping of every failure below it (xks/errors.ts): known answers.
import { describe, expect, it } from 'vitest';
import { HsmError, type HsmErrorCode } from '../../src/hsm/errors.js';
import { KeyError } from '../../src/keys/errors.js';
import { XKS_ERRORS, XksError, toXksError } from '../../src/xks/errors.js';

describe('XKS_ERRORS', () => {
  it("has the spec's names and statuses", () => {
    expect(XKS_ERRORS).toEqual({
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
    });
  });
});

describe('XksError', () => {
  it('takes its status from the table, unless given the one status the table lacks (405)', () => {
    expect(new XksError('KeyNotFoundException', 'x').status).toBe(404);
    expect(new XksError('ValidationException', 'XKS operations use POST', 405).status).toBe(405);
  });

  it('keeps its message printable ASCII and under 512 characters (KMS writes it to CloudWatch Logs)', () => {
    const e = new XksError('ValidationException', `bad\u0000\n\u00e9${'x'.repeat(600)}`);
    expect(e.message).toMatch(/^[\x20-\x7e]*$/);
    expect(e.message.startsWith('bad???')).toBe(true);
    expect(e.message.length).toBe(500);
    expect(e.code).toBe('ValidationException');
  });
});

describe('toXksError', () => {
  const cases: [HsmErrorCode, string, number][] = [
    ['KeyFunctionNotPermitted', 'InvalidKeyUsageException', 400],
    ['DataInvalid', 'InvalidCiphertextException', 400],
    ['Busy', 'ThrottlingException', 429],
    ['PoolExhausted', 'ThrottlingException', 429],
    ['Timeout', 'DependencyTimeoutException', 503],
    ['SessionInvalid', 'DependencyTimeoutException', 503],
    ['ObjectHandleInvalid', 'DependencyTimeoutException', 503],
    ['NotLoggedIn', 'DependencyTimeoutException', 503],
    ['DeviceError', 'DependencyTimeoutException', 503],
    ['Closed', 'DependencyTimeoutException', 503],
    ['PinIncorrect', 'DependencyTimeoutException', 503],
    ['PinLocked', 'DependencyTimeoutException', 503],
    ['TokenNotFound', 'DependencyTimeoutException', 503],
    ['MechanismUnsupported', 'InternalException', 500],
    ['OperationActive', 'InternalException', 500],
    ['BufferTooSmall', 'InternalException', 500],
    ['ArgumentsBad', 'InternalException', 500],
    ['AttributeReadOnly', 'InternalException', 500],
    ['TemplateRefused', 'InternalException', 500],
    ['Unknown', 'InternalException', 500],
  ];
  it.each(cases)('HsmError %s is %s (%i)', (code, name, status) => {
    const x = toXksError(new HsmError(code, 'PKCS#11 call failed', 'CKR_SOMETHING'));
    expect(x).toBeInstanceOf(XksError);
    expect([x.code, x.status]).toEqual([name, status]);
  });

  it('names the HSM code or CKR an operator needs, and nothing from the original message', () => {
    expect(toXksError(new HsmError('DeviceError', 'secret detail', 'CKR_DEVICE_ERROR')).message).toBe('the HSM is unavailable (DeviceError)');
    expect(toXksError(new HsmError('TemplateRefused', 'secret detail', 'CKR_TEMPLATE_INCONSISTENT')).message).toBe('HSM operation failed (CKR_TEMPLATE_INCONSISTENT)');
    expect(toXksError(new HsmError('Unknown', 'secret detail')).message).toBe('HSM operation failed (Unknown)');
  });

  it('passes an XksError through as it is', () => {
    const e = new XksError('AccessDeniedException', 'no');
    expect(toXksError(e)).toBe(e);
  });

  it('answers anything else as InternalException without its message (a KeyError, a TypeError, a string)', () => {
    for (const err of [new KeyError('NotFoundException', 'key k'), new TypeError('x.y is undefined'), 'boom', undefined]) {
      const x = toXksError(err);
      expect([x.code, x.status, x.message]).toEqual(['InternalException', 500, 'internal error']);
    }
  });
});
