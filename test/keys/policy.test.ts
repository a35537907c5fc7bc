// keys/policy.ts on its own (no proxy): the rules of docs/design.md "Authorization policies" with known answers. A
// matching Deny wins; when any Allow statement applies to the key, one of them must match; with no statements the
// request passes without work; a key bound to kmsKeyArns refuses any other KMS key, and a GetKeyMetadata naming no KMS
// key (KMS's CreateKey) only from a principal in a bound key's account. The wildcard matcher's own behaviour (time
// bound, random agreement with a regular expression) is in policy-wildcard.test.ts; here: what a policy writer relies on.
import { describe, expect, it } from 'vitest';
import { compilePolicy, KeyPolicySchema, PolicyStatementSchema, wildcard, type PolicyRequest, type PolicyStatement } from '../../src/keys/policy.js';

const ACCOUNT = '111122223333';
const OTHER_ACCOUNT = '444455556666';
const ADMIN = `arn:aws:iam::${ACCOUNT}:role/admin`;
const APP = `arn:aws:iam::${ACCOUNT}:role/app`;
const STRANGER = `arn:aws:iam::${OTHER_ACCOUNT}:role/admin`;
const BOUND = `arn:aws:kms:us-east-1:${ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab`;
const BOUND_2 = `arn:aws:kms:eu-west-1:${ACCOUNT}:key/99999999-12ab-34cd-56ef-1234567890ab`;
const UNBOUND = `arn:aws:kms:us-east-1:${OTHER_ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab`;

/** An Encrypt of key foo by ADMIN through its bound KMS key, made directly to KMS (no via service, no VPC). */
function request(overrides: Partial<PolicyRequest> = {}): PolicyRequest {
  return { keyId: 'foo', awsPrincipalArn: ADMIN, kmsKeyArn: BOUND, kmsOperation: 'Encrypt', ...overrides };
}

const allow = (sid: string, rest: Omit<PolicyStatement, 'sid' | 'effect'> = {}): PolicyStatement => ({ sid, effect: 'Allow', ...rest });
const deny = (sid: string, rest: Omit<PolicyStatement, 'sid' | 'effect'> = {}): PolicyStatement => ({ sid, effect: 'Deny', ...rest });

const DENIED_BY_STATEMENT = 'denied by a policy statement';
const NO_ALLOW = { allowed: false, statement: '(no Allow matched)', reason: 'no policy statement allows this request' };

describe('wildcard: what a policy writer relies on', () => {
  it.each([
    // Anchored at both ends: a pattern without * never matches a longer or shorter value.
    ['role/admin', 'xrole/admin', false],
    ['role/admin', 'role/adminx', false],
    ['role/admin', 'role/admin', true],
    [ADMIN, ADMIN, true],
    ['arn:aws:iam::*:role/admin', STRANGER, true],
    ['arn:aws:iam::111122223333:*', STRANGER, false],
    // `*` matches any run, the empty one and `/` and `:` included (IAM's ARN wildcards work the same).
    ['arn:aws:iam::111122223333:role/*', 'arn:aws:iam::111122223333:role/', true],
    ['arn:aws:iam::111122223333:role/*', 'arn:aws:iam::111122223333:role/path/to/app', true],
    ['*:role/admin', ADMIN, true],
    ['*admin*', ADMIN, true],
    ['*', 'anything at all', true],
    // `?` is exactly one character, never none, never two.
    ['Encrypt?', 'Encrypt', false],
    ['Encrypt?', 'EncryptX', true],
    ['Encrypt?', 'EncryptXY', false],
    ['???', 'abc', true],
    ['???', 'ab', false],
    ['?*', '', false],
    ['?*', 'a', true],
    // Every other character is itself: no regular-expression meaning leaks in.
    ['a.c', 'abc', false],
    ['a.c', 'a.c', true],
    ['a+', 'aaa', false],
    ['a+', 'a+', true],
    ['(a|b)', 'a', false],
    ['(a|b)', '(a|b)', true],
    ['[ab]', 'a', false],
    ['[ab]', '[ab]', true],
    ['^a$', 'a', false],
    ['^a$', '^a$', true],
    ['a{2}', 'aa', false],
    ['a{2}', 'a{2}', true],
    ['a\\d', 'a1', false],
    ['a\\d', 'a\\d', true],
    ['a\\*', 'a\\anything', true], // no escape character: a backslash is a backslash, and the * after it still a wildcard
    ['a\\*', 'a*', false],
    // Case matters (KMS sends kmsOperation as "Encrypt").
    ['encrypt', 'Encrypt', false],
    ['*crypt', 'Encrypt', true],
    ['*crypt', 'Decrypt', true],
    ['*crypt', 'ReEncryptFrom', false],
    ['ReEncrypt*', 'ReEncryptFrom', true],
  ])('%j against %j: %s', (pattern, value, expected) => {
    expect(wildcard(pattern).test(value)).toBe(expected);
  });
});

describe('no statements and no key policies', () => {
  it('is empty and allows every request, naming no statement', () => {
    const p = compilePolicy();
    expect(p.empty).toBe(true);
    expect(p.evaluate(request())).toEqual({ allowed: true });
    expect(p.evaluate({ keyId: 'anything' })).toEqual({ allowed: true });
    expect(compilePolicy([], {}).empty).toBe(true);
  });

  it('is not empty with one prefix statement, or one key policy, even one without statements', () => {
    expect(compilePolicy([allow('A')]).empty).toBe(false);
    expect(compilePolicy([], { foo: {} }).empty).toBe(false);
    expect(compilePolicy([], { foo: { statements: [] } }).empty).toBe(false);
  });

  it('a key policy with nothing in it allows (no binding, no Allow applies)', () => {
    expect(compilePolicy([], { foo: {} }).evaluate(request())).toEqual({ allowed: true });
    expect(compilePolicy([], { foo: { statements: [] } }).evaluate(request({ kmsKeyArn: UNBOUND }))).toEqual({ allowed: true });
  });
});

describe('Allow statements', () => {
  it('one that matches allows, and is named', () => {
    const p = compilePolicy([allow('Admins', { principals: [ADMIN] })]);
    expect(p.evaluate(request())).toEqual({ allowed: true, statement: 'Admins' });
  });

  it('when an Allow applies but none matches, the request is denied', () => {
    const p = compilePolicy([allow('Admins', { principals: [ADMIN] })]);
    expect(p.evaluate(request({ awsPrincipalArn: APP }))).toEqual(NO_ALLOW);
  });

  it('any one of several Allows is enough; the first that matches (in order) is named', () => {
    const p = compilePolicy([allow('Admins', { principals: [ADMIN] }), allow('Apps', { principals: [APP] }), allow('Everyone', { principals: ['*'] })]);
    expect(p.evaluate(request())).toEqual({ allowed: true, statement: 'Admins' });
    expect(p.evaluate(request({ awsPrincipalArn: APP }))).toEqual({ allowed: true, statement: 'Apps' });
    expect(p.evaluate(request({ awsPrincipalArn: STRANGER }))).toEqual({ allowed: true, statement: 'Everyone' });
  });

  it('an Allow without conditions matches every request', () => {
    expect(compilePolicy([allow('All')]).evaluate(request({ awsPrincipalArn: STRANGER, kmsOperation: 'Decrypt' }))).toEqual({ allowed: true, statement: 'All' });
  });

  it('conditions combine with AND across fields and OR within one', () => {
    const p = compilePolicy([allow('AdminsEncryptOrDecrypt', { principals: [ADMIN, APP], kmsOperations: ['Encrypt', 'Decrypt'] })]);
    expect(p.evaluate(request({ kmsOperation: 'Decrypt' })).allowed).toBe(true);
    expect(p.evaluate(request({ awsPrincipalArn: APP, kmsOperation: 'Encrypt' })).allowed).toBe(true);
    expect(p.evaluate(request({ kmsOperation: 'GenerateDataKey' }))).toEqual(NO_ALLOW);
    expect(p.evaluate(request({ awsPrincipalArn: STRANGER }))).toEqual(NO_ALLOW);
  });

  it('a condition on a field the request lacks does not match (an Allow on a VPC does not allow a request from none)', () => {
    const p = compilePolicy([allow('FromVpc', { sourceVpcs: ['vpc-*'] }), allow('FromEndpoint', { sourceVpces: ['vpce-1'] })]);
    expect(p.evaluate(request())).toEqual(NO_ALLOW);
    expect(p.evaluate(request({ awsSourceVpc: 'vpc-0a1b' }))).toEqual({ allowed: true, statement: 'FromVpc' });
    expect(p.evaluate(request({ awsSourceVpce: 'vpce-1' }))).toEqual({ allowed: true, statement: 'FromEndpoint' });
    expect(p.evaluate(request({ awsSourceVpce: 'vpce-2' }))).toEqual(NO_ALLOW);
    // No principal at all: a principal condition, even "*", does not match.
    expect(compilePolicy([allow('Anyone', { principals: ['*'] })]).evaluate(request({ awsPrincipalArn: undefined }))).toEqual(NO_ALLOW);
  });

  it('a request made directly to KMS has viaService NONE; one through a service has its name', () => {
    const direct = compilePolicy([allow('DirectOnly', { viaServices: ['NONE'] })]);
    expect(direct.evaluate(request())).toEqual({ allowed: true, statement: 'DirectOnly' });
    expect(direct.evaluate(request({ kmsViaService: 'ec2.us-east-1.amazonaws.com' }))).toEqual(NO_ALLOW);
    const ec2 = compilePolicy([allow('ThroughEc2', { viaServices: ['ec2.*.amazonaws.com'] })]);
    expect(ec2.evaluate(request({ kmsViaService: 'ec2.us-east-1.amazonaws.com' }))).toEqual({ allowed: true, statement: 'ThroughEc2' });
    expect(ec2.evaluate(request())).toEqual(NO_ALLOW);
    expect(compilePolicy([allow('AnyVia', { viaServices: ['*'] })]).evaluate(request()).allowed, '"*" matches NONE too').toBe(true);
  });

  it('operations match by wildcard', () => {
    const p = compilePolicy([allow('Crypt', { kmsOperations: ['*crypt', 'GenerateDataKey*'] })]);
    for (const op of ['Encrypt', 'Decrypt', 'GenerateDataKey', 'GenerateDataKeyWithoutPlaintext']) expect(p.evaluate(request({ kmsOperation: op })).allowed, op).toBe(true);
    for (const op of ['DescribeKey', 'CreateKey', 'ReEncryptFrom']) expect(p.evaluate(request({ kmsOperation: op })), op).toEqual(NO_ALLOW);
    expect(p.evaluate(request({ kmsOperation: undefined })), 'no operation').toEqual(NO_ALLOW);
  });
});

describe('Deny statements', () => {
  it('a matching Deny denies, and is named', () => {
    const p = compilePolicy([deny('NoStrangers', { principals: [`arn:aws:iam::${OTHER_ACCOUNT}:*`] })]);
    expect(p.evaluate(request({ awsPrincipalArn: STRANGER }))).toEqual({ allowed: false, statement: 'NoStrangers', reason: DENIED_BY_STATEMENT });
  });

  it('a Deny that does not match, with no Allow at all, allows without naming a statement', () => {
    const p = compilePolicy([deny('NoStrangers', { principals: [`arn:aws:iam::${OTHER_ACCOUNT}:*`] })]);
    expect(p.evaluate(request())).toEqual({ allowed: true });
  });

  it('wins over a matching Allow, whichever comes first', () => {
    const allowAll = allow('AllowAll');
    const denyDecrypt = deny('NoDecrypt', { kmsOperations: ['Decrypt'] });
    for (const statements of [
      [allowAll, denyDecrypt],
      [denyDecrypt, allowAll],
    ]) {
      const p = compilePolicy(statements);
      expect(p.evaluate(request({ kmsOperation: 'Decrypt' }))).toEqual({ allowed: false, statement: 'NoDecrypt', reason: DENIED_BY_STATEMENT });
      expect(p.evaluate(request({ kmsOperation: 'Encrypt' }))).toEqual({ allowed: true, statement: 'AllowAll' });
    }
  });

  it('the first matching Deny is named', () => {
    const p = compilePolicy([deny('First', { principals: [ADMIN] }), deny('Second', { principals: ['*'] })]);
    expect(p.evaluate(request())).toMatchObject({ allowed: false, statement: 'First' });
    expect(p.evaluate(request({ awsPrincipalArn: APP }))).toMatchObject({ allowed: false, statement: 'Second' });
  });

  it('a Deny is told from a lack of Allow by statement and reason', () => {
    const p = compilePolicy([allow('Admins', { principals: [ADMIN] }), deny('NoReEncrypt', { kmsOperations: ['ReEncrypt*'] })]);
    expect(p.evaluate(request({ kmsOperation: 'ReEncryptTo' }))).toEqual({ allowed: false, statement: 'NoReEncrypt', reason: DENIED_BY_STATEMENT });
    expect(p.evaluate(request({ awsPrincipalArn: APP }))).toEqual(NO_ALLOW);
  });

  it('a Deny without conditions denies everything it applies to', () => {
    expect(compilePolicy([deny('Nothing')]).evaluate(request())).toEqual({ allowed: false, statement: 'Nothing', reason: DENIED_BY_STATEMENT });
  });
});

describe('prefix statements and per-key policies', () => {
  it('a prefix statement with keys covers only those keys (wildcards allowed), one without keys covers all', () => {
    const p = compilePolicy([allow('FooOnlyAdmins', { keys: ['foo'], principals: [ADMIN] }), deny('NoTmpDecrypt', { keys: ['tmp-*'], kmsOperations: ['Decrypt'] })]);
    expect(p.evaluate(request({ awsPrincipalArn: APP }))).toEqual(NO_ALLOW);
    // bar: no Allow applies to it (the only Allow names foo), so it is allowed.
    expect(p.evaluate(request({ keyId: 'bar', awsPrincipalArn: APP }))).toEqual({ allowed: true });
    expect(p.evaluate(request({ keyId: 'tmp-1', kmsOperation: 'Decrypt' }))).toMatchObject({ allowed: false, statement: 'NoTmpDecrypt' });
    expect(p.evaluate(request({ keyId: 'tmp-1', kmsOperation: 'Encrypt' }))).toEqual({ allowed: true });
    expect(p.evaluate(request({ keyId: 'foo', kmsOperation: 'Decrypt' }))).toEqual({ allowed: true, statement: 'FooOnlyAdmins' });
    const all = compilePolicy([allow('OnlyAdmins', { principals: [ADMIN] })]);
    for (const keyId of ['foo', 'bar', 'x']) expect(all.evaluate(request({ keyId, awsPrincipalArn: APP })), keyId).toEqual(NO_ALLOW);
  });

  it('key ids in keys are matched whole (foo does not cover foo2 or xfoo)', () => {
    const p = compilePolicy([deny('NoFoo', { keys: ['foo'] })]);
    expect(p.evaluate(request({ keyId: 'foo' })).allowed).toBe(false);
    expect(p.evaluate(request({ keyId: 'foo2' })).allowed).toBe(true);
    expect(p.evaluate(request({ keyId: 'xfoo' })).allowed).toBe(true);
    expect(compilePolicy([deny('NoFooDot', { keys: ['foo.*'] })]).evaluate(request({ keyId: 'fooX1' })).allowed, '. is literal').toBe(true);
  });

  it("a key's statements apply to that key only", () => {
    const p = compilePolicy([], { foo: { statements: [allow('FooAdmins', { principals: [ADMIN] })] } });
    expect(p.evaluate(request())).toEqual({ allowed: true, statement: 'FooAdmins' });
    expect(p.evaluate(request({ awsPrincipalArn: APP }))).toEqual(NO_ALLOW);
    expect(p.evaluate(request({ keyId: 'bar', awsPrincipalArn: APP }))).toEqual({ allowed: true });
    // Matched by exact id, not as a pattern, and never through the prototype of a plain object.
    expect(compilePolicy([], { 'f*': { statements: [deny('D')] } }).evaluate(request()).allowed).toBe(true);
    expect(p.evaluate(request({ keyId: 'constructor', awsPrincipalArn: APP }))).toEqual({ allowed: true });
    expect(p.evaluate(request({ keyId: '__proto__', awsPrincipalArn: APP }))).toEqual({ allowed: true });
  });

  it('prefix and key statements are evaluated together: a Deny in either wins', () => {
    const prefixDeny = compilePolicy([deny('NoApp', { principals: [APP] })], { foo: { statements: [allow('FooAll')] } });
    expect(prefixDeny.evaluate(request({ awsPrincipalArn: APP }))).toMatchObject({ allowed: false, statement: 'NoApp' });
    expect(prefixDeny.evaluate(request())).toEqual({ allowed: true, statement: 'FooAll' });
    const keyDeny = compilePolicy([allow('PrefixAll')], { foo: { statements: [deny('FooNoApp', { principals: [APP] })] } });
    expect(keyDeny.evaluate(request({ awsPrincipalArn: APP }))).toMatchObject({ allowed: false, statement: 'FooNoApp' });
    expect(keyDeny.evaluate(request())).toEqual({ allowed: true, statement: 'PrefixAll' });
    expect(keyDeny.evaluate(request({ keyId: 'bar', awsPrincipalArn: APP }))).toEqual({ allowed: true, statement: 'PrefixAll' });
  });

  it('an Allow in either is enough, and one applying in either means one must match; prefix statements come first', () => {
    const p = compilePolicy([allow('PrefixAdmins', { principals: [ADMIN] })], { foo: { statements: [allow('FooApps', { principals: [APP] })] } });
    expect(p.evaluate(request())).toEqual({ allowed: true, statement: 'PrefixAdmins' });
    expect(p.evaluate(request({ awsPrincipalArn: APP }))).toEqual({ allowed: true, statement: 'FooApps' });
    expect(p.evaluate(request({ awsPrincipalArn: STRANGER }))).toEqual(NO_ALLOW);
    expect(p.evaluate(request({ keyId: 'bar', awsPrincipalArn: APP }))).toEqual(NO_ALLOW);
    const both = compilePolicy([allow('PrefixAll')], { foo: { statements: [allow('FooAll')] } });
    expect(both.evaluate(request())).toEqual({ allowed: true, statement: 'PrefixAll' });
  });

  it('a key policy with only a Deny lets a prefix Allow decide the rest', () => {
    const p = compilePolicy([allow('Admins', { principals: [ADMIN] })], { foo: { statements: [deny('FooNoDecrypt', { kmsOperations: ['Decrypt'] })] } });
    expect(p.evaluate(request())).toEqual({ allowed: true, statement: 'Admins' });
    expect(p.evaluate(request({ kmsOperation: 'Decrypt' }))).toMatchObject({ allowed: false, statement: 'FooNoDecrypt' });
    expect(p.evaluate(request({ awsPrincipalArn: APP }))).toEqual(NO_ALLOW);
  });
});

describe('kmsKeyArns: the KMS keys bound to an external key', () => {
  const BINDING = 'foo.kmsKeyArns';
  const NOT_BOUND = { allowed: false, statement: BINDING, reason: 'the KMS key is not bound to this external key' };
  const NOT_ACCOUNT = { allowed: false, statement: BINDING, reason: 'the caller is not in the account of a KMS key bound to this external key' };

  it('a bound KMS key is allowed (no statement decided), any other is denied by the binding', () => {
    const p = compilePolicy([], { foo: { kmsKeyArns: [BOUND, BOUND_2] } });
    expect(p.evaluate(request())).toEqual({ allowed: true });
    expect(p.evaluate(request({ kmsKeyArn: BOUND_2 }))).toEqual({ allowed: true });
    expect(p.evaluate(request({ kmsKeyArn: UNBOUND }))).toEqual(NOT_BOUND);
    // Exact ARNs: another key id in the same account and region, or a changed case, is another key.
    expect(p.evaluate(request({ kmsKeyArn: BOUND.replace('1234abcd', '1234abce') }))).toEqual(NOT_BOUND);
    expect(p.evaluate(request({ kmsKeyArn: BOUND.toUpperCase() }))).toEqual(NOT_BOUND);
    expect(p.evaluate(request({ kmsKeyArn: '' }))).toEqual(NOT_BOUND);
  });

  it('binds only its own key: another external key takes any KMS key', () => {
    const p = compilePolicy([], { foo: { kmsKeyArns: [BOUND] } });
    expect(p.evaluate(request({ keyId: 'bar', kmsKeyArn: UNBOUND }))).toEqual({ allowed: true });
  });

  it('is checked before the statements: a matching Allow does not let another KMS key in', () => {
    const p = compilePolicy([allow('All')], { foo: { kmsKeyArns: [BOUND], statements: [allow('FooAll')] } });
    expect(p.evaluate(request({ kmsKeyArn: UNBOUND }))).toEqual(NOT_BOUND);
    expect(p.evaluate(request())).toEqual({ allowed: true, statement: 'All' });
  });

  it('a bound KMS key still goes through the statements (a Deny still wins, an Allow must still match)', () => {
    const p = compilePolicy([deny('NoApp', { principals: [APP] })], { foo: { kmsKeyArns: [BOUND], statements: [allow('Admins', { principals: [ADMIN] })] } });
    expect(p.evaluate(request({ awsPrincipalArn: APP }))).toMatchObject({ allowed: false, statement: 'NoApp' });
    expect(p.evaluate(request({ awsPrincipalArn: `arn:aws:iam::${ACCOUNT}:role/other` }))).toEqual(NO_ALLOW);
    expect(p.evaluate(request())).toEqual({ allowed: true, statement: 'Admins' });
  });

  describe('GetKeyMetadata without a kmsKeyArn (KMS CreateKey)', () => {
    const createKey = (awsPrincipalArn: string | undefined) => request({ kmsKeyArn: undefined, kmsOperation: 'CreateKey', awsPrincipalArn });

    it("is allowed from any principal of a bound key's account", () => {
      const p = compilePolicy([], { foo: { kmsKeyArns: [BOUND] } });
      expect(p.evaluate(createKey(ADMIN))).toEqual({ allowed: true });
      expect(p.evaluate(createKey(`arn:aws:sts::${ACCOUNT}:assumed-role/KmsAdmin/session-1`))).toEqual({ allowed: true });
      expect(p.evaluate(createKey(`arn:aws:iam::${ACCOUNT}:root`))).toEqual({ allowed: true });
      expect(p.evaluate(createKey(`arn:aws:iam::${ACCOUNT}:user/path/to/alice`))).toEqual({ allowed: true });
    });

    it('is denied from another account: the confused deputy cannot create its own KMS key over ours', () => {
      const p = compilePolicy([allow('Everyone')], { foo: { kmsKeyArns: [BOUND] } });
      expect(p.evaluate(createKey(STRANGER))).toEqual(NOT_ACCOUNT);
      expect(p.evaluate(createKey(`arn:aws:sts::${OTHER_ACCOUNT}:assumed-role/x/y`))).toEqual(NOT_ACCOUNT);
    });

    it('is denied without a principal, or with one whose account cannot be read', () => {
      const p = compilePolicy([], { foo: { kmsKeyArns: [BOUND] } });
      expect(p.evaluate(createKey(undefined))).toEqual(NOT_ACCOUNT);
      expect(p.evaluate(createKey(''))).toEqual(NOT_ACCOUNT);
      expect(p.evaluate(createKey('not an arn'))).toEqual(NOT_ACCOUNT);
      expect(p.evaluate(createKey(`arn:aws:iam::${ACCOUNT}1:role/admin`)), '13 digits').toEqual(NOT_ACCOUNT);
      expect(p.evaluate(createKey(`arn:aws:iam::${ACCOUNT.slice(1)}:role/admin`)), '11 digits').toEqual(NOT_ACCOUNT);
      expect(p.evaluate(createKey(`role/admin:${ACCOUNT}:`)), 'the account must be the ARN field').toEqual(NOT_ACCOUNT);
    });

    it('takes the account of every bound key', () => {
      const otherAccountKey = `arn:aws:kms:us-east-1:${OTHER_ACCOUNT}:key/abcd`;
      const p = compilePolicy([], { foo: { kmsKeyArns: [BOUND, otherAccountKey] } });
      expect(p.evaluate(createKey(ADMIN))).toEqual({ allowed: true });
      expect(p.evaluate(createKey(STRANGER))).toEqual({ allowed: true });
      expect(p.evaluate(createKey('arn:aws:iam::777788889999:role/admin'))).toEqual(NOT_ACCOUNT);
    });

    it('reads the account in other partitions too', () => {
      const cn = `arn:aws-cn:kms:cn-north-1:${ACCOUNT}:key/abcd`;
      const p = compilePolicy([], { foo: { kmsKeyArns: [cn] } });
      expect(p.evaluate(createKey(`arn:aws-cn:iam::${ACCOUNT}:role/admin`))).toEqual({ allowed: true });
      expect(p.evaluate(createKey(`arn:aws-cn:iam::${OTHER_ACCOUNT}:role/admin`))).toEqual(NOT_ACCOUNT);
    });

    it('takes an account in another partition for another account, whatever its number', () => {
      const p = compilePolicy([], { foo: { kmsKeyArns: [BOUND] } });
      expect(p.evaluate(createKey(`arn:aws-cn:iam::${ACCOUNT}:role/admin`))).toEqual(NOT_ACCOUNT);
      expect(p.evaluate(createKey(`arn:aws-us-gov:iam::${ACCOUNT}:role/admin`))).toEqual(NOT_ACCOUNT);
      const gov = compilePolicy([], { foo: { kmsKeyArns: [`arn:aws-us-gov:kms:us-gov-west-1:${ACCOUNT}:key/abcd`] } });
      expect(gov.evaluate(createKey(`arn:aws-us-gov:iam::${ACCOUNT}:role/admin`))).toEqual({ allowed: true });
      expect(gov.evaluate(createKey(ADMIN))).toEqual(NOT_ACCOUNT);
    });

    it('then the statements decide as for any request', () => {
      const p = compilePolicy([deny('NoCreateKey', { kmsOperations: ['CreateKey'], principals: [`arn:aws:iam::${ACCOUNT}:role/app`] })], { foo: { kmsKeyArns: [BOUND] } });
      expect(p.evaluate(createKey(APP))).toMatchObject({ allowed: false, statement: 'NoCreateKey' });
      expect(p.evaluate(createKey(ADMIN))).toEqual({ allowed: true });
    });

    it('is not restricted on a key without a binding', () => {
      const p = compilePolicy([], { foo: { statements: [allow('All')] } });
      expect(p.evaluate(createKey(STRANGER))).toEqual({ allowed: true, statement: 'All' });
      expect(p.evaluate(createKey(undefined))).toEqual({ allowed: true, statement: 'All' });
    });
  });
});

describe('the schemas', () => {
  it('take a statement with a valid sid and effect, and refuse unknown fields, empty pattern lists and empty patterns', () => {
    expect(PolicyStatementSchema.safeParse({ sid: 'Allow_admins.1-x', effect: 'Allow', principals: [ADMIN] }).success).toBe(true);
    expect(PolicyStatementSchema.safeParse({ sid: 'has space', effect: 'Allow' }).success).toBe(false);
    expect(PolicyStatementSchema.safeParse({ sid: 'x'.repeat(65), effect: 'Allow' }).success).toBe(false);
    expect(PolicyStatementSchema.safeParse({ sid: 'A', effect: 'allow' }).success).toBe(false);
    expect(PolicyStatementSchema.safeParse({ sid: 'A', effect: 'Allow', principal: [ADMIN] }).success, 'a misspelt field').toBe(false);
    expect(PolicyStatementSchema.safeParse({ sid: 'A', effect: 'Allow', principals: [] }).success).toBe(false);
    expect(PolicyStatementSchema.safeParse({ sid: 'A', effect: 'Allow', principals: [''] }).success).toBe(false);
  });

  it('take KMS key ARNs only in kmsKeyArns, at least one', () => {
    expect(KeyPolicySchema.safeParse({ kmsKeyArns: [BOUND, `arn:aws-us-gov:kms:us-gov-west-1:${ACCOUNT}:key/abcd`] }).success).toBe(true);
    expect(KeyPolicySchema.safeParse({ kmsKeyArns: [] }).success).toBe(false);
    expect(KeyPolicySchema.safeParse({ kmsKeyArns: [ADMIN] }).success).toBe(false);
    expect(KeyPolicySchema.safeParse({ kmsKeyArns: [`arn:aws:kms:us-east-1:${ACCOUNT}:key/*`] }).success, 'no wildcards').toBe(false);
    expect(KeyPolicySchema.safeParse({ kmsKeyArns: [`arn:aws:kms:us-east-1:${ACCOUNT}:alias/x`] }).success, 'no aliases').toBe(false);
  });
});
