// Secondary authorization through a real proxy: per-prefix statements (principal exact and wildcard, kmsOperation,
// kmsViaService, VPC endpoint), the binding of an external key to KMS key ARNs (the confused-deputy case), the
// decision logged with the statement that made it, the place of the check in the order (404 before 403 before 400),
// and health never subject to policy.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACCESS_KEY_ID, REGION, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields, xksClient, type XksResponse } from '../helpers/xks-client.js';

const ACCOUNT = '111122223333';
const OTHER_ACCOUNT = '999988887777';
const PARTNER_ACCOUNT = '444455556666';
const BOUND_ARN = `arn:aws:kms:us-east-1:${ACCOUNT}:key/11111111-2222-3333-4444-555555555555`;
const SECOND_BOUND_ARN = `arn:aws:kms:eu-west-1:${ACCOUNT}:key/66666666-7777-8888-9999-000000000000`;
const UNBOUND_SAME_ACCOUNT = `arn:aws:kms:us-east-1:${ACCOUNT}:key/aaaaaaaa-0000-0000-0000-000000000000`;
const UNBOUND_OTHER_ACCOUNT = `arn:aws:kms:us-east-1:${OTHER_ACCOUNT}:key/11111111-2222-3333-4444-555555555555`;

const user = (account: string, name: string) => `arn:aws:iam::${account}:user/${name}`;
const role = (account: string, name: string) => `arn:aws:iam::${account}:role/${name}`;

const credentials = [{ accessKeyId: ACCESS_KEY_ID, secret: { file: 'secret1' } }];

let t: TestProxy;
/** An encrypt response of `foo` (version 1), for decrypt requests. */
let sample: any;

beforeAll(async () => {
  t = await startProxyOnToken({
    config: {
      prefixes: [
        // No policy at all: the control.
        { path: 'open', region: REGION, credentials },
        {
          path: 'principals',
          region: REGION,
          credentials,
          policy: [
            { sid: 'AllowAlice', effect: 'Allow', principals: [user(ACCOUNT, 'Alice')] },
            { sid: 'AllowApps', effect: 'Allow', principals: [role(ACCOUNT, 'app-*')], kmsOperations: ['Encrypt', 'GenerateDataKey*'] },
            { sid: 'AllowPartnerViaEbs', effect: 'Allow', principals: [`arn:aws:iam::${PARTNER_ACCOUNT}:*`], viaServices: ['ebs.*.amazonaws.com'] },
            { sid: 'AllowBatchByVpce', effect: 'Allow', principals: [role(ACCOUNT, 'batch-??')], sourceVpces: ['vpce-0a1b2c3d'] },
            { sid: 'DenyTemp', effect: 'Deny', principals: [role(ACCOUNT, 'app-temp*')] },
            { sid: 'DenyOutsideDirect', effect: 'Deny', principals: [user(ACCOUNT, 'Alice')], kmsOperations: ['ReEncrypt*'], viaServices: ['NONE'] },
          ],
        },
        {
          path: 'bound',
          region: REGION,
          credentials,
          keyPolicies: { foo: { kmsKeyArns: [BOUND_ARN, SECOND_BOUND_ARN] } },
        },
        {
          path: 'closed',
          region: REGION,
          credentials,
          policy: [{ sid: 'DenyEverything', effect: 'Deny' }],
        },
      ],
    },
    keys: {
      foo: { encrypt: true, decrypt: true },
      bar: { encrypt: true, decrypt: true },
      off: { encrypt: true, decrypt: true },
      encrypt_only: { encrypt: true, decrypt: false },
    },
  });
  await t.proxy.lifecycle.disable('off');
  const enc = await xksClient(t.httpUrl, { prefix: 'open' }).encrypt('foo', Buffer.from('policy sample'));
  expect(enc.status, enc.text).toBe(200);
  sample = enc.json;
});

afterAll(async () => t?.stop());

let n = 0;
interface Meta {
  awsPrincipalArn: string;
  kmsKeyArn?: string;
  kmsOperation?: string;
  kmsViaService?: string;
  awsSourceVpc?: string;
  awsSourceVpce?: string;
}

/**
 * One request on `prefix`; `meta` replaces the defaults field by field. Encrypt and decrypt name a bound KMS key unless
 * told otherwise (the XKS schema requires awsPrincipalArn and kmsKeyArn there); GetKeyMetadata names none.
 */
async function call(prefix: string, op: 'encrypt' | 'decrypt' | 'metadata', key: string, meta: Meta): Promise<XksResponse & { id: string }> {
  const id = `pol-${++n}`;
  const requestMetadata = {
    kmsRequestId: id,
    kmsOperation: op === 'encrypt' ? 'Encrypt' : op === 'decrypt' ? 'Decrypt' : 'CreateKey',
    ...(op === 'metadata' ? {} : { kmsKeyArn: BOUND_ARN }),
    ...meta,
  };
  const body =
    op === 'encrypt'
      ? { requestMetadata, plaintext: Buffer.from('hello').toString('base64'), encryptionAlgorithm: 'AES_GCM' }
      : op === 'decrypt'
        ? { requestMetadata, encryptionAlgorithm: 'AES_GCM', ...decryptFields(sample) }
        : { requestMetadata };
  const r = await xksClient(t.httpUrl, { prefix }).post(`keys/${key}/${op}`, body);
  return Object.assign(r, { id });
}

/** The request log line of a request. */
function logOf(id: string): any {
  const found = t.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'xks request' && l.kmsRequestId === id);
  expect(found, id).toHaveLength(1);
  return found[0];
}

function expectDenied(r: XksResponse & { id: string }, statement: string) {
  expect(r.status, r.text).toBe(403);
  expect(r.json.errorName).toBe('AccessDeniedException');
  expect(typeof r.json.errorMessage).toBe('string');
  expect(r.text).not.toContain('\n');
  const log = logOf(r.id);
  expect(log).toMatchObject({ status: 403, errorName: 'AccessDeniedException', policy: statement, outcome: 'error' });
  expect(log.reason).toMatch(/^policy: /);
}

function expectAllowed(r: XksResponse & { id: string }, statement?: string) {
  expect(r.status, r.text).toBe(200);
  if (statement) expect(logOf(r.id).policy).toBe(statement);
}

describe('principals, operations, via service, VPC endpoint', () => {
  it('an exact principal is allowed for every operation; another principal, even with the same prefix, is not', async () => {
    expectAllowed(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: user(ACCOUNT, 'Alice') }), 'AllowAlice');
    expectAllowed(await call('principals', 'decrypt', 'foo', { awsPrincipalArn: user(ACCOUNT, 'Alice') }), 'AllowAlice');
    expectAllowed(await call('principals', 'metadata', 'foo', { awsPrincipalArn: user(ACCOUNT, 'Alice') }), 'AllowAlice');
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: user(ACCOUNT, 'Bob') }), '(no Allow matched)');
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: user(ACCOUNT, 'Alice2') }), '(no Allow matched)');
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: user(OTHER_ACCOUNT, 'Alice') }), '(no Allow matched)');
    // A service principal (how AWS services call) is not a user's ARN.
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: 'ec2.amazonaws.com' }), '(no Allow matched)');
  });

  it('a wildcard principal with an operation condition: Encrypt and GenerateDataKey*, not Decrypt', async () => {
    const app = role(ACCOUNT, 'app-web');
    expectAllowed(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: app }), 'AllowApps');
    expectAllowed(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: app, kmsOperation: 'GenerateDataKeyWithoutPlaintext' }), 'AllowApps');
    expectDenied(await call('principals', 'decrypt', 'foo', { awsPrincipalArn: app }), '(no Allow matched)');
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: app, kmsOperation: 'ReEncrypt' }), '(no Allow matched)');
    // The wildcard is anchored: a role merely containing "app-" elsewhere is not covered.
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: role(ACCOUNT, 'my-app-web') }), '(no Allow matched)');
  });

  it('a Deny wins over an Allow that also matches', async () => {
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: role(ACCOUNT, 'app-temp-42') }), 'DenyTemp');
    expectDenied(
      await call('principals', 'encrypt', 'foo', { awsPrincipalArn: user(ACCOUNT, 'Alice'), kmsOperation: 'ReEncryptTo' }),
      'DenyOutsideDirect',
    );
    // The same ReEncrypt through a service is not what that Deny covers.
    expectAllowed(
      await call('principals', 'encrypt', 'foo', { awsPrincipalArn: user(ACCOUNT, 'Alice'), kmsOperation: 'ReEncryptTo', kmsViaService: 's3.us-east-1.amazonaws.com' }),
      'AllowAlice',
    );
  });

  it('a via-service condition: the partner account only through EBS', async () => {
    const partner = role(PARTNER_ACCOUNT, 'ec2-host');
    expectAllowed(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: partner, kmsViaService: 'ebs.us-east-1.amazonaws.com' }), 'AllowPartnerViaEbs');
    expectAllowed(await call('principals', 'decrypt', 'foo', { awsPrincipalArn: partner, kmsViaService: 'ebs.eu-west-1.amazonaws.com' }), 'AllowPartnerViaEbs');
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: partner, kmsViaService: 'rds.us-east-1.amazonaws.com' }), '(no Allow matched)');
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: partner }), '(no Allow matched)');
  });

  it('a VPC endpoint condition with a ? wildcard principal', async () => {
    expectAllowed(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: role(ACCOUNT, 'batch-01'), awsSourceVpce: 'vpce-0a1b2c3d' }), 'AllowBatchByVpce');
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: role(ACCOUNT, 'batch-01'), awsSourceVpce: 'vpce-ffffffff' }), '(no Allow matched)');
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: role(ACCOUNT, 'batch-001'), awsSourceVpce: 'vpce-0a1b2c3d' }), '(no Allow matched)');
    expectDenied(await call('principals', 'encrypt', 'foo', { awsPrincipalArn: role(ACCOUNT, 'batch-01') }), '(no Allow matched)');
  });

  it('the same requests on a prefix without policy are all allowed', async () => {
    for (const p of [user(ACCOUNT, 'Bob'), role(ACCOUNT, 'app-temp-42'), 'ec2.amazonaws.com']) {
      const r = await call('open', 'decrypt', 'foo', { awsPrincipalArn: p });
      expect(r.status, r.text).toBe(200);
      expect(logOf(r.id).policy).toBeUndefined();
    }
  });
});

describe('binding an external key to KMS keys (kmsKeyArns)', () => {
  const alice = user(ACCOUNT, 'Alice');

  it('the bound KMS keys may encrypt and decrypt', async () => {
    expectAllowed(await call('bound', 'encrypt', 'foo', { awsPrincipalArn: alice, kmsKeyArn: BOUND_ARN }));
    expectAllowed(await call('bound', 'decrypt', 'foo', { awsPrincipalArn: alice, kmsKeyArn: SECOND_BOUND_ARN }));
    expectAllowed(await call('bound', 'metadata', 'foo', { awsPrincipalArn: alice, kmsKeyArn: BOUND_ARN, kmsOperation: 'DescribeKey' }));
  });

  it('another KMS key, in the same account or another one, is denied', async () => {
    expectDenied(await call('bound', 'encrypt', 'foo', { awsPrincipalArn: alice, kmsKeyArn: UNBOUND_SAME_ACCOUNT }), 'foo.kmsKeyArns');
    expectDenied(await call('bound', 'decrypt', 'foo', { awsPrincipalArn: user(OTHER_ACCOUNT, 'Eve'), kmsKeyArn: UNBOUND_OTHER_ACCOUNT }), 'foo.kmsKeyArns');
    const log = logOf((await call('bound', 'encrypt', 'foo', { awsPrincipalArn: alice, kmsKeyArn: UNBOUND_SAME_ACCOUNT })).id);
    expect(log.reason).toMatch(/not bound/);
    expect(log.kmsKeyArn).toBe(UNBOUND_SAME_ACCOUNT);
  });

  it('GetKeyMetadata without a kmsKeyArn (KMS CreateKey): only from the account of a bound key', async () => {
    // Another account trying to create its own KMS key over our external key: the confused deputy.
    expectDenied(await call('bound', 'metadata', 'foo', { awsPrincipalArn: user(OTHER_ACCOUNT, 'Eve') }), 'foo.kmsKeyArns');
    expectDenied(await call('bound', 'metadata', 'foo', { awsPrincipalArn: 'ec2.amazonaws.com' }), 'foo.kmsKeyArns');
    const ok = await call('bound', 'metadata', 'foo', { awsPrincipalArn: role(ACCOUNT, 'kms-admin') });
    expectAllowed(ok);
    expect(ok.json).toMatchObject({ keySpec: 'AES_256', keyStatus: 'ENABLED' });
  });

  it('binds only its own key: another external key of the prefix takes any KMS key', async () => {
    expectAllowed(await call('bound', 'encrypt', 'bar', { awsPrincipalArn: alice, kmsKeyArn: UNBOUND_OTHER_ACCOUNT }));
    expectAllowed(await call('bound', 'metadata', 'bar', { awsPrincipalArn: user(OTHER_ACCOUNT, 'Eve') }));
  });
});

describe('the order of checks, and health', () => {
  const closed = { awsPrincipalArn: user(ACCOUNT, 'Alice'), kmsKeyArn: BOUND_ARN };

  it('a Deny-everything statement denies every key operation, logged with its sid', async () => {
    expectDenied(await call('closed', 'encrypt', 'foo', closed), 'DenyEverything');
    expectDenied(await call('closed', 'decrypt', 'foo', closed), 'DenyEverything');
    expectDenied(await call('closed', 'metadata', 'foo', closed), 'DenyEverything');
  });

  it('an unknown key is 404 KeyNotFoundException even where the policy would deny', async () => {
    for (const prefix of ['closed', 'principals', 'bound']) {
      const r = await call(prefix, 'encrypt', 'no-such-key', { awsPrincipalArn: user(OTHER_ACCOUNT, 'Eve'), kmsKeyArn: UNBOUND_OTHER_ACCOUNT });
      expect(r.status, `${prefix}: ${r.text}`).toBe(404);
      expect(r.json.errorName).toBe('KeyNotFoundException');
    }
  });

  it('a denied request on a disabled key is 403, not 400; allowed, it is 400 InvalidStateException', async () => {
    expectDenied(await call('closed', 'encrypt', 'off', closed), 'DenyEverything');
    expectDenied(await call('principals', 'decrypt', 'off', { awsPrincipalArn: user(ACCOUNT, 'Bob') }), '(no Allow matched)');
    const allowed = await call('principals', 'encrypt', 'off', { awsPrincipalArn: user(ACCOUNT, 'Alice') });
    expect(allowed.status, allowed.text).toBe(400);
    expect(allowed.json.errorName).toBe('InvalidStateException');
  });

  it('a denied request for a usage the key lacks is 403, not 400 InvalidKeyUsageException', async () => {
    expectDenied(await call('closed', 'decrypt', 'encrypt_only', closed), 'DenyEverything');
    const open = await call('open', 'decrypt', 'encrypt_only', closed);
    expect(open.status, open.text).toBe(400);
    expect(open.json.errorName).toBe('InvalidKeyUsageException');
  });

  it('signature (401) and body shape (400) come before the policy', async () => {
    const xks = xksClient(t.httpUrl, { prefix: 'closed' });
    const badSig = await xks.post('keys/foo/encrypt', { requestMetadata: closed, plaintext: 'aGVsbG8=', encryptionAlgorithm: 'AES_GCM' }, {
      secret: 'WrongSecretWrongSecretWrongSecretWrongSecret0',
    });
    expect(badSig.status).toBe(401);
    expect(badSig.json.errorName).toBe('AuthenticationFailedException');
    const badBody = await xks.post('keys/foo/encrypt', { requestMetadata: { ...closed, kmsRequestId: 'x', kmsOperation: 'Encrypt' }, encryptionAlgorithm: 'AES_GCM' });
    expect(badBody.status).toBe(400);
    expect(badBody.json.errorName).toBe('ValidationException');
  });

  it('health is never denied, even by a Deny-everything statement', async () => {
    for (const prefix of ['closed', 'principals', 'bound']) {
      const r = await xksClient(t.httpUrl, { prefix }).health();
      expect(r.status, `${prefix}: ${r.text}`).toBe(200);
      expect(r.json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
    }
  });
});
