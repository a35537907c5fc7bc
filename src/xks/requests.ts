// Each XKS operation as a { schema, run } entry, with the spec's order of checks after authentication:
// body shape (400) -> key in this key store and existing (404) -> policy (403) -> key state and usage (400) -> HSM.
// The HTTP layer (http/xks-handler.ts) authenticates, parses with the entry's schema and runs it.
import type { ZodType } from 'zod';
import type { KeyCatalogue } from '../keys/catalogue.js';
import type { CompiledPolicy } from '../keys/policy.js';
import type { AadLayout } from './aad.js';
import { XksError } from './errors.js';
import type { HealthChecker } from './health.js';
import { decrypt, encrypt, getKeyMetadata, type XksDeps } from './operations.js';
import type { RequestLog } from './request-log.js';
import { DecryptRequestSchema, EncryptRequestSchema, HealthRequestSchema, KeyMetadataRequestSchema } from './schemas.js';

export type XksOperationName = 'GetHealthStatus' | 'GetKeyMetadata' | 'Encrypt' | 'Decrypt';

/** What a key store allows: its key allow-list (absent: every key) and its compiled policies. */
export interface KeyStoreAccess {
  keys: ReadonlySet<string> | undefined;
  policy: CompiledPolicy;
}

/** One authenticated call: the services, the key store's access rules, the key (absent for health), the log line. */
export interface XksCall {
  services: XksDeps & { health: HealthChecker };
  access: KeyStoreAccess;
  keyId: string | undefined;
  log: RequestLog;
}

/** An operation's answer: the response body and, for the log line, the key version and AAD layout used. */
export interface XksAnswer {
  body: object;
  keyVersion?: number | undefined;
  aadLayout?: AadLayout | undefined;
}

export interface XksOperation<Request> {
  schema: ZodType<Request>;
  run(call: XksCall, request: Request): Promise<XksAnswer>;
}

/** A key operation: the key must be this key store's, exist, and be allowed by its policy before `op` runs. */
function onKey<Request>(schema: ZodType<Request>, op: (deps: XksDeps, keyId: string, request: Request) => Promise<XksAnswer>): XksOperation<Request> {
  return {
    schema,
    run(call, request) {
      const keyId = call.keyId!;
      const pending = allowed(call, keyId);
      // Without a policy there is nothing to wait for: no extra promise on the hot path.
      return pending ? pending.then(() => op(call.services, keyId, request)) : op(call.services, keyId, request);
    },
  };
}

export const XKS_OPERATIONS = {
  GetHealthStatus: { schema: HealthRequestSchema, run: async (call) => ({ body: (await call.services.health.response()).body }) },
  GetKeyMetadata: onKey(KeyMetadataRequestSchema, (deps, keyId) => getKeyMetadata(deps, keyId)),
  Encrypt: onKey(EncryptRequestSchema, encrypt),
  Decrypt: onKey(DecryptRequestSchema, decrypt),
} satisfies { [O in XksOperationName]: { schema: ZodType; run(call: XksCall, request: never): Promise<XksAnswer> } };

/** 404 for a key outside the allow-list; with a policy, 404 for a key that does not exist, then the policy (403). */
function allowed(call: XksCall, keyId: string): Promise<void> | undefined {
  const { access, log } = call;
  if (access.keys && !access.keys.has(keyId)) throw new XksError('KeyNotFoundException', `external key ${keyId} is not in this key store`);
  return access.policy.empty ? undefined : authorize(call.services.catalogue, access.policy, keyId, log);
}

async function authorize(catalogue: KeyCatalogue, policy: CompiledPolicy, keyId: string, log: RequestLog): Promise<void> {
  if (!(await catalogue.resolve(keyId))) throw new XksError('KeyNotFoundException', `external key ${keyId} does not exist`);
  const d = policy.evaluate({
    keyId,
    awsPrincipalArn: log.awsPrincipalArn,
    kmsKeyArn: log.kmsKeyArn,
    kmsOperation: log.kmsOperation,
    kmsViaService: log.kmsViaService,
    awsSourceVpc: log.awsSourceVpc,
    awsSourceVpce: log.awsSourceVpce,
  });
  log.policy = d.statement;
  if (!d.allowed) {
    log.reason = `policy: ${d.reason}`;
    throw new XksError('AccessDeniedException', 'the request is not allowed by the key store policy');
  }
}
