// `xks aws setup` (node dist/cli/main.js) on a real token and config: what it prints for AWS KMS, checked against the
// names AWS documents. Each form is also run: the CLI script by bash (with a recording `aws` function, and with the real
// AWS CLI against a local stand-in for KMS's JSON API where the AWS CLI is installed), the CloudFormation template's
// Lambda function by python3 with boto3 against the same stand-in (where boto3 is installed), the Terraform text by
// `terraform fmt` (where terraform is installed) and the connect step's shell by sh.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SECRET } from '../helpers/proxy.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { ensureBuilt, ROOT, runXks } from '../helpers/built-cli.js';
import { createTestToken, tokenSecrets, type TestToken } from '../helpers/test-token.js';

// A secret with every character KMS allows beyond letters and digits ('+', '/', '='): the shell and the AWS CLI's
// shorthand must carry it unchanged.
const NEW_ID = 'NEWCREDENTIAL234567ABCDEF';
const NEW_SECRET = 'Zm9vYmFy+/0123456789abcdefghijABCDEFGHIJ+/xyz==';
const OLD_ID = 'OLDCREDENTIAL234567ABCDEF';
const OLD_SECRET = 'OldSecretOldSecretOldSecret0123456789abcdefgh';
const PATH = 'example/uri/path/prefix';
const REGION = 'eu-west-1';
const ENDPOINT = 'https://xks.example.com';
const STORE_ID = 'cks-1234567890abcdef0';
const BOUND_ARN = 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

let token: TestToken;
let keysConfig: string;
let configFile: string;
let work: string;

const xks = (args: string[], config = configFile) => runXks(args, { token, configFile: config });

async function setup(args: string[]): Promise<string> {
  const r = await xks(['aws', 'setup', ...args]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r.stdout;
}

function has(program: string, ...args: string[]): boolean {
  return spawnSync(program, args, { stdio: 'ignore' }).status === 0;
}

/** No PIN and no secret of the config in a run's output. */
function expectNoSecrets(text: string): void {
  for (const s of [...tokenSecrets(token), SECRET, NEW_SECRET, OLD_SECRET]) expect(text).not.toContain(s);
}

beforeAll(async () => {
  ensureBuilt();
  token = createTestToken('aws-setup');
  keysConfig = writeTestConfig(token);
  for (const args of [
    ['ready-1'],
    ['ready.2'],
    ['bound'],
    ['enc-only', '--usage', 'encrypt'],
    ['off'],
    ['imported', '--origin', 'EXTERNAL'],
  ]) {
    const r = await xks(['keys', 'create', ...args], keysConfig);
    expect(r.code, r.stderr).toBe(0);
  }
  expect((await xks(['keys', 'disable', 'off'], keysConfig)).code).toBe(0);

  const dir = join(token.dir, 'conf');
  writeFileSync(join(dir, 'new-secret'), NEW_SECRET, { mode: 0o600 });
  writeFileSync(join(dir, 'old-secret'), OLD_SECRET, { mode: 0o600 });
  configFile = join(dir, 'aws.yaml');
  writeFileSync(
    configFile,
    stringify({
      hsm: { ...token.hsmConfig(), pin: { file: 'pin' } },
      listeners: { https: { host: '0.0.0.0', port: 8443, certFile: 'cert.pem', keyFile: 'key.pem' } },
      prefixes: [
        {
          path: PATH,
          region: REGION,
          // A rotation in progress: KMS should get the newer one.
          credentials: [
            { accessKeyId: OLD_ID, secret: { file: 'old-secret' }, created: '2025-01-01' },
            { accessKeyId: NEW_ID, secret: { file: 'new-secret' }, created: '2026-01-01' },
          ],
          keyPolicies: { bound: { kmsKeyArns: [BOUND_ARN] } },
        },
        // Its secret file does not exist: only --show-secret may need it.
        { path: 'second', region: 'us-east-1', credentials: [{ accessKeyId: OLD_ID, secret: { file: 'missing-secret' } }], keys: ['ready-1', 'ghost'] },
      ],
    }),
  );
  work = mkdtempSync(join(tmpdir(), 'xks-aws-setup-'));
}, 180_000);

afterAll(() => token?.cleanup());

// --- the AWS CLI form -------------------------------------------------------------------------------------------

// The options of each command, from the AWS CLI reference (awscli.amazonaws.com/v2/documentation/api/latest/reference/
// kms/<command>.html; the same names as the KMS API's request members), plus the global --region, --query and --output.
const GLOBAL = ['--region', '--query', '--output'];
const CLI_OPTIONS: Record<string, string[]> = {
  'create-custom-key-store': [
    '--custom-key-store-name',
    '--cloud-hsm-cluster-id',
    '--trust-anchor-certificate',
    '--key-store-password',
    '--custom-key-store-type',
    '--xks-proxy-uri-endpoint',
    '--xks-proxy-uri-path',
    '--xks-proxy-vpc-endpoint-service-name',
    '--xks-proxy-vpc-endpoint-service-owner',
    '--xks-proxy-authentication-credential',
    '--xks-proxy-connectivity',
  ],
  'connect-custom-key-store': ['--custom-key-store-id'],
  'describe-custom-key-stores': ['--custom-key-store-id', '--custom-key-store-name'],
  'create-key': [
    '--policy',
    '--description',
    '--key-usage',
    '--customer-master-key-spec',
    '--key-spec',
    '--origin',
    '--custom-key-store-id',
    '--bypass-policy-lockout-safety-check',
    '--tags',
    '--multi-region',
    '--xks-key-id',
  ],
};

interface AwsCall {
  command: string;
  options: Record<string, string>;
}

/**
 * Run the script with bash, `aws` being a function that records its words (the shell's own parse) and answers like
 * the AWS CLI would (an id, a connection state, an ARN).
 */
function runWithRecordingAws(script: string, env: Record<string, string> = {}): { code: number; calls: AwsCall[]; stderr: string } {
  const file = join(work, `script-${Math.random().toString(36).slice(2)}.sh`);
  const log = `${file}.log`;
  writeFileSync(file, script);
  writeFileSync(log, '');
  const fake = `aws() {
  case "$1" in --version) echo "aws-cli/2.15.0 Python/3.11"; return ;; configure) return ;; esac
  for a in "$@"; do case "$a" in file://*) printf '%s\\037' "$(cat "\${a#file://}")" ;; *) printf '%s\\037' "$a" ;; esac; done >> "$AWS_LOG"
  printf '\\036' >> "$AWS_LOG"
  case "$2" in
    create-custom-key-store) echo ${STORE_ID} ;;
    describe-custom-key-stores) printf 'CONNECTED\\tNone\\n' ;;
    create-key) echo arn:aws:kms:${REGION}:111122223333:key/0000 ;;
  esac
}
source "$1"`;
  const r = spawnSync('bash', ['--norc', '--noprofile', '-c', fake, 'bash', file], { env: { PATH: process.env.PATH!, AWS_LOG: log, ...env }, encoding: 'utf8' });
  const text = execFileSync('cat', [log], { encoding: 'utf8' });
  const calls = text
    .split('\x1e')
    .filter(Boolean)
    .map((c) => {
      const words = c.split('\x1f').filter((w, i, all) => i < all.length - 1 || w !== '');
      expect(words[0]).toBe('kms');
      const options: Record<string, string> = {};
      for (let i = 2; i < words.length; i += 2) {
        expect(words[i], `option of ${words[1]}`).toMatch(/^--[a-z-]+$/);
        expect(options[words[i]!], `${words[i]} given twice`).toBeUndefined();
        options[words[i]!] = words[i + 1]!;
      }
      return { command: words[1]!, options };
    });
  return { code: r.status ?? -1, calls, stderr: r.stderr };
}

function expectDocumentedOptions(calls: AwsCall[]): void {
  for (const c of calls) {
    expect(Object.keys(CLI_OPTIONS)).toContain(c.command);
    for (const o of Object.keys(c.options)) expect([...CLI_OPTIONS[c.command]!, ...GLOBAL], `${c.command} ${o}`).toContain(o);
    expect(c.options['--region']).toBe(REGION);
  }
}

describe('xks aws setup --format cli', () => {
  it('creates the key store for the prefix, connects it and makes a KMS key per ready external key; the secret comes from the environment', async () => {
    const out = await setup(['--prefix', PATH, '--endpoint', ENDPOINT]);
    expectNoSecrets(out);
    // The credential reaches the AWS CLI in a file only its owner reads, never on a command line (`ps` shows those).
    expect(out).toContain('--xks-proxy-authentication-credential "file://$cred"');
    expect(out).not.toMatch(/RawSecretAccessKey=\$/);
    const r = runWithRecordingAws(out, { XKS_PROXY_SECRET: NEW_SECRET });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expectDocumentedOptions(r.calls);
    expect(r.calls.map((c) => c.command)).toEqual([
      'create-custom-key-store',
      'connect-custom-key-store',
      'describe-custom-key-stores',
      'create-key',
      'create-key',
    ]);
    expect(r.calls[0]!.options).toMatchObject({
      '--custom-key-store-name': 'xks-example-uri-path-prefix',
      '--custom-key-store-type': 'EXTERNAL_KEY_STORE',
      '--xks-proxy-connectivity': 'PUBLIC_ENDPOINT',
      '--xks-proxy-uri-endpoint': ENDPOINT,
      '--xks-proxy-uri-path': `/${PATH}/kms/xks/v1`,
      '--xks-proxy-authentication-credential': JSON.stringify({ AccessKeyId: NEW_ID, RawSecretAccessKey: NEW_SECRET }),
    });
    expect(r.calls[0]!.options['--xks-proxy-vpc-endpoint-service-name']).toBeUndefined();
    expect(r.calls[1]!.options['--custom-key-store-id']).toBe(STORE_ID);
    for (const [i, id] of [[3, 'ready-1'], [4, 'ready.2']] as const) {
      expect(r.calls[i]!.options).toMatchObject({
        '--custom-key-store-id': STORE_ID,
        '--origin': 'EXTERNAL_KEY_STORE',
        '--xks-key-id': id,
        '--key-spec': 'SYMMETRIC_DEFAULT',
        '--key-usage': 'ENCRYPT_DECRYPT',
      });
    }
    // Every key the prefix could serve is accounted for, with the reason it is left out.
    expect(out).toMatch(/#\s+bound: keyPolicies bind it to arn:aws:kms:eu-west-1:111122223333:key\//);
    expect(out).toMatch(/#\s+enc-only: its usage is ENCRYPT; KMS needs ENCRYPT and DECRYPT/);
    expect(out).toMatch(/#\s+off: its state is Disabled/);
    expect(out).toMatch(/#\s+imported: its state is PendingImport/);
    expect(out).not.toContain('xks-proxy-health-check');
    // What in the config KMS cannot reach as it is.
    expect(out).toContain('# Note: The https listener is on port 8443; KMS connects to port 443');
  });

  it('works from a config with one prefix and an audit trail, writes nothing to the trail, and says what KMS needs of the listeners', async () => {
    const dir = join(token.dir, 'conf');
    const audited = join(dir, 'audited.yaml');
    const trail = mkdtempSync(join(work, 'trail-'));
    writeFileSync(
      audited,
      stringify({
        hsm: { ...token.hsmConfig(), pin: { file: 'pin' } },
        listeners: { http: { host: '127.0.0.1', port: 8080 } },
        audit: { dir: trail },
        prefixes: [{ path: '', region: REGION, credentials: [{ accessKeyId: NEW_ID, secret: { file: 'new-secret' } }], keys: ['ready-1'] }],
      }),
    );
    const r = await xks(['aws', 'setup', '--endpoint', ENDPOINT], audited);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--xks-proxy-uri-path /kms/xks/v1 ');
    expect(r.stdout).toContain('--custom-key-store-name xks-hsm-proxy ');
    expect(r.stdout).toContain('# Note: The config has no https listener: a TLS load balancer on port 443');
    // It changes nothing, so it is not an audited command (and needs no audit key).
    expect(readdirSync(trail)).toEqual([]);
  });

  it('stops before calling AWS when the secret is not in the environment, and says which file holds it', async () => {
    const out = await setup(['--prefix', PATH, '--endpoint', ENDPOINT]);
    const r = runWithRecordingAws(out);
    expect(r.code).not.toBe(0);
    expect(r.calls).toEqual([]);
    expect(r.stderr).toContain(`XKS_PROXY_SECRET: set XKS_PROXY_SECRET to the secret of access key id ${NEW_ID}`);
    expect(r.stderr).toContain(join(token.dir, 'conf', 'new-secret'));
  });

  it('--show-secret puts the secret read from its file in the credential, and nothing else', async () => {
    const out = await setup(['--prefix', PATH, '--endpoint', ENDPOINT, '--show-secret', '--access-key-id', OLD_ID]);
    expect(out.split(OLD_SECRET).length).toBe(2);
    expect(out).not.toContain(NEW_SECRET);
    expect(out).not.toContain('XKS_PROXY_SECRET');
    const r = runWithRecordingAws(out);
    expect(r.code, r.stderr).toBe(0);
    expect(r.calls[0]!.options['--xks-proxy-authentication-credential']).toBe(JSON.stringify({ AccessKeyId: OLD_ID, RawSecretAccessKey: OLD_SECRET }));
  });

  it('reads a secret only for --show-secret: a missing secret file matters to it alone', async () => {
    const out = await setup(['--prefix', 'second', '--endpoint', ENDPOINT]);
    const r = runWithRecordingAws(out, { XKS_PROXY_SECRET: NEW_SECRET });
    expect(r.code, r.stderr).toBe(0);
    expect(r.calls[0]!.options['--xks-proxy-uri-path']).toBe('/second/kms/xks/v1');
    expect(r.calls.every((c) => c.options['--region'] === 'us-east-1')).toBe(true);
    expect(r.calls.filter((c) => c.command === 'create-key').map((c) => c.options['--xks-key-id'])).toEqual(['ready-1']);
    expect(out).toMatch(/#\s+ghost: the token has no such key/);

    const shown = await xks(['aws', 'setup', '--prefix', 'second', '--endpoint', ENDPOINT, '--show-secret']);
    expect(shown.code).toBe(1);
    expect(shown.stderr).toMatch(/prefixes\.1\.credentials\.0\.secret: cannot read .*missing-secret \(ENOENT\)/);
    expect(shown.stdout).toBe('');
  });

  it('VPC endpoint service connectivity names the service', async () => {
    const service = 'com.amazonaws.vpce.eu-west-1.vpce-svc-0123456789abcdef0';
    const out = await setup(['--prefix', PATH, '--endpoint', 'https://xks-private.example.com', '--vpc-endpoint-service-name', service, '--name', "team's store"]);
    const r = runWithRecordingAws(out, { XKS_PROXY_SECRET: NEW_SECRET });
    expect(r.code, r.stderr).toBe(0);
    expectDocumentedOptions(r.calls);
    expect(r.calls[0]!.options).toMatchObject({
      '--xks-proxy-connectivity': 'VPC_ENDPOINT_SERVICE',
      '--xks-proxy-vpc-endpoint-service-name': service,
      '--xks-proxy-uri-endpoint': 'https://xks-private.example.com',
      '--custom-key-store-name': "team's store",
    });
  });

  it('--key-store-id: connects the existing key store and makes the keys, without needing the secret', async () => {
    const out = await setup(['--prefix', PATH, '--key-store-id', 'cks-0fedcba9876543210']);
    expect(out).not.toContain('create-custom-key-store');
    const r = runWithRecordingAws(out);
    expect(r.code, r.stderr).toBe(0);
    expectDocumentedOptions(r.calls);
    expect(r.calls.map((c) => c.command)).toEqual(['connect-custom-key-store', 'describe-custom-key-stores', 'create-key', 'create-key']);
    expect(r.calls.every((c) => c.options['--custom-key-store-id'] === 'cks-0fedcba9876543210')).toBe(true);
  });

  it.each([
    [['--prefix', PATH], /give --endpoint https:\/\/HOST/],
    [['--prefix', PATH, '--endpoint', 'https://xks.example.com:8443'], /--endpoint must be https:\/\/ and a host name, without port or path/],
    [['--prefix', PATH, '--endpoint', 'http://xks.example.com'], /--endpoint must be https:\/\//],
    [['--prefix', PATH, '--endpoint', ENDPOINT, '--connectivity', 'VPC_ENDPOINT_SERVICE'], /needs --vpc-endpoint-service-name/],
    [['--prefix', PATH, '--endpoint', ENDPOINT, '--vpc-endpoint-service-name', 'my-service'], /--vpc-endpoint-service-name must look like com\.amazonaws\.vpce\./],
    [['--endpoint', ENDPOINT], /the config has 2 prefixes: choose one with --prefix \(example\/uri\/path\/prefix, second\)/],
    [['--prefix', 'nope', '--endpoint', ENDPOINT], /no prefix "nope"/],
    [['--prefix', PATH, '--endpoint', ENDPOINT, '--access-key-id', 'NOSUCHKEY234567ABCDEFG'], /has no credential NOSUCHKEY234567ABCDEFG/],
    [['--prefix', PATH, '--endpoint', ENDPOINT, '--format', 'yaml'], /--format.*cli, cloudformation, terraform/],
  ])('xks aws setup %j fails with exit 1 and says why', async (args, message) => {
    const r = await xks(['aws', 'setup', ...args]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it.skipIf(!has('aws', '--version'))('the real AWS CLI sends KMS the requests the script means', async () => {
    const kms = await fakeKms();
    try {
      const out = await setup(['--prefix', PATH, '--endpoint', ENDPOINT]);
      const script = join(work, 'real-aws.sh');
      writeFileSync(script, out);
      const awsConfig = join(work, 'aws-config');
      // AWS CLI version 1 fetches https:// parameter values unless told not to (the script checks this).
      writeFileSync(awsConfig, '[default]\ncli_follow_urlparam = false\n');
      // Asynchronously: the stand-in answers from this process's event loop.
      const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((done) => {
        const child = execFile(
          'bash',
          ['--norc', '--noprofile', script],
          {
            timeout: 120_000,
            env: {
              PATH: process.env.PATH!,
              HOME: work,
              XKS_PROXY_SECRET: NEW_SECRET,
              AWS_CONFIG_FILE: awsConfig,
              AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-credentials'),
              AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
              AWS_SECRET_ACCESS_KEY: 'not-a-real-secret',
              AWS_EC2_METADATA_DISABLED: 'true',
              AWS_ENDPOINT_URL: kms.url,
            },
          },
          (_e, stdout, stderr) => done({ status: child.exitCode, stdout, stderr }),
        );
      });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain(`connected ${STORE_ID}`);
      expect(kms.calls.map((c) => c.target)).toEqual(['CreateCustomKeyStore', 'ConnectCustomKeyStore', 'DescribeCustomKeyStores', 'CreateKey', 'CreateKey']);
      expect(kms.calls[0]!.body).toEqual({
        CustomKeyStoreName: 'xks-example-uri-path-prefix',
        CustomKeyStoreType: 'EXTERNAL_KEY_STORE',
        XksProxyConnectivity: 'PUBLIC_ENDPOINT',
        XksProxyUriEndpoint: ENDPOINT,
        XksProxyUriPath: `/${PATH}/kms/xks/v1`,
        XksProxyAuthenticationCredential: { AccessKeyId: NEW_ID, RawSecretAccessKey: NEW_SECRET },
      });
      expect(kms.calls[1]!.body).toEqual({ CustomKeyStoreId: STORE_ID });
      expect(kms.calls[3]!.body).toEqual({
        CustomKeyStoreId: STORE_ID,
        Origin: 'EXTERNAL_KEY_STORE',
        XksKeyId: 'ready-1',
        KeySpec: 'SYMMETRIC_DEFAULT',
        KeyUsage: 'ENCRYPT_DECRYPT',
        Description: 'External key ready-1 in the HSM behind xks-hsm-proxy',
      });
      expect(kms.regions.every((r) => r === REGION)).toBe(true);

      // AWS CLI version 1 without cli_follow_urlparam would send KMS the page at the endpoint: the script stops first.
      const version = spawnSync('aws', ['--version'], { encoding: 'utf8' });
      if (/^aws-cli\/1\./.test(version.stdout + version.stderr)) {
        kms.calls.length = 0;
        writeFileSync(awsConfig, '[default]\n');
        const v1 = await new Promise<{ status: number | null; stderr: string }>((done) => {
          const child = execFile('bash', ['--norc', '--noprofile', script], { timeout: 60_000, env: { PATH: process.env.PATH!, HOME: work, XKS_PROXY_SECRET: NEW_SECRET, AWS_CONFIG_FILE: awsConfig } }, (_e, _o, stderr) =>
            done({ status: child.exitCode, stderr }),
          );
        });
        expect(v1.status).toBe(1);
        expect(v1.stderr).toContain("run 'aws configure set cli_follow_urlparam false' first");
        expect(kms.calls).toEqual([]);
      }
    } finally {
      await kms.close();
    }
  });
});

// --- a stand-in for KMS's JSON API, for the real AWS CLI and boto3 ------------------------------------------------

interface FakeKms {
  url: string;
  calls: { target: string; body: Record<string, unknown> }[];
  /** The region of each request's SigV4 scope. */
  regions: string[];
  /** The connection state after ConnectCustomKeyStore (CONNECTED unless a test says otherwise). */
  connectsTo: { state: string; code?: string };
  close(): Promise<void>;
}

async function fakeKms(): Promise<FakeKms> {
  const states = new Map<string, string>();
  let keys = 0;
  const fake: FakeKms = { url: '', calls: [], regions: [], connectsTo: { state: 'CONNECTED' }, close: async () => undefined };
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString('utf8')));
    req.on('end', () => {
      const target = String(req.headers['x-amz-target'] ?? '').replace(/^TrentService\./, '');
      const body = JSON.parse(text || '{}') as Record<string, string>;
      fake.calls.push({ target, body });
      fake.regions.push(/Credential=[^/]+\/\d+\/([^/]+)\/kms\//.exec(String(req.headers.authorization))?.[1] ?? '?');
      const id = body.CustomKeyStoreId ?? STORE_ID;
      let answer: unknown = {};
      if (target === 'CreateCustomKeyStore') {
        states.set(STORE_ID, 'DISCONNECTED');
        answer = { CustomKeyStoreId: STORE_ID };
      } else if (target === 'ConnectCustomKeyStore') states.set(id, fake.connectsTo.state);
      else if (target === 'DisconnectCustomKeyStore') states.set(id, 'DISCONNECTED');
      else if (target === 'DescribeCustomKeyStores') {
        const state = states.get(id) ?? 'DISCONNECTED';
        answer = { CustomKeyStores: [{ CustomKeyStoreId: id, ConnectionState: state, ...(state === 'FAILED' ? { ConnectionErrorCode: fake.connectsTo.code } : {}) }] };
      } else if (target === 'CreateKey') {
        keys += 1;
        answer = { KeyMetadata: { KeyId: `key-${keys}`, Arn: `arn:aws:kms:${REGION}:111122223333:key/key-${keys}` } };
      } else if (target === 'DescribeKey') answer = { KeyMetadata: { KeyId: body.KeyId, Arn: `arn:aws:kms:${REGION}:111122223333:key/${body.KeyId}` } };
      res.setHeader('content-type', 'application/x-amz-json-1.1');
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  fake.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  fake.close = () => new Promise<void>((ok) => server.close(() => ok()));
  return fake;
}

// --- the CloudFormation form ------------------------------------------------------------------------------------

// Property names of the resource types used, from the CloudFormation resource reference (docs.aws.amazon.com/
// AWSCloudFormation/latest/UserGuide/aws-resource-iam-role.html, aws-resource-lambda-function.html) and, for the custom
// resources, the KMS API's request members (API_CreateCustomKeyStore.html, API_CreateKey.html) plus ServiceToken.
const CFN_PROPERTIES: Record<string, string[]> = {
  'AWS::IAM::Role': ['AssumeRolePolicyDocument', 'ManagedPolicyArns', 'Policies', 'Description', 'Path', 'RoleName', 'Tags'],
  'AWS::Lambda::Function': ['Code', 'Description', 'Handler', 'Role', 'Runtime', 'Timeout', 'MemorySize', 'FunctionName'],
  'Custom::XksKeyStore': [
    'ServiceToken',
    'CustomKeyStoreName',
    'XksProxyConnectivity',
    'XksProxyUriEndpoint',
    'XksProxyUriPath',
    'XksProxyVpcEndpointServiceName',
    'XksProxyAuthenticationCredential',
  ],
  'Custom::XksKey': ['ServiceToken', 'CustomKeyStoreId', 'XksKeyId', 'Description'],
};

type Template = {
  Parameters?: Record<string, Record<string, unknown>>;
  Resources: Record<string, { Type: string; Properties: Record<string, unknown>; DeletionPolicy?: string; UpdateReplacePolicy?: string }>;
  Outputs?: Record<string, { Value: unknown }>;
};

describe('xks aws setup --format cloudformation', () => {
  it('is a JSON template of documented properties whose custom resources make the KMS calls; the secret is a NoEcho parameter', async () => {
    const out = await setup(['--prefix', PATH, '--endpoint', ENDPOINT, '--format', 'cloudformation']);
    expectNoSecrets(out);
    const t = JSON.parse(out) as Template;
    const types = Object.fromEntries(Object.entries(t.Resources).map(([name, r]) => [name, r.Type]));
    expect(types).toEqual({
      XksSetupRole: 'AWS::IAM::Role',
      XksSetupFunction: 'AWS::Lambda::Function',
      XksKeyStore: 'Custom::XksKeyStore',
      XksKeyready1: 'Custom::XksKey',
      XksKeyready2: 'Custom::XksKey',
    });
    for (const [name, r] of Object.entries(t.Resources)) {
      for (const p of Object.keys(r.Properties)) expect(CFN_PROPERTIES[r.Type], `${name}.${p}`).toContain(p);
      // A stack deletion must not schedule the deletion of KMS keys (their ciphertexts would be lost).
      if (r.Type.startsWith('Custom::')) expect([r.DeletionPolicy, r.UpdateReplacePolicy]).toEqual(['Retain', 'Retain']);
    }
    expect(t.Resources.XksKeyStore!.Properties).toMatchObject({
      XksProxyConnectivity: 'PUBLIC_ENDPOINT',
      XksProxyUriEndpoint: ENDPOINT,
      XksProxyUriPath: `/${PATH}/kms/xks/v1`,
      XksProxyAuthenticationCredential: { AccessKeyId: NEW_ID, RawSecretAccessKey: { Ref: 'XksProxySecret' } },
    });
    expect(t.Resources.XksKeyready2!.Properties).toMatchObject({ CustomKeyStoreId: { Ref: 'XksKeyStore' }, XksKeyId: 'ready.2' });
    expect(t.Parameters!.XksProxySecret).toMatchObject({ Type: 'String', NoEcho: true });
    expect(t.Parameters!.XksProxySecret!.Default).toBeUndefined();
    const code = (t.Resources.XksSetupFunction!.Properties.Code as { ZipFile: string }).ZipFile;
    expect(code.length).toBeLessThanOrEqual(4096); // CloudFormation's limit for inline code
    expect(Object.keys(t.Outputs!)).toEqual(['CustomKeyStoreId', 'XksKeyready1Arn', 'XksKeyready2Arn']);
    // A stack made in another region would make a key store KMS signs for the wrong region: refused up front.
    expect(JSON.stringify((t as { Rules?: unknown }).Rules)).toContain(`{"Fn::Equals":[{"Ref":"AWS::Region"},"${REGION}"]}`);

    const shown = JSON.parse(await setup(['--prefix', PATH, '--endpoint', ENDPOINT, '--format', 'cloudformation', '--show-secret'])) as Template;
    expect(shown.Parameters!.XksProxySecret!.Default).toBe(NEW_SECRET);
  });

  it.skipIf(!has('cfn-lint', '--version'))('passes cfn-lint', async () => {
    const out = await setup(['--prefix', PATH, '--endpoint', ENDPOINT, '--format', 'cloudformation']);
    const file = join(work, 'template.json');
    writeFileSync(file, out);
    const r = spawnSync('cfn-lint', ['--regions', REGION, '--', file], { encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it.skipIf(!has('python3', '-c', 'import boto3'))(
    "the template's function, run by python3 with boto3, creates and connects the key store and the keys, and reports a failed connection without the secret",
    async () => {
      const out = await setup(['--prefix', PATH, '--endpoint', ENDPOINT, '--format', 'cloudformation']);
      const t = JSON.parse(out) as Template;
      const dir = mkdtempSync(join(work, 'lambda-'));
      writeFileSync(join(dir, 'index.py'), (t.Resources.XksSetupFunction!.Properties.Code as { ZipFile: string }).ZipFile);
      const kms = await fakeKms();
      const answers: Record<string, unknown>[] = [];
      const responses = http.createServer((req, res) => {
        let text = '';
        req.on('data', (c: Buffer) => (text += c.toString('utf8')));
        req.on('end', () => {
          answers.push({ method: req.method, ...(JSON.parse(text) as Record<string, unknown>) });
          res.end();
        });
      });
      await new Promise<void>((ok) => responses.listen(0, '127.0.0.1', ok));
      const responseUrl = `http://127.0.0.1:${(responses.address() as { port: number }).port}/response`;
      // What CloudFormation would send: the template's properties with the parameter and ServiceToken resolved.
      const props = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => {
        const p = JSON.parse(JSON.stringify(t.Resources[name]!.Properties)) as Record<string, unknown>;
        if (p.XksProxyAuthenticationCredential) (p.XksProxyAuthenticationCredential as Record<string, unknown>).RawSecretAccessKey = NEW_SECRET;
        return { ...p, ServiceToken: 'arn:aws:lambda:eu-west-1:111122223333:function:x', ...extra };
      };
      const invoke = (event: Record<string, unknown>) => {
        const full = { StackId: 'stack', RequestId: 'req', LogicalResourceId: 'L', ResponseURL: responseUrl, ...event };
        const runner = `import json, sys, index
class Ctx:
    log_stream_name = 'log-stream'
    def get_remaining_time_in_millis(self):
        return 600000
index.handler(json.loads(sys.argv[1]), Ctx())`;
        return new Promise<{ status: number | null; stderr: string }>((done) => {
          const child = execFile(
            'python3',
            ['-c', runner, JSON.stringify(full)],
            {
              cwd: dir,
              timeout: 60_000,
              env: {
                PATH: process.env.PATH!,
                HOME: work,
                AWS_ENDPOINT_URL: kms.url,
                AWS_DEFAULT_REGION: REGION,
                AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
                AWS_SECRET_ACCESS_KEY: 'not-a-real-secret',
                AWS_CONFIG_FILE: join(work, 'no-config'),
                AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-credentials'),
                AWS_EC2_METADATA_DISABLED: 'true',
              },
            },
            (_e, _out, stderr) => done({ status: child.exitCode, stderr }),
          );
        });
      };
      try {
        let r = await invoke({ RequestType: 'Create', ResourceType: 'Custom::XksKeyStore', ResourceProperties: props('XksKeyStore') });
        expect(r.stderr).toBe('');
        expect(answers.at(-1)).toMatchObject({ method: 'PUT', Status: 'SUCCESS', PhysicalResourceId: STORE_ID, Data: { CustomKeyStoreId: STORE_ID } });
        expect(kms.calls.map((c) => c.target)).toEqual(['CreateCustomKeyStore', 'DescribeCustomKeyStores', 'ConnectCustomKeyStore', 'DescribeCustomKeyStores']);
        expect(kms.calls[0]!.body).toEqual({
          CustomKeyStoreName: 'xks-example-uri-path-prefix',
          CustomKeyStoreType: 'EXTERNAL_KEY_STORE',
          XksProxyConnectivity: 'PUBLIC_ENDPOINT',
          XksProxyUriEndpoint: ENDPOINT,
          XksProxyUriPath: `/${PATH}/kms/xks/v1`,
          XksProxyAuthenticationCredential: { AccessKeyId: NEW_ID, RawSecretAccessKey: NEW_SECRET },
        });

        kms.calls.length = 0;
        r = await invoke({ RequestType: 'Create', ResourceType: 'Custom::XksKey', ResourceProperties: props('XksKeyready2', { CustomKeyStoreId: STORE_ID }) });
        expect(r.stderr).toBe('');
        expect(answers.at(-1)).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: 'key-1', Data: { Arn: `arn:aws:kms:${REGION}:111122223333:key/key-1` } });
        expect(kms.calls.at(-1)).toEqual({
          target: 'CreateKey',
          body: {
            CustomKeyStoreId: STORE_ID,
            Origin: 'EXTERNAL_KEY_STORE',
            XksKeyId: 'ready.2',
            KeySpec: 'SYMMETRIC_DEFAULT',
            KeyUsage: 'ENCRYPT_DECRYPT',
            Description: 'External key ready.2 in the HSM behind xks-hsm-proxy',
          },
        });

        // A rotated credential: updated while connected, without a disconnection.
        kms.calls.length = 0;
        const rotated = props('XksKeyStore');
        (rotated.XksProxyAuthenticationCredential as Record<string, string>).AccessKeyId = OLD_ID;
        r = await invoke({
          RequestType: 'Update',
          ResourceType: 'Custom::XksKeyStore',
          PhysicalResourceId: STORE_ID,
          ResourceProperties: rotated,
          OldResourceProperties: props('XksKeyStore'),
        });
        expect(answers.at(-1)).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: STORE_ID });
        expect(kms.calls.map((c) => c.target)).toEqual(['UpdateCustomKeyStore', 'DescribeCustomKeyStores', 'DescribeCustomKeyStores']);
        expect(kms.calls[0]!.body).toEqual({ CustomKeyStoreId: STORE_ID, XksProxyAuthenticationCredential: { AccessKeyId: OLD_ID, RawSecretAccessKey: NEW_SECRET } });

        // A connection that fails: FAILED with KMS's code, and never the secret.
        kms.calls.length = 0;
        kms.connectsTo = { state: 'FAILED', code: 'XKS_PROXY_NOT_REACHABLE' };
        r = await invoke({ RequestType: 'Create', ResourceType: 'Custom::XksKeyStore', ResourceProperties: props('XksKeyStore') });
        const failed = answers.at(-1) as { Status: string; Reason: string };
        expect(failed.Status).toBe('FAILED');
        expect(failed.Reason).toContain('FAILED to connect: XKS_PROXY_NOT_REACHABLE');
        expect(JSON.stringify(answers) + r.stderr).not.toContain(NEW_SECRET);

        // Deleting the stack deletes nothing in KMS.
        kms.calls.length = 0;
        await invoke({ RequestType: 'Delete', ResourceType: 'Custom::XksKey', PhysicalResourceId: 'key-1', ResourceProperties: props('XksKeyready1', { CustomKeyStoreId: STORE_ID }) });
        expect(answers.at(-1)).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: 'key-1' });
        expect(kms.calls).toEqual([]);
      } finally {
        await kms.close();
        await new Promise<void>((ok) => responses.close(() => ok()));
      }
    },
    120_000,
  );
});

// --- the Terraform form -----------------------------------------------------------------------------------------

// Argument names from the Terraform AWS provider's documentation (registry.terraform.io/providers/hashicorp/aws/latest/
// docs/resources/kms_custom_key_store and .../kms_key; website/docs/r/*.html.markdown in hashicorp/terraform-provider-aws)
// and Terraform's own (terraform_data, the local-exec provisioner, variable, output, provider, and the meta-arguments
// depends_on and lifecycle.prevent_destroy: developer.hashicorp.com/terraform/language).
const TF_ARGUMENTS: Record<string, string[]> = {
  'resource aws_kms_custom_key_store': [
    'custom_key_store_name',
    'custom_key_store_type',
    'cloud_hsm_cluster_id',
    'key_store_password',
    'trust_anchor_certificate',
    'region',
    'xks_proxy_authentication_credential',
    'xks_proxy_connectivity',
    'xks_proxy_uri_endpoint',
    'xks_proxy_uri_path',
    'xks_proxy_vpc_endpoint_service_name',
  ],
  'resource aws_kms_custom_key_store/xks_proxy_authentication_credential': ['access_key_id', 'raw_secret_access_key'],
  'resource aws_kms_key': [
    'description',
    'key_usage',
    'custom_key_store_id',
    'customer_master_key_spec',
    'policy',
    'bypass_policy_lockout_safety_check',
    'deletion_window_in_days',
    'is_enabled',
    'enable_key_rotation',
    'multi_region',
    'tags',
    'xks_key_id',
    'depends_on',
    'lifecycle',
  ],
  'resource aws_kms_key/lifecycle': ['prevent_destroy'],
  'resource terraform_data': ['input', 'triggers_replace', 'provisioner'],
  'resource terraform_data/provisioner': ['command', 'environment', 'interpreter', 'working_dir'],
  variable: ['description', 'type', 'sensitive', 'default'],
  output: ['value', 'description'],
  provider: ['region'],
};

/** Each block's argument and nested block names, by "kind type[/nested]"; heredocs and map values skipped. */
function hclArguments(text: string): Map<string, Set<string>> {
  const found = new Map<string, Set<string>>();
  const stack: string[] = [];
  let heredoc: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (heredoc) {
      if (line === heredoc) heredoc = undefined;
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const top = stack.at(-1);
    const add = (name: string) => {
      if (top === undefined || top === '{map}') return;
      if (!found.has(top)) found.set(top, new Set());
      found.get(top)!.add(name);
    };
    let m: RegExpExecArray | null;
    if ((m = /^(resource|data) "([a-z_]+)" "[A-Za-z0-9_]+" \{$/.exec(line))) stack.push(`${m[1]} ${m[2]}`);
    else if ((m = /^(variable|output|provider) "[A-Za-z0-9_]+" \{$/.exec(line))) stack.push(m[1]!);
    else if ((m = /^([a-z_]+)( "[a-z-]+")? \{$/.exec(line))) {
      add(m[1]!);
      stack.push(`${top}/${m[1]}`);
    } else if ((m = /^("?[A-Za-z0-9_.-]+"?)\s*=\s*(.*)$/.exec(line))) {
      add(m[1]!);
      if (m[2] === '{') stack.push('{map}');
      const h = /<<-?([A-Z]+)$/.exec(m[2]!);
      if (h) heredoc = h[1];
    } else if (line === '}') stack.pop();
    else throw new Error(`unexpected line: ${line}`);
  }
  expect(stack).toEqual([]);
  return found;
}

describe('xks aws setup --format terraform', () => {
  it("uses only the AWS provider's documented arguments, connects with terraform_data, and keeps the secret in a sensitive variable", async () => {
    const out = await setup(['--prefix', PATH, '--endpoint', ENDPOINT, '--format', 'terraform']);
    expectNoSecrets(out);
    const args = hclArguments(out);
    for (const [block, names] of args) {
      expect(Object.keys(TF_ARGUMENTS), block).toContain(block);
      for (const n of names) expect(TF_ARGUMENTS[block], `${block}: ${n}`).toContain(n);
    }
    expect([...args.keys()].sort()).toEqual(
      [
        'output',
        'provider',
        'resource aws_kms_custom_key_store',
        'resource aws_kms_custom_key_store/xks_proxy_authentication_credential',
        'resource aws_kms_key',
        'resource aws_kms_key/lifecycle',
        'resource terraform_data',
        'resource terraform_data/provisioner',
        'variable',
      ].sort(),
    );
    expect(out).toContain(`xks_proxy_uri_path     = "/${PATH}/kms/xks/v1"`);
    expect(out).toContain('raw_secret_access_key = var.xks_proxy_secret');
    expect(out).toMatch(/resource "aws_kms_key" "xks_ready_2" \{\n(.*\n)*? {2}xks_key_id {15}= "ready\.2"/);
    expect(out).toMatch(/depends_on {15}= \[terraform_data\.xks_connect\]/);
    expect(out).not.toMatch(/default\s+=/);
    expect(out).not.toContain('aws_kms_external_key'); // imported key material, not external key stores
    const shown = await setup(['--prefix', PATH, '--endpoint', ENDPOINT, '--format', 'terraform', '--show-secret']);
    expect(shown).toContain(`default     = "${NEW_SECRET}"`);
  });

  it("the connect step's shell connects and waits for CONNECTED, and fails on FAILED with the code", async () => {
    const out = await setup(['--prefix', PATH, '--endpoint', ENDPOINT, '--format', 'terraform']);
    const command = /command = <<-EOT\n([\s\S]*?)\n\s*EOT/.exec(out)![1]!.replace(/^ {6}/gm, '');
    for (const [state, code] of [['CONNECTED', 0], ['FAILED', 1]] as const) {
      const fake = `aws() { echo "$*" >> "$LOG"; case "$2" in describe-custom-key-stores) printf '${state}\\tXKS_PROXY_NOT_REACHABLE\\n' ;; esac; }\n`;
      const log = join(work, `tf-connect-${state}.log`);
      const r = spawnSync('sh', ['-c', fake + command], { encoding: 'utf8', env: { PATH: process.env.PATH!, LOG: log, KEY_STORE_ID: STORE_ID } });
      expect(r.status, r.stderr).toBe(code);
      expect(execFileSync('cat', [log], { encoding: 'utf8' })).toContain(`kms connect-custom-key-store --region ${REGION} --custom-key-store-id ${STORE_ID}`);
      if (state === 'FAILED') expect(r.stderr).toContain('XKS_PROXY_NOT_REACHABLE');
    }
  });

  it.skipIf(!has('terraform', 'version'))('is valid and formatted HCL for terraform fmt', async () => {
    for (const extra of [[], ['--vpc-endpoint-service-name', 'com.amazonaws.vpce.eu-west-1.vpce-svc-0123456789abcdef0'], ['--key-store-id', STORE_ID]]) {
      const out = await setup(['--prefix', PATH, '--endpoint', ENDPOINT, '--format', 'terraform', ...extra]);
      const dir = mkdtempSync(join(work, 'tf-'));
      const file = join(dir, 'main.tf');
      writeFileSync(file, out);
      chmodSync(file, 0o644);
      const r = spawnSync('terraform', ['fmt', '-check', '-diff', file], { encoding: 'utf8', env: { ...process.env, TF_CLI_CONFIG_FILE: '/dev/null' } });
      expect(r.stdout + r.stderr, extra.join(' ')).toBe('');
      expect(r.status).toBe(0);
    }
  });
});

// --- docs/connect-to-aws-kms.md -----------------------------------------------------------------------------------

// From the KMS API reference: the ConnectionErrorCode values for external key stores (CustomKeyStoresListEntry), and the
// exceptions of CreateCustomKeyStore, UpdateCustomKeyStore and CreateKey that concern an external key store, plus the
// one cryptographic operations return.
const CONNECTION_ERROR_CODES = [
  'INVALID_CREDENTIALS',
  'NETWORK_ERRORS',
  'INTERNAL_ERROR',
  'XKS_PROXY_ACCESS_DENIED',
  'XKS_PROXY_INVALID_CONFIGURATION',
  'XKS_PROXY_INVALID_RESPONSE',
  'XKS_PROXY_INVALID_TLS_CONFIGURATION',
  'XKS_PROXY_NOT_REACHABLE',
  'XKS_PROXY_TIMED_OUT',
  'XKS_VPC_ENDPOINT_SERVICE_INVALID_CONFIGURATION',
  'XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND',
];
const KMS_EXCEPTIONS = [
  'XksProxyUriUnreachableException',
  'XksProxyIncorrectAuthenticationCredentialException',
  'XksProxyInvalidConfigurationException',
  'XksProxyInvalidResponseException',
  'XksProxyVpcEndpointServiceNotFoundException',
  'XksProxyVpcEndpointServiceInvalidConfigurationException',
  'XksProxyVpcEndpointServiceInUseException',
  'XksProxyUriInUseException',
  'XksProxyUriEndpointInUseException',
  'CustomKeyStoreInvalidStateException',
  'XksKeyNotFoundException',
  'XksKeyInvalidConfigurationException',
  'XksKeyAlreadyInUseException',
  'KMSInvalidStateException',
];

describe('docs/connect-to-aws-kms.md', () => {
  const doc = execFileSync('cat', [join(ROOT, 'docs/connect-to-aws-kms.md')], { encoding: 'utf8' });
  const firstColumns = doc
    .split('\n')
    .filter((l) => l.startsWith('| `'))
    .map((l) => l.split('|')[1]!);

  it('has a troubleshooting row for every connection error code and every external key store exception of KMS', () => {
    for (const code of CONNECTION_ERROR_CODES) expect(firstColumns.some((c) => c.includes(`\`${code}\``)), code).toBe(true);
    for (const e of KMS_EXCEPTIONS) expect(firstColumns.some((c) => c.includes(`\`${e}\``)), e).toBe(true);
  });

  it('names only metrics the proxy exports, and the README links it', () => {
    const names = new Set([...doc.matchAll(/`(xks_[a-z_]+)(\{[^`]*\})?( 0)?`/g)].map((m) => m[1]!).filter((n) => !n.startsWith('xks_proxy_') && n !== 'xks_key_id'));
    expect(names.size).toBeGreaterThan(4);
    const sources = execFileSync('cat', [join(ROOT, 'src/obs/metrics.ts'), join(ROOT, 'src/obs/audit-metrics.ts')], { encoding: 'utf8' });
    for (const n of names) expect(sources, n).toContain(`'${n}'`);
    expect(execFileSync('cat', [join(ROOT, 'README.md')], { encoding: 'utf8' })).toContain('(docs/connect-to-aws-kms.md)');
  });
});
