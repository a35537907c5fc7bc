// What AWS KMS needs to use one prefix of this proxy as an external key store, rendered for the AWS CLI (a bash script),
// CloudFormation (a JSON template) or Terraform (HCL). Pure functions: `xks aws setup` (cli/aws.ts) gathers the facts.
//
// Names follow AWS's documentation: the KMS API (CreateCustomKeyStore, ConnectCustomKeyStore, DescribeCustomKeyStores,
// CreateKey) and the AWS CLI's options for it; Terraform's AWS provider (aws_kms_custom_key_store, aws_kms_key with
// custom_key_store_id and xks_key_id; aws_kms_external_key is for imported material, not for external key stores);
// CloudFormation, which has no custom key store resource type and whose AWS::KMS::Key takes Origin AWS_KMS or EXTERNAL
// only, so the template makes the calls from a Lambda-backed custom resource. docs/connect-to-aws-kms.md cites them.
import { usageOf, type ExternalKey } from '../keys/catalogue.js';
import { refusedExposure } from '../keys/exposure.js';
import { materialExpired } from '../keys/imported-material.js';
import type { Config } from '../config/schema.js';

export type Connectivity = 'PUBLIC_ENDPOINT' | 'VPC_ENDPOINT_SERVICE';
export type SetupFormat = 'cli' | 'cloudformation' | 'terraform';

/** The secret itself (--show-secret), or where the operator finds it (a file, an environment variable). */
export type SecretOutput = { value: string } | { from: string };

export interface KeyStorePlan {
  configFile: string;
  /** The config's prefix path ('' for none). */
  prefix: string;
  /** The prefix's SigV4 region: KMS signs for its own region, so the key store lives there. */
  region: string;
  /** An existing key store (--key-store-id): only the connection and the keys are printed. */
  existingKeyStoreId?: string | undefined;
  name: string;
  endpoint: string;
  connectivity: Connectivity;
  vpcEndpointServiceName?: string | undefined;
  accessKeyId: string;
  secret: SecretOutput;
  /** External key ids that are ready for a KMS key. */
  keys: string[];
  /** The others the prefix could serve, and why no KMS key is made over them. */
  skipped: { id: string; why: string }[];
  /** What in the config KMS will not work with as it stands (listener port, TLS, mTLS subjects). */
  notes?: string[] | undefined;
}

/** What in the listeners KMS will not work with as it stands; KMS connects over TLS to port 443 only. */
export function listenerNotes(listeners: Config['listeners'], region: string): string[] {
  const notes: string[] = [];
  const https = listeners.https;
  if (!https) {
    notes.push('The config has no https listener: a TLS load balancer on port 443, with a certificate KMS trusts, must forward to the http listener.');
  } else {
    if (https.port !== 443) notes.push(`The https listener is on port ${https.port}; KMS connects to port 443, so a load balancer or port mapping must forward 443 to it.`);
    const subject = `cks.kms.${region}.amazonaws.com`;
    if (https.mtls && !https.mtls.allowedSubjects.includes(subject)) {
      notes.push(`listeners.https.mtls.allowedSubjects lacks ${subject}, the subject of KMS's client certificate in ${region}: the handshake would be refused.`);
    }
  }
  return notes;
}

/** XksProxyUriPath: the prefix's path followed by the API's own. */
export function xksUriPath(prefix: string): string {
  return prefix ? `/${prefix}/kms/xks/v1` : '/kms/xks/v1';
}

// KMS's own constraints (API reference, XksProxyUriEndpoint and XksProxyVpcEndpointServiceName): checked here so that
// a typo fails now rather than in CreateCustomKeyStore.
const ENDPOINT = /^https:\/\/[a-zA-Z0-9.-]+$/;
const VPC_SERVICE = /^(com|eu)\.amazonaws\.vpce\.([a-z]+-){2,3}\d+\.vpce-svc-[0-9a-z]+$/;

/** Why an endpoint KMS could not use is wrong, or undefined. */
export function endpointProblem(endpoint: string): string | undefined {
  if (!ENDPOINT.test(endpoint)) {
    return `--endpoint must be https:// and a host name, without port or path (KMS connects on port 443), not "${endpoint}"`;
  }
  if (endpoint.length < 10 || endpoint.length > 128) return '--endpoint must be 10 to 128 characters';
  return undefined;
}

export function vpcServiceProblem(name: string): string | undefined {
  if (VPC_SERVICE.test(name) && name.length >= 20 && name.length <= 64) return undefined;
  return `--vpc-endpoint-service-name must look like com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0, not "${name}"`;
}

/** Default CustomKeyStoreName: the prefix's path, which is unique per proxy, made readable. */
export function defaultKeyStoreName(prefix: string): string {
  return prefix ? `xks-${prefix.replace(/\//g, '-')}` : 'xks-hsm-proxy';
}

/**
 * Why KMS would refuse a KMS key over this external key (CreateKey asks GetKeyMetadata for AES_256, ENABLED, ENCRYPT
 * and DECRYPT), or undefined when it is ready. The same judgement as the XKS GetKeyMetadata and the version checks of
 * Encrypt (xks/operations.ts), plus a binding to other KMS keys, which would refuse the new one's every call.
 */
export function whyNotReady(key: ExternalKey, now: Date, boundTo?: readonly string[]): string | undefined {
  if (key.problems.length > 0) return key.problems.join('; ');
  if (key.state !== 'Enabled') return `its state is ${key.state}`;
  const current = key.current;
  if (!current) return 'it has no key material';
  const usage = usageOf(key);
  if (!usage.encrypt || !usage.decrypt) {
    const has = [usage.encrypt && 'ENCRYPT', usage.decrypt && 'DECRYPT'].filter(Boolean).join(',') || 'NONE';
    return `its usage is ${has}; KMS needs ENCRYPT and DECRYPT`;
  }
  if (key.duplicateVersions.has(current.version)) return `version ${current.version} is held by more than one token object`;
  if (materialExpired(key.record, now, current.version)) return 'its imported key material has expired';
  const exposed = refusedExposure(key, current);
  if (exposed) return exposed;
  if (boundTo && boundTo.length > 0) return `keyPolicies bind it to ${boundTo.join(', ')}: the proxy would refuse a new KMS key`;
  return undefined;
}

export function render(plan: KeyStorePlan, format: SetupFormat): string {
  if (format === 'cloudformation') return renderCloudFormation(plan);
  if (format === 'terraform') return renderTerraform(plan);
  return renderCli(plan);
}

// ---------------------------------------------------------------------------------------------------------------
// AWS CLI: a bash script. Every value is one shell word; the secret, unless shown, comes from XKS_PROXY_SECRET.

export const SECRET_ENV = 'XKS_PROXY_SECRET';

/** One shell word for `s`. */
export function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:=@,+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function header(plan: KeyStorePlan, comment: string): string[] {
  const where = plan.prefix ? `prefix "${plan.prefix}"` : 'the prefix-less key store';
  const lines = [`AWS KMS external key store for ${where} of ${plan.configFile}, made by \`xks aws setup\`.`];
  if (!plan.existingKeyStoreId) {
    lines.push(`KMS calls ${plan.endpoint}${xksUriPath(plan.prefix)} on port 443, signed for region ${plan.region}.`);
  }
  lines.push('docs/connect-to-aws-kms.md explains each step, and what each KMS error means on the proxy.');
  for (const n of plan.existingKeyStoreId ? [] : (plan.notes ?? [])) lines.push(`Note: ${n}`);
  return lines.map((l) => `${comment} ${l}`);
}

function skippedLines(plan: KeyStorePlan, comment: string): string[] {
  if (plan.skipped.length === 0) return [];
  return [`${comment} Not ready, so no KMS key is made over them:`, ...plan.skipped.map((s) => `${comment}   ${s.id}: ${s.why}`)];
}

function describeLoop(indent: string, region: string, idVar: string): string[] {
  return [
    `${indent}while :; do`,
    `${indent}  state=$(aws kms describe-custom-key-stores --region ${shellWord(region)} --custom-key-store-id "$${idVar}" \\`,
    `${indent}    --query 'CustomKeyStores[0].[ConnectionState,ConnectionErrorCode]' --output text)`,
    `${indent}  case "$state" in`,
    `${indent}    CONNECTED*) break ;;`,
    `${indent}    FAILED*) echo "the key store did not connect: $state (docs/connect-to-aws-kms.md, Troubleshooting)" >&2; exit 1 ;;`,
    `${indent}  esac`,
    `${indent}  sleep 10`,
    `${indent}done`,
  ];
}

export function renderCli(plan: KeyStorePlan): string {
  const r = shellWord(plan.region);
  const out = ['#!/usr/bin/env bash', ...header(plan, '#')];
  out.push(
    `# Run it with AWS credentials that may call kms:${plan.existingKeyStoreId ? '' : 'CreateCustomKeyStore, kms:'}ConnectCustomKeyStore,`,
    '# kms:DescribeCustomKeyStores and kms:CreateKey.',
    'set -euo pipefail',
    '',
  );
  if (plan.existingKeyStoreId) {
    out.push(`key_store_id=${shellWord(plan.existingKeyStoreId)}`);
  } else {
    let secret: string;
    if ('value' in plan.secret) {
      secret = shellWord(plan.secret.value);
    } else {
      out.push(
        `: "\${${SECRET_ENV}:?set ${SECRET_ENV} to the secret of access key id ${plan.accessKeyId} (${plan.secret.from.replace(/[^A-Za-z0-9 _./:,()=+@-]/g, '')})}"`,
      );
      secret = `"$${SECRET_ENV}"`;
    }
    // The credential goes to the AWS CLI in a file only you can read, written by printf (a shell builtin): on the
    // command line, the secret would be in every local user's `ps` (the SigV4 secret's alphabet needs no JSON escape).
    out.push(
      'cred=$(umask 077 && mktemp)',
      `trap 'rm -f "$cred"' EXIT`,
      `printf '{"AccessKeyId":"%s","RawSecretAccessKey":"%s"}' ${shellWord(plan.accessKeyId)} ${secret} > "$cred"`,
    );
    const credential = '"file://$cred"';
    out.push(
      '# AWS CLI version 1 replaces an https:// value with what that address serves, unless told not to.',
      'case "$(aws --version 2>&1)" in',
      '  aws-cli/1.*)',
      '    if [ "$(aws configure get cli_follow_urlparam || true)" != false ]; then',
      `      echo "AWS CLI version 1: run 'aws configure set cli_follow_urlparam false' first" >&2`,
      '      exit 1',
      '    fi ;;',
      'esac',
      '',
      'key_store_id=$(aws kms create-custom-key-store \\',
      `  --region ${r} \\`,
      `  --custom-key-store-name ${shellWord(plan.name)} \\`,
      '  --custom-key-store-type EXTERNAL_KEY_STORE \\',
      `  --xks-proxy-connectivity ${plan.connectivity} \\`,
      ...(plan.connectivity === 'VPC_ENDPOINT_SERVICE' ? [`  --xks-proxy-vpc-endpoint-service-name ${shellWord(plan.vpcEndpointServiceName!)} \\`] : []),
      `  --xks-proxy-uri-endpoint ${shellWord(plan.endpoint)} \\`,
      `  --xks-proxy-uri-path ${shellWord(xksUriPath(plan.prefix))} \\`,
      `  --xks-proxy-authentication-credential ${credential} \\`,
      '  --query CustomKeyStoreId --output text)',
      'echo "created external key store $key_store_id"',
    );
  }
  out.push(
    '',
    '# KMS creates keys only in a connected key store. Connecting takes a minute or more; FAILED comes with a',
    '# ConnectionErrorCode (a FAILED key store must be disconnected before it can connect again).',
    `aws kms connect-custom-key-store --region ${r} --custom-key-store-id "$key_store_id"`,
    ...describeLoop('', plan.region, 'key_store_id'),
    'echo "connected $key_store_id"',
    '',
  );
  if (plan.keys.length > 0) {
    out.push('# One KMS key per external key that is ready (AES-256, Enabled, ENCRYPT and DECRYPT); each prints its ARN.');
  } else {
    out.push('# No external key is ready yet: make one with `xks keys create ID` and run `xks aws setup --key-store-id` again.');
  }
  for (const id of plan.keys) {
    out.push(
      `aws kms create-key --region ${r} --custom-key-store-id "$key_store_id" --origin EXTERNAL_KEY_STORE \\`,
      `  --xks-key-id ${shellWord(id)} --key-spec SYMMETRIC_DEFAULT --key-usage ENCRYPT_DECRYPT \\`,
      `  --description ${shellWord(keyDescription(id))} --query KeyMetadata.Arn --output text`,
    );
  }
  out.push(...skippedLines(plan, '#'));
  return `${out.join('\n')}\n`;
}

function keyDescription(id: string): string {
  return `External key ${id} in the HSM behind xks-hsm-proxy`;
}

// ---------------------------------------------------------------------------------------------------------------
// Terraform: the AWS provider's resources, and terraform_data running the AWS CLI for the connection.

/** A Terraform quoted string: escapes, and no interpolation or directive. */
export function hclString(s: string): string {
  const body = s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\$\{/g, '$${').replace(/%\{/g, '%%{');
  return `"${body}"`;
}

/** Names for resources (Terraform, CloudFormation) made from external key ids: distinct, and valid identifiers. */
function resourceNames(ids: string[], shape: (id: string) => string, separator: string): Map<string, string> {
  const used = new Set<string>();
  const out = new Map<string, string>();
  for (const id of ids) {
    const base = shape(id);
    let name = base;
    for (let n = 2; used.has(name); n++) name = `${base}${separator}${n}`;
    used.add(name);
    out.set(id, name);
  }
  return out;
}

function tfName(id: string): string {
  return `xks_${id.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

function cfnName(id: string): string {
  return `XksKey${id.replace(/[^A-Za-z0-9]/g, '')}`;
}

/** Attribute lines with their `=` aligned, as `terraform fmt` writes them. */
function attrs(indent: string, pairs: [string, string][]): string[] {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${indent}${k.padEnd(width)} = ${v}`);
}

export function renderTerraform(plan: KeyStorePlan): string {
  const out = [...header(plan, '#')];
  out.push(
    '# Terraform AWS provider resources: aws_kms_custom_key_store (the key store) and aws_kms_key (custom_key_store_id and',
    '# xks_key_id make a key in it). The provider has no resource that connects a key store, and KMS creates keys only in',
    '# a connected one: terraform_data.xks_connect connects it with the AWS CLI, which must be where terraform runs.',
    '# The keys are kept from `terraform destroy` (prevent_destroy): deleting a KMS key makes its ciphertexts undecryptable.',
    '',
    'provider "aws" {',
    "  # The prefix's region: KMS signs its requests to the proxy for it. Remove this block if your configuration has one.",
    ...attrs('  ', [['region', hclString(plan.region)]]),
    '}',
    '',
  );
  let storeId: string;
  const dependsOn: string[] = [];
  if (plan.existingKeyStoreId) {
    storeId = hclString(plan.existingKeyStoreId);
    out.push(`# The key store ${plan.existingKeyStoreId} exists already; it must be connected before apply (xks aws setup --format cli).`, '');
  } else {
    storeId = 'aws_kms_custom_key_store.xks.id';
    const secretFrom = 'value' in plan.secret ? 'shown by --show-secret' : plan.secret.from;
    out.push(
      'variable "xks_proxy_secret" {',
      ...attrs('  ', [
        ['description', hclString(`Secret access key of the XKS proxy credential ${plan.accessKeyId} (${secretFrom})`)],
        ['type', 'string'],
        ['sensitive', 'true'],
        ...('value' in plan.secret ? [['default', hclString(plan.secret.value)] as [string, string]] : []),
      ]),
      '}',
      '',
      'resource "aws_kms_custom_key_store" "xks" {',
      ...attrs('  ', [
        ['custom_key_store_name', hclString(plan.name)],
        ['custom_key_store_type', '"EXTERNAL_KEY_STORE"'],
        ['xks_proxy_connectivity', hclString(plan.connectivity)],
        ['xks_proxy_uri_endpoint', hclString(plan.endpoint)],
        ['xks_proxy_uri_path', hclString(xksUriPath(plan.prefix))],
        ...(plan.connectivity === 'VPC_ENDPOINT_SERVICE'
          ? [['xks_proxy_vpc_endpoint_service_name', hclString(plan.vpcEndpointServiceName!)] as [string, string]]
          : []),
      ]),
      '',
      '  xks_proxy_authentication_credential {',
      ...attrs('    ', [
        ['access_key_id', hclString(plan.accessKeyId)],
        ['raw_secret_access_key', 'var.xks_proxy_secret'],
      ]),
      '  }',
      '}',
      '',
      'resource "terraform_data" "xks_connect" {',
      '  triggers_replace = [aws_kms_custom_key_store.xks.id]',
      '',
      '  provisioner "local-exec" {',
      '    environment = {',
      '      KEY_STORE_ID = aws_kms_custom_key_store.xks.id',
      '    }',
      '    command = <<-EOT',
      '      set -eu',
      `      aws kms connect-custom-key-store --region ${shellWord(plan.region)} --custom-key-store-id "$KEY_STORE_ID"`,
      // The heredoc is the whole script: done means exit, not break.
      ...describeLoop('      ', plan.region, 'KEY_STORE_ID').map((l) => l.replace('CONNECTED*) break ;;', 'CONNECTED*) exit 0 ;;')),
      '    EOT',
      '  }',
      '}',
      '',
    );
    dependsOn.push('terraform_data.xks_connect');
  }
  const names = resourceNames(plan.keys, tfName, '_');
  for (const id of plan.keys) {
    out.push(
      `resource "aws_kms_key" ${hclString(names.get(id)!)} {`,
      ...attrs('  ', [
        ['description', hclString(keyDescription(id))],
        ['custom_key_store_id', storeId],
        ['xks_key_id', hclString(id)],
        ['key_usage', '"ENCRYPT_DECRYPT"'],
        ['customer_master_key_spec', '"SYMMETRIC_DEFAULT"'],
        ...(dependsOn.length ? [['depends_on', `[${dependsOn.join(', ')}]`] as [string, string]] : []),
      ]),
      '',
      '  lifecycle {',
      '    prevent_destroy = true',
      '  }',
      '}',
      '',
    );
  }
  if (!plan.existingKeyStoreId) out.push('output "custom_key_store_id" {', '  value = aws_kms_custom_key_store.xks.id', '}', '');
  if (plan.keys.length > 0) {
    out.push(
      'output "kms_key_arns" {',
      '  value = {',
      ...attrs('    ', plan.keys.map((id) => [hclString(id), `aws_kms_key.${names.get(id)!}.arn`])),
      '  }',
      '}',
      '',
    );
  }
  out.push(...skippedLines(plan, '#'));
  return `${out.join('\n').replace(/\n+$/, '')}\n`;
}

// ---------------------------------------------------------------------------------------------------------------
// CloudFormation: no resource type creates a custom key store, and AWS::KMS::Key's Origin is AWS_KMS or EXTERNAL
// (its resource schema), so a custom resource backed by this Lambda function makes the KMS calls. It never deletes:
// the resources are Retain (a deleted KMS key leaves its ciphertexts undecryptable), so a stack deletion leaves the
// key store and keys for an operator to remove. The event carries the proxy's secret: the function never logs it.
// Inline code (Code.ZipFile) is limited to 4096 characters.
export const SETUP_FUNCTION = `import json, time, urllib.request
import boto3

kms = boto3.client('kms')
MOVE = ('XksProxyUriEndpoint', 'XksProxyUriPath', 'XksProxyConnectivity', 'XksProxyVpcEndpointServiceName')


def state(i):
    s = kms.describe_custom_key_stores(CustomKeyStoreId=i)['CustomKeyStores'][0]
    return s['ConnectionState'], s.get('ConnectionErrorCode', '')


def wait(i, want, ctx):
    while ctx.get_remaining_time_in_millis() > 20000:
        s, code = state(i)
        if s == want:
            return
        if s == 'FAILED' and want == 'CONNECTED':
            raise RuntimeError('key store %s FAILED to connect: %s' % (i, code))
        time.sleep(5)
    raise RuntimeError('key store %s is not %s yet' % (i, want))


def disconnect(i, ctx):
    if state(i)[0] in ('CONNECTED', 'CONNECTING', 'FAILED'):
        kms.disconnect_custom_key_store(CustomKeyStoreId=i)
    wait(i, 'DISCONNECTED', ctx)


def connect(i, ctx):
    s = state(i)[0]
    if s == 'FAILED':
        disconnect(i, ctx)
    if s != 'CONNECTED':
        kms.connect_custom_key_store(CustomKeyStoreId=i)
    wait(i, 'CONNECTED', ctx)


def key_store(req, i, p, old, ctx):
    cred = p['XksProxyAuthenticationCredential']
    move = {f: p[f] for f in MOVE if p.get(f)}
    if req == 'Create':
        i = kms.create_custom_key_store(CustomKeyStoreName=p['CustomKeyStoreName'], CustomKeyStoreType='EXTERNAL_KEY_STORE',
                                        XksProxyAuthenticationCredential=cred, **move)['CustomKeyStoreId']
    else:
        change = {}
        if any(p.get(f) != old.get(f) for f in MOVE):
            disconnect(i, ctx)
            change = move
        if p['CustomKeyStoreName'] != old.get('CustomKeyStoreName'):
            change['NewCustomKeyStoreName'] = p['CustomKeyStoreName']
        if cred != old.get('XksProxyAuthenticationCredential'):
            change['XksProxyAuthenticationCredential'] = cred
        if change:
            kms.update_custom_key_store(CustomKeyStoreId=i, **change)
    connect(i, ctx)
    return i, {'CustomKeyStoreId': i}


def key(req, i, p, old, ctx):
    if req == 'Update' and all(p.get(f) == old.get(f) for f in ('CustomKeyStoreId', 'XksKeyId')):
        kms.update_key_description(KeyId=i, Description=p.get('Description', ''))
        m = kms.describe_key(KeyId=i)['KeyMetadata']
    else:
        connect(p['CustomKeyStoreId'], ctx)
        m = kms.create_key(CustomKeyStoreId=p['CustomKeyStoreId'], Origin='EXTERNAL_KEY_STORE', XksKeyId=p['XksKeyId'],
                           KeySpec='SYMMETRIC_DEFAULT', KeyUsage='ENCRYPT_DECRYPT',
                           Description=p.get('Description', ''))['KeyMetadata']
    return m['KeyId'], {'Arn': m['Arn'], 'KeyId': m['KeyId']}


def handler(event, ctx):
    i = event.get('PhysicalResourceId') or ctx.log_stream_name
    p = event['ResourceProperties']
    status, data, reason = 'SUCCESS', {}, ''
    try:
        req, kind, old = event['RequestType'], event['ResourceType'], event.get('OldResourceProperties') or {}
        if req == 'Delete':
            reason = 'kept'
        elif kind == 'Custom::XksKeyStore':
            i, data = key_store(req, i, p, old, ctx)
        elif kind == 'Custom::XksKey':
            i, data = key(req, i, p, old, ctx)
        else:
            raise ValueError(kind)
    except Exception as e:
        status, reason = 'FAILED', '%s: %s' % (type(e).__name__, e)
    secret = p.get('XksProxyAuthenticationCredential', {}).get('RawSecretAccessKey')
    if secret:
        reason = reason.replace(secret, '(secret)')
    body = json.dumps({'Status': status, 'Reason': (reason + ' (log stream %s)' % ctx.log_stream_name)[:4000],
                       'PhysicalResourceId': i, 'StackId': event['StackId'], 'RequestId': event['RequestId'],
                       'LogicalResourceId': event['LogicalResourceId'], 'Data': data}).encode()
    put = urllib.request.Request(event['ResponseURL'], data=body, method='PUT', headers={'Content-Type': ''})
    urllib.request.urlopen(put, timeout=30).read()
`;

export function renderCloudFormation(plan: KeyStorePlan): string {
  const token = { 'Fn::GetAtt': ['XksSetupFunction', 'Arn'] };
  const retain = { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' };
  const parameters: Record<string, unknown> = {};
  const resources: Record<string, unknown> = {
    XksSetupRole: {
      Type: 'AWS::IAM::Role',
      Properties: {
        AssumeRolePolicyDocument: {
          Version: '2012-10-17',
          Statement: [{ Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' }, Action: 'sts:AssumeRole' }],
        },
        ManagedPolicyArns: [{ 'Fn::Sub': 'arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole' }],
        Policies: [
          {
            PolicyName: 'xks-key-store-setup',
            PolicyDocument: {
              Version: '2012-10-17',
              Statement: [
                {
                  Effect: 'Allow',
                  Action: [
                    'kms:CreateCustomKeyStore',
                    'kms:ConnectCustomKeyStore',
                    'kms:DisconnectCustomKeyStore',
                    'kms:DescribeCustomKeyStores',
                    'kms:UpdateCustomKeyStore',
                    'kms:CreateKey',
                    'kms:DescribeKey',
                    'kms:UpdateKeyDescription',
                  ],
                  Resource: '*',
                },
              ],
            },
          },
        ],
      },
    },
    XksSetupFunction: {
      Type: 'AWS::Lambda::Function',
      Properties: {
        Description: 'Creates and connects an AWS KMS external key store and its keys (xks aws setup)',
        Runtime: 'python3.12',
        Handler: 'index.handler',
        Timeout: 900,
        Role: { 'Fn::GetAtt': ['XksSetupRole', 'Arn'] },
        Code: { ZipFile: SETUP_FUNCTION },
      },
    },
  };
  let storeId: unknown;
  if (plan.existingKeyStoreId) {
    storeId = plan.existingKeyStoreId;
  } else {
    const secretFrom = 'value' in plan.secret ? 'shown by --show-secret' : plan.secret.from;
    parameters.XksProxySecret = {
      Type: 'String',
      NoEcho: true,
      MinLength: 43,
      MaxLength: 64,
      AllowedPattern: '^[a-zA-Z0-9/+=]+$',
      Description: `Secret access key of the XKS proxy credential ${plan.accessKeyId} (${secretFrom})`,
      ...('value' in plan.secret ? { Default: plan.secret.value } : {}),
    };
    resources.XksKeyStore = {
      Type: 'Custom::XksKeyStore',
      ...retain,
      Properties: {
        ServiceToken: token,
        CustomKeyStoreName: plan.name,
        XksProxyConnectivity: plan.connectivity,
        XksProxyUriEndpoint: plan.endpoint,
        XksProxyUriPath: xksUriPath(plan.prefix),
        ...(plan.connectivity === 'VPC_ENDPOINT_SERVICE' ? { XksProxyVpcEndpointServiceName: plan.vpcEndpointServiceName } : {}),
        XksProxyAuthenticationCredential: { AccessKeyId: plan.accessKeyId, RawSecretAccessKey: { Ref: 'XksProxySecret' } },
      },
    };
    storeId = { Ref: 'XksKeyStore' };
  }
  const outputs: Record<string, unknown> = plan.existingKeyStoreId
    ? {}
    : { CustomKeyStoreId: { Description: 'The external key store', Value: { Ref: 'XksKeyStore' } } };
  const names = resourceNames(plan.keys, cfnName, '');
  for (const id of plan.keys) {
    const name = names.get(id)!;
    resources[name] = {
      Type: 'Custom::XksKey',
      ...retain,
      Properties: { ServiceToken: token, CustomKeyStoreId: storeId, XksKeyId: id, Description: keyDescription(id) },
    };
    outputs[`${name}Arn`] = { Description: `The KMS key over external key ${id}`, Value: { 'Fn::GetAtt': [name, 'Arn'] } };
  }
  const where = plan.prefix ? `prefix ${plan.prefix}` : 'the prefix-less key store';
  const template = {
    AWSTemplateFormatVersion: '2010-09-09',
    Description:
      `AWS KMS external key store for ${where} (xks aws setup), in region ${plan.region}. CloudFormation has no custom key ` +
      'store resource type and AWS::KMS::Key cannot make a key in one, so a Lambda-backed custom resource calls KMS. ' +
      'Resources are retained when the stack is deleted.',
    ...(Object.keys(parameters).length ? { Parameters: parameters } : {}),
    Rules: {
      KeyStoreRegion: {
        Assertions: [
          {
            Assert: { 'Fn::Equals': [{ Ref: 'AWS::Region' }, plan.region] },
            AssertDescription: `KMS signs its requests to the proxy for ${plan.region} (the prefix's region): create the stack there`,
          },
        ],
      },
    },
    Resources: resources,
    ...(Object.keys(outputs).length ? { Outputs: outputs } : {}),
    Metadata: {
      XksAwsSetup: {
        Region: plan.region,
        ConfigFile: plan.configFile,
        NotReady: plan.skipped.map((s) => `${s.id}: ${s.why}`),
        Notes: plan.existingKeyStoreId ? [] : (plan.notes ?? []),
      },
    },
  };
  return `${JSON.stringify(template, null, 2)}\n`;
}
