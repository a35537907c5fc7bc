// The XKS request's log line: one fixed shape, filled in as the request advances (HTTP layer and xks/requests.ts),
// logged once; metrics and the audit line are made from it. No field can hold a body, a secret or key material.
import type { AadLayout } from './aad.js';
import type { XksErrorName } from './errors.js';

export interface RequestLog {
  kmsRequestId: string | undefined;
  operation: string | undefined;
  prefix: string | undefined;
  keyId: string | undefined;
  keyVersion: number | undefined;
  /** A decrypt that authenticated only under another proxy's AAD layout (AWS's sample proxy's ciphertexts). */
  aadLayout: AadLayout | undefined;
  accessKeyId: string | undefined;
  /** The access key id a request that did not authenticate claimed (its Authorization header), as it was tried. */
  triedAccessKeyId: string | undefined;
  /** The client's address (the TCP peer: a load balancer's when one is in front). */
  from: string | undefined;
  /** From requestMetadata (as KMS sent it; trusted only once the signature verified). */
  awsPrincipalArn: string | undefined;
  kmsKeyArn: string | undefined;
  kmsOperation: string | undefined;
  kmsViaService: string | undefined;
  awsSourceVpc: string | undefined;
  awsSourceVpce: string | undefined;
  /** The policy statement that decided (allowed or denied), when a policy applies. */
  policy: string | undefined;
  outcome: 'ok' | 'error' | undefined;
  status: number | undefined;
  errorName: XksErrorName | undefined;
  reason: string | undefined;
  hsmError: string | undefined;
  ms: number | undefined;
}

export function newRequestLog(from: string | undefined): RequestLog {
  return {
    kmsRequestId: undefined,
    operation: undefined,
    prefix: undefined,
    keyId: undefined,
    keyVersion: undefined,
    aadLayout: undefined,
    accessKeyId: undefined,
    triedAccessKeyId: undefined,
    from,
    awsPrincipalArn: undefined,
    kmsKeyArn: undefined,
    kmsOperation: undefined,
    kmsViaService: undefined,
    awsSourceVpc: undefined,
    awsSourceVpce: undefined,
    policy: undefined,
    outcome: undefined,
    status: undefined,
    errorName: undefined,
    reason: undefined,
    hsmError: undefined,
    ms: undefined,
  };
}
