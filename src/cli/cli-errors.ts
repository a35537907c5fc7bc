// The CLI's surface for failures: a sentence on stderr, an exit code, and the name the audit line records.
import type { AuditErrorName } from '../audit/audit-error.js';
import type { AwsSampleError } from '../config/aws-sample.js';
import type { ConfigErrorName } from '../config/load.js';
import { ProxyError } from '../errors.js';
import type { HsmErrorCode } from '../hsm/errors.js';
import type { KeyErrorName } from '../keys/errors.js';

/** What a command's failure is called on the audit trail: the error's code, or `Error` for one with no name (usage). */
export type CliErrorName = KeyErrorName | HsmErrorCode | AuditErrorName | ConfigErrorName | AwsSampleError['code'] | 'Error';

/** 3: the audit trail refused the command, which therefore did not run; 1: anything else. */
const EXIT_CODES = { AuditTrailUnavailable: 3, AuditTrailLocked: 3, AuditKeyNotFound: 3 } as const satisfies Record<AuditErrorName, 3>;

export function cliErrorName(e: unknown): CliErrorName {
  return e instanceof ProxyError ? (e.code as CliErrorName) : 'Error';
}

export function cliExitCode(e: unknown): 1 | 3 {
  const name = cliErrorName(e);
  return name in EXIT_CODES ? EXIT_CODES[name as AuditErrorName] : 1;
}
