// Secondary authorization: per key store (prefix) and per key, statements that allow or deny a request by the
// requestMetadata KMS sends (awsPrincipalArn, kmsOperation, kmsViaService, awsSourceVpc/Vpce), and the binding of an
// external key to the KMS keys (kmsKeyArn) that may use it (the spec's confused-deputy case: another account must
// not be able to create its own KMS key over our external key). Pure: compiled once from the config, evaluated per request.
import { z } from 'zod';

const Patterns = z.array(z.string().min(1).max(2048)).min(1);

export const PolicyStatementSchema = z.strictObject({
  /** A name for logs: the statement that decided is logged with every denial. */
  sid: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1 to 64 characters of A-Za-z0-9_.-'),
  effect: z.enum(['Allow', 'Deny']),
  /** awsPrincipalArn, exact or with * and ? wildcards (IAM style). */
  principals: Patterns.optional(),
  /** kmsOperation: Encrypt, Decrypt, GenerateDataKey, ReEncrypt, CreateKey, DescribeKey, ... (wildcards allowed). */
  kmsOperations: Patterns.optional(),
  /** kmsViaService (e.g. ec2.us-east-1.amazonaws.com); "NONE" matches a request made directly to KMS. */
  viaServices: Patterns.optional(),
  sourceVpcs: Patterns.optional(),
  sourceVpces: Patterns.optional(),
  /** In a prefix policy: the external key ids the statement covers (wildcards allowed); all when absent. */
  keys: Patterns.optional(),
});
export type PolicyStatement = z.infer<typeof PolicyStatementSchema>;

export const KeyPolicySchema = z.strictObject({
  /**
   * The KMS keys that may use this external key. A request naming another kmsKeyArn is denied; a GetKeyMetadata
   * without one (KMS's CreateKey) is allowed only from a principal in the account of a bound KMS key.
   */
  kmsKeyArns: z.array(z.string().regex(/^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/, 'must be a KMS key ARN')).min(1).optional(),
  statements: z.array(PolicyStatementSchema).optional(),
});
export type KeyPolicy = z.infer<typeof KeyPolicySchema>;

/** What a decision is made on: the request's metadata, as KMS sent it (after SigV4 verified it). */
export interface PolicyRequest {
  keyId: string;
  awsPrincipalArn?: string | undefined;
  kmsKeyArn?: string | undefined;
  kmsOperation?: string | undefined;
  kmsViaService?: string | undefined;
  awsSourceVpc?: string | undefined;
  awsSourceVpce?: string | undefined;
}

export type Decision = { allowed: true; statement?: string } | { allowed: false; statement: string; reason: string };

interface CompiledStatement {
  sid: string;
  effect: 'Allow' | 'Deny';
  conditions: { field: keyof PolicyRequest; patterns: Pattern[] }[];
}

export interface CompiledPolicy {
  /** Whether any statement or binding exists at all (when none, every request is allowed without work). */
  empty: boolean;
  evaluate(req: PolicyRequest): Decision;
}

/** A compiled pattern: `test(value)` says whether the whole value matches. */
export interface Pattern {
  test(value: string): boolean;
}

/**
 * `*` any run of characters, `?` one character, everything else literal; whole-string match. Matched by one pass that
 * backtracks only to the last `*` (at most pattern length x value length steps): a regular expression built from the
 * pattern backtracks exponentially on principals like `a-a-a-...` against `*-*-*-admin/*` (1.7 s for 2,041 characters).
 */
export function wildcard(pattern: string): Pattern {
  return { test: (value) => globMatch(pattern, value) };
}

function globMatch(p: string, s: string): boolean {
  let pi = 0;
  let si = 0;
  let star = -1; // position of the last `*` seen in the pattern
  let mark = 0; // where in the value that `*` began to match
  while (si < s.length) {
    if (pi < p.length && (p[pi] === '?' || (p[pi] !== '*' && p[pi] === s[si]))) {
      pi++;
      si++;
    } else if (pi < p.length && p[pi] === '*') {
      star = pi++;
      mark = si;
    } else if (star !== -1) {
      // Let the last `*` take one more character and try the rest again.
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (p[pi] === '*') pi++;
  return pi === p.length;
}

function compileStatement(s: PolicyStatement): CompiledStatement {
  const conditions: CompiledStatement['conditions'] = [];
  const add = (field: keyof PolicyRequest, patterns: string[] | undefined) => {
    if (patterns) conditions.push({ field, patterns: patterns.map(wildcard) });
  };
  add('keyId', s.keys);
  add('awsPrincipalArn', s.principals);
  add('kmsOperation', s.kmsOperations);
  add('kmsViaService', s.viaServices);
  add('awsSourceVpc', s.sourceVpcs);
  add('awsSourceVpce', s.sourceVpces);
  return { sid: s.sid, effect: s.effect, conditions };
}

function matches(s: CompiledStatement, req: PolicyRequest): boolean {
  return s.conditions.every(({ field, patterns }) => {
    // An absent viaService is written NONE in policies (a call made to KMS directly).
    const value = req[field] ?? (field === 'kmsViaService' ? 'NONE' : undefined);
    return value !== undefined && patterns.some((p) => p.test(value));
  });
}

/** The ARN's partition and account ("aws-cn:123456789012"): account numbers are not unique across partitions. */
function accountOf(arn: string): string | undefined {
  const m = /^arn:(aws[a-z-]*):[a-z0-9-]+:[a-z0-9-]*:(\d{12}):/.exec(arn);
  return m ? `${m[1]}:${m[2]}` : undefined;
}

/**
 * IAM-style evaluation: a matching Deny wins; otherwise, when any Allow statement applies to the key, one of them
 * must match; with no statements at all, the request is allowed. The KMS key binding is checked first.
 */
export function compilePolicy(prefixStatements: PolicyStatement[] = [], keyPolicies: Record<string, KeyPolicy> = {}): CompiledPolicy {
  const prefix = prefixStatements.map(compileStatement);
  const perKey = new Map(
    Object.entries(keyPolicies).map(([id, p]) => [
      id,
      {
        arns: p.kmsKeyArns ? new Set(p.kmsKeyArns) : undefined,
        accounts: p.kmsKeyArns ? new Set(p.kmsKeyArns.map((a) => accountOf(a)!)) : undefined,
        statements: (p.statements ?? []).map(compileStatement),
      },
    ]),
  );
  const empty = prefix.length === 0 && perKey.size === 0;
  return {
    empty,
    evaluate(req) {
      if (empty) return { allowed: true };
      const key = perKey.get(req.keyId);
      if (key?.arns) {
        if (req.kmsKeyArn !== undefined) {
          if (!key.arns.has(req.kmsKeyArn)) {
            return { allowed: false, statement: `${req.keyId}.kmsKeyArns`, reason: 'the KMS key is not bound to this external key' };
          }
        } else {
          // GetKeyMetadata during KMS CreateKey names no KMS key yet: only the bound accounts may create one.
          const account = req.awsPrincipalArn ? accountOf(req.awsPrincipalArn) : undefined;
          if (!account || !key.accounts!.has(account)) {
            return { allowed: false, statement: `${req.keyId}.kmsKeyArns`, reason: 'the caller is not in the account of a KMS key bound to this external key' };
          }
        }
      }
      const applicable = [...prefix.filter((s) => matches1(s, 'keyId', req)), ...(key?.statements ?? [])];
      let allowedBy: string | undefined;
      let anyAllow = false;
      for (const s of applicable) {
        if (s.effect === 'Allow') anyAllow = true;
        if (!matches(s, req)) continue;
        if (s.effect === 'Deny') return { allowed: false, statement: s.sid, reason: 'denied by a policy statement' };
        allowedBy ??= s.sid;
      }
      if (anyAllow && !allowedBy) return { allowed: false, statement: '(no Allow matched)', reason: 'no policy statement allows this request' };
      return allowedBy ? { allowed: true, statement: allowedBy } : { allowed: true };
    },
  };
}

/** Whether a prefix statement covers the request's key at all (its `keys` condition only). */
function matches1(s: CompiledStatement, field: keyof PolicyRequest, req: PolicyRequest): boolean {
  const c = s.conditions.find((x) => x.field === field);
  return !c || c.patterns.some((p) => p.test(String(req[field])));
}
