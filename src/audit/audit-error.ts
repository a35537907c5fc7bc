// The audit trail's own failures, by name. A key-changing CLI command that cannot put its intent on the trail does
// not make its change (AuditTrailUnavailable, AuditTrailLocked); the proxy in `audit.onFailure: refuse` mode answers
// XKS calls with a named error while its trail cannot be sealed. AuditKeyNotFound: the signer did not find its key after
// the trail was opened (a failed checkpoint; the key is never made twice).
import { ProxyError } from '../errors.js';

export type AuditErrorName = 'AuditTrailUnavailable' | 'AuditTrailLocked' | 'AuditKeyNotFound';

export class AuditError extends ProxyError<AuditErrorName> {
  override readonly name = 'AuditError';
  constructor(code: AuditErrorName, message: string) {
    super(code, `${code}: ${message}`);
  }
}
