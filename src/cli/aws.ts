// `xks aws setup`: what AWS KMS needs to use one prefix of this proxy as an external key store, printed as AWS CLI
// commands, a CloudFormation template or Terraform (rendered by aws-setup.ts). It reads the token for the keys that
// are ready, and the prefix's SigV4 secret only when --show-secret asks for it in the output.
import { dirname, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { configPath, loadFile, readSecret, type LoadedConfig, type SecretFilePolicy } from '../config/load.js';
import type { Config, PrefixConfig } from '../config/schema.js';
import { openCatalogue, openHsm, openLifecycle } from '../proxy.js';
import {
  defaultKeyStoreName,
  endpointProblem,
  listenerNotes,
  render,
  vpcServiceProblem,
  whyNotReady,
  type Connectivity,
  type KeyStorePlan,
  type SecretOutput,
  type SetupFormat,
} from './aws-setup.js';
import { withConfigOption } from './context.js';

interface SetupOptions {
  format: SetupFormat;
  prefix?: string;
  endpoint?: string;
  connectivity?: Connectivity;
  vpcEndpointServiceName?: string;
  name?: string;
  accessKeyId?: string;
  keyStoreId?: string;
  showSecret?: boolean;
}

export function awsCommand(): Command {
  const aws = new Command('aws').description('what AWS KMS needs to use this proxy as an external key store');
  aws.addCommand(
    withConfigOption(new Command('setup'))
      .description(
        'print, for one prefix of the config, what creates its external key store in AWS KMS, connects it, and makes one ' +
          'KMS key per external key that is ready (AES-256, enabled, encrypt and decrypt)',
      )
      .addOption(new Option('--format <format>', 'AWS CLI commands (a bash script), a CloudFormation template, or Terraform').choices(['cli', 'cloudformation', 'terraform']).default('cli'))
      .option('--prefix <path>', "the prefix's path (its key store); needed when the config has more than one")
      .option('--endpoint <url>', 'https://HOST where KMS reaches the proxy on port 443: its public name, or the private DNS name of the VPC endpoint service')
      .addOption(new Option('--connectivity <type>', 'how KMS reaches the proxy (default: PUBLIC_ENDPOINT, or VPC_ENDPOINT_SERVICE with --vpc-endpoint-service-name)').choices(['PUBLIC_ENDPOINT', 'VPC_ENDPOINT_SERVICE']))
      .option('--vpc-endpoint-service-name <name>', 'the VPC endpoint service in front of the proxy, e.g. com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0')
      .option('--name <name>', 'the key store name in KMS, unique in the account and region (default: xks- and the prefix path)')
      .option('--access-key-id <id>', "which of the prefix's credentials KMS signs with (default: the newest by `created`, else the first)")
      .option('--key-store-id <id>', 'an existing key store (cks-...): print only its connection and the keys')
      .option('--show-secret', 'put the SigV4 secret (read from its file or environment variable) in the output; otherwise it is a placeholder')
      .action(async (opts: SetupOptions, cmd: Command) => {
        const file = configPath(cmd.optsWithGlobals<{ config?: string }>().config);
        const config = readConfig(file);
        const prefix = choosePrefix(config, opts.prefix);
        const plan = planFor(file, config, prefix, opts);
        const { ready, skipped } = await readyKeys(file, config, prefix);
        process.stdout.write(render({ ...plan, keys: ready, skipped }, opts.format));
      }),
  );
  return aws;
}

/** The config (with its overrides file), without reading any secret: only --show-secret reads one. */
function readConfig(file: string): Config {
  return loadFile(file, { pin: false }).config;
}

function choosePrefix(config: Config, wanted: string | undefined): PrefixConfig {
  const paths = config.prefixes.map((p) => (p.path === '' ? '""' : p.path));
  if (wanted === undefined) {
    if (config.prefixes.length === 1) return config.prefixes[0]!;
    throw new Error(`the config has ${config.prefixes.length} prefixes: choose one with --prefix (${paths.join(', ')})`);
  }
  const path = wanted.replace(/^\/+|\/+$/g, '');
  const found = config.prefixes.find((p) => p.path === path);
  if (!found) throw new Error(`no prefix "${wanted}" in the config (it has ${paths.join(', ')})`);
  return found;
}

function planFor(file: string, config: Config, prefix: PrefixConfig, opts: SetupOptions): Omit<KeyStorePlan, 'keys' | 'skipped'> {
  const i = config.prefixes.indexOf(prefix);
  const credential = chooseCredential(prefix, opts.accessKeyId);
  const connectivity = opts.connectivity ?? (opts.vpcEndpointServiceName ? 'VPC_ENDPOINT_SERVICE' : 'PUBLIC_ENDPOINT');
  const base = {
    configFile: file,
    prefix: prefix.path,
    region: prefix.region,
    accessKeyId: credential.accessKeyId,
    connectivity,
    notes: listenerNotes(config.listeners, prefix.region),
  };
  if (opts.keyStoreId !== undefined) {
    if (!/^[A-Za-z0-9-]{1,64}$/.test(opts.keyStoreId)) throw new Error(`--key-store-id takes a key store id such as cks-1234567890abcdef0, not "${opts.keyStoreId}"`);
    return { ...base, existingKeyStoreId: opts.keyStoreId, name: '', endpoint: '', secret: { from: '' } };
  }
  if (opts.endpoint === undefined) {
    throw new Error('give --endpoint https://HOST: the name KMS connects to on port 443 (a public name, or the VPC endpoint service\'s private DNS name)');
  }
  const bad = endpointProblem(opts.endpoint);
  if (bad) throw new Error(bad);
  if (connectivity === 'VPC_ENDPOINT_SERVICE') {
    if (!opts.vpcEndpointServiceName) throw new Error('VPC_ENDPOINT_SERVICE connectivity needs --vpc-endpoint-service-name');
    const badName = vpcServiceProblem(opts.vpcEndpointServiceName);
    if (badName) throw new Error(badName);
  } else if (opts.vpcEndpointServiceName) {
    throw new Error('--vpc-endpoint-service-name goes with --connectivity VPC_ENDPOINT_SERVICE');
  }
  const name = opts.name ?? defaultKeyStoreName(prefix.path);
  if (name.length < 1 || name.length > 256) throw new Error('--name takes 1 to 256 characters');
  const j = prefix.credentials.indexOf(credential);
  const what = `prefixes.${i}.credentials.${j}.secret`;
  const ref = credential.secret;
  let secret: SecretOutput;
  if (opts.showSecret) {
    const policy: SecretFilePolicy = { mode: config.secretFilePermissions, warnings: [] };
    secret = { value: readSecret(ref, dirname(file), what, policy) };
    for (const w of policy.warnings) console.error(`xks: warning: ${w}`);
  } else {
    secret = { from: 'env' in ref ? `${what}: environment variable ${ref.env}` : `${what}: the file ${resolve(dirname(file), ref.file)}` };
  }
  return {
    ...base,
    name,
    endpoint: opts.endpoint,
    ...(connectivity === 'VPC_ENDPOINT_SERVICE' ? { vpcEndpointServiceName: opts.vpcEndpointServiceName } : {}),
    secret,
  };
}

function chooseCredential(prefix: PrefixConfig, accessKeyId: string | undefined): PrefixConfig['credentials'][number] {
  if (accessKeyId !== undefined) {
    const found = prefix.credentials.find((c) => c.accessKeyId === accessKeyId);
    if (!found) throw new Error(`prefix "${prefix.path}" has no credential ${accessKeyId}`);
    return found;
  }
  // During a rotation both credentials are listed; the newest is the one KMS should get.
  const dated = prefix.credentials.filter((c) => c.created).sort((a, b) => Date.parse(b.created!) - Date.parse(a.created!));
  return dated[0] ?? prefix.credentials[0]!;
}

/** The prefix's keys in the token (its allow-list, or every key), split into ready and not, with why not. */
async function readyKeys(file: string, config: Config, prefix: PrefixConfig): Promise<{ ready: string[]; skipped: { id: string; why: string }[] }> {
  // This command never serves: only the PIN is read (loadFile), not the key stores' secrets, so no prefixes.
  const read = loadFile(file);
  for (const w of read.warnings) console.error(`xks: warning: ${w}`);
  const loaded: LoadedConfig = { ...read, config, prefixes: [] };
  const hsm = await openHsm(loaded);
  try {
    const keys = await openLifecycle(hsm, openCatalogue(hsm, loaded), loaded).list();
    const byId = new Map(keys.map((k) => [k.id, k]));
    const ids = prefix.keys ?? keys.map((k) => k.id);
    const now = new Date();
    const ready: string[] = [];
    const skipped: { id: string; why: string }[] = [];
    for (const id of ids) {
      const key = byId.get(id);
      const why = key ? whyNotReady(key, now, prefix.keyPolicies?.[id]?.kmsKeyArns) : 'the token has no such key';
      if (why) skipped.push({ id, why });
      else ready.push(id);
    }
    return { ready, skipped };
  } finally {
    hsm.close();
  }
}
