// Reading the config file and the secrets it refers to. Errors name the field and say what is wrong.
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { compilePolicy, type CompiledPolicy } from '../keys/policy.js';
import { ConfigSchema, type Config, type SecretRef } from './schema.js';

/** Why a configuration is refused: Invalid (the file or a value), SecretFileExposed (a secret file open to others). */
export type ConfigErrorKind = 'Invalid' | 'SecretFileExposed';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    message: string,
    readonly kind: ConfigErrorKind = 'Invalid',
  ) {
    super(message);
  }
}

/** A prefix with its secrets read: what the SigV4 verifier needs. */
export interface ResolvedPrefix {
  path: string;
  region: string;
  credentials: Map<string, string>; // access key id -> secret
  keys: ReadonlySet<string> | undefined;
  policy: CompiledPolicy;
  rateLimit?: { requestsPerSecond: number; burst: number } | undefined;
}

/** The admin API with its secrets read (absent when the config has no admin section: the API is off). */
export interface ResolvedAdmin {
  listener: { host: string; port: number };
  region: string;
  credentials: Map<string, string>; // access key id -> secret
}

export interface LoadedConfig {
  file: string;
  config: Config;
  pin: string;
  prefixes: ResolvedPrefix[];
  admin?: ResolvedAdmin | undefined;
  /** What loading let through but an operator should fix (secret files open to others, secretFilePermissions: warn). */
  warnings: string[];
}

export function configPath(explicit?: string): string {
  const p = explicit ?? process.env.XKS_CONFIG;
  if (!p) throw new ConfigError('no configuration: pass --config FILE or set XKS_CONFIG');
  return resolve(p);
}

export function parseConfig(text: string, file: string): Config {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid YAML or JSON: ${(e as Error).message.split('\n')[0]}`);
  }
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.slice(0, 5).map((i) => `  ${i.path.join('.') || '(top level)'}: ${i.message}`);
    throw new ConfigError(`${file} is not a valid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}

/**
 * Why a secret file is open to others, or undefined when only this process's user (and group) can read it. Symlinks
 * are followed: a Kubernetes Secret volume is links to files with the volume's defaultMode. Group access is accepted for
 * this process's own group only: a service group owning a 0440 file, or Kubernetes' fsGroup (which adds group read to
 * every file of a Secret volume, whatever defaultMode says).
 */
export function secretFileExposure(file: string): string | undefined {
  let st;
  try {
    st = statSync(file);
  } catch {
    return undefined; // reading it says why
  }
  const mode = st.mode & 0o777;
  const shown = `mode 0${mode.toString(8).padStart(3, '0')}`;
  if (mode & 0o006) return `is open to other users (${shown})`;
  const ownGroup = process.getegid?.();
  if (mode & 0o060 && st.gid !== ownGroup) return `is open to group ${st.gid}, not this process's group ${ownGroup ?? '?'} (${shown})`;
  return undefined;
}

/** What loading does with a secret file open to others (config `secretFilePermissions`). */
export interface SecretFilePolicy {
  mode: 'refuse' | 'warn';
  warnings: string[];
}

/** Refuse (or, in warn mode, note) a secret file open to others; the message names the file, never its content. */
export function checkSecretFile(file: string, what: string, policy: SecretFilePolicy): void {
  const why = secretFileExposure(file);
  if (!why) return;
  const text = `${what}: ${file} ${why}: make it readable by this process only (chmod 0600 or 0400, or 0440 with this process's group)`;
  if (policy.mode === 'warn') {
    policy.warnings.push(`${text}; loaded anyway (secretFilePermissions: warn)`);
    return;
  }
  throw new ConfigError(`${text}, or set secretFilePermissions: warn (refused: SecretFileExposed)`, 'SecretFileExposed');
}

export function readSecret(ref: SecretRef, baseDir: string, what: string, policy: SecretFilePolicy = { mode: 'refuse', warnings: [] }): string {
  if ('env' in ref) {
    const v = process.env[ref.env];
    if (v === undefined || v === '') throw new ConfigError(`${what}: environment variable ${ref.env} is not set`);
    return v;
  }
  const file = resolve(baseDir, ref.file);
  checkSecretFile(file, what, policy);
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw new ConfigError(`${what}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** Paths in the config are relative to the config file. */
export function resolvePaths(config: Config, baseDir: string): Config {
  const r = (p: string) => resolve(baseDir, p);
  const https = config.listeners.https;
  return {
    ...config,
    hsm: { ...config.hsm, ...(config.hsm.module ? { module: r(config.hsm.module) } : {}) },
    ...(config.audit ? { audit: { ...config.audit, dir: r(config.audit.dir) } } : {}),
    listeners: {
      ...config.listeners,
      ...(https
        ? {
            https: {
              ...https,
              certFile: r(https.certFile),
              keyFile: r(https.keyFile),
              ...(https.mtls ? { mtls: { ...https.mtls, clientCaFile: r(https.mtls.clientCaFile) } } : {}),
            },
          }
        : {}),
    },
  };
}

export function loadConfig(file: string, opts: { needPin?: boolean } = {}): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read configuration ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const baseDir = dirname(file);
  const config = resolvePaths(parseConfig(text, file), baseDir);
  const policy: SecretFilePolicy = { mode: config.secretFilePermissions, warnings: [] };
  if (config.listeners.https) checkSecretFile(config.listeners.https.keyFile, 'listeners.https.keyFile', policy);
  const secretVerify = /^[A-Za-z0-9+/=]{43,64}$/;
  const prefixes = config.prefixes.map((p, i) => {
    const credentials = new Map<string, string>();
    p.credentials.forEach((c, j) => {
      const what = `prefixes.${i}.credentials.${j}.secret`;
      const secret = readSecret(c.secret, baseDir, what, policy);
      if (!secretVerify.test(secret)) throw new ConfigError(`${what}: must be 43 to 64 characters of A-Za-z0-9+/=`);
      credentials.set(c.accessKeyId, secret);
    });
    return {
      path: p.path,
      region: p.region,
      credentials,
      keys: p.keys ? new Set(p.keys) : undefined,
      policy: compilePolicy(p.policy, p.keyPolicies),
      rateLimit: p.rateLimit
        ? { requestsPerSecond: p.rateLimit.requestsPerSecond, burst: p.rateLimit.burst ?? Math.max(1, Math.ceil(p.rateLimit.requestsPerSecond)) }
        : undefined,
    };
  });
  const admin = resolveAdmin(config, baseDir, prefixes, policy);
  const pin = opts.needPin === false ? '' : readSecret(config.hsm.pin, baseDir, 'hsm.pin', policy);
  return { file, config, pin, prefixes, admin, warnings: policy.warnings };
}

// Admin secrets are not KMS's format: any 32 to 128 printable characters, as long as an HMAC key is sensible.
const ADMIN_SECRET = /^[\x21-\x7e]{32,128}$/;

function resolveAdmin(config: Config, baseDir: string, prefixes: ResolvedPrefix[], policy: SecretFilePolicy): ResolvedAdmin | undefined {
  const a = config.admin;
  if (!a) return undefined;
  const xksSecrets = new Set(prefixes.flatMap((p) => [...p.credentials.values()]));
  const credentials = new Map<string, string>();
  a.credentials.forEach((c, i) => {
    const what = `admin.credentials.${i}.secret`;
    const secret = readSecret(c.secret, baseDir, what, policy);
    if (!ADMIN_SECRET.test(secret)) throw new ConfigError(`${what}: must be 32 to 128 printable characters without spaces`);
    if (xksSecrets.has(secret)) throw new ConfigError(`${what}: is also a key store secret; give the admin API a secret of its own`);
    credentials.set(c.accessKeyId, secret);
  });
  return { listener: { host: a.listener.host, port: a.listener.port }, region: a.region, credentials };
}
