// The CLI's names and exit codes for failures (cli/cli-errors.ts): what the audit line records and what scripts test.
import { describe, expect, it } from 'vitest';
import { AuditError } from '../../src/audit/audit-error.js';
import { cliErrorName, cliExitCode } from '../../src/cli/cli-errors.js';
import { ConfigError } from '../../src/config/load.js';
import { HsmError } from '../../src/hsm/errors.js';
import { KeyError } from '../../src/keys/errors.js';

describe('the CLI surface', () => {
  it("names a failure by its code, and anything without one (a usage error) 'Error'", () => {
    expect(cliErrorName(new KeyError('AlreadyExistsException', 'x'))).toBe('AlreadyExistsException');
    expect(cliErrorName(new HsmError('PinIncorrect', 'x'))).toBe('PinIncorrect');
    expect(cliErrorName(new ConfigError('x'))).toBe('ConfigInvalid');
    expect(cliErrorName(new ConfigError('x', 'SecretFileExposed'))).toBe('SecretFileExposed');
    expect(cliErrorName(new AuditError('AuditTrailLocked', 'x'))).toBe('AuditTrailLocked');
    expect(cliErrorName(new Error('unknown option'))).toBe('Error');
    expect(cliErrorName('thrown string')).toBe('Error');
  });

  it('exits 3 when the audit trail refused the command (it did not run), 1 for anything else', () => {
    for (const name of ['AuditTrailUnavailable', 'AuditTrailLocked', 'AuditKeyNotFound'] as const) expect(cliExitCode(new AuditError(name, 'x'))).toBe(3);
    expect(cliExitCode(new KeyError('NotFoundException', 'x'))).toBe(1);
    expect(cliExitCode(new HsmError('DeviceError', 'x'))).toBe(1);
    expect(cliExitCode(new Error('x'))).toBe(1);
  });
});
