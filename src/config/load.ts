// Reading the config file and the secrets it refers to. Errors name the field and say what is wrong.
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ProxyError } from '../errors.js';
import { compilePolicy, type CompiledPolicy } from '../keys/policy.js';
import { ConfigSchema, type Config, type SecretRef } from './schema.js';

/** Why a configuration is refused: ConfigInvalid (the file or a value), SecretFileExposed (a secret file open to others). */
export type ConfigErrorName = 'ConfigInvalid' | 'SecretFileExposed';

export class ConfigError extends ProxyError<ConfigErrorName> {
  override readonly name = 'ConfigError';
  constructor(message: string, code: ConfigErrorName = 'ConfigInvalid') {
    super(code, message);
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

/**
 * The configuration as a command that does not serve needs it: the file (merged with its overrides file) and, when asked
 * for, the HSM PIN. No SigV4 or admin secret is read: a CLI-only host (a backup site, cron) need not have them.
 */
export interface LoadedFile {
  file: string;
  /** The files it was read from: the config file, then its overrides file (both watched for a reload). */
  files: string[];
  config: Config;
  /** The user PIN; empty when the command does not use the HSM. */
  pin: string;
  /** What loading let through but an operator should fix (secret files open to others, secretFilePermissions: warn). */
  warnings: string[];
}

/** The configuration as `xks serve` needs it: every secret read, the key stores' and the admin API's too. */
export interface LoadedConfig extends LoadedFile {
  prefixes: ResolvedPrefix[];
  admin?: ResolvedAdmin | undefined;
}

export function configPath(explicit?: string): string {
  const p = explicit ?? process.env.XKS_CONFIG;
  if (!p) throw new ConfigError('no configuration: pass --config FILE or set XKS_CONFIG');
  return resolve(p);
}

/** One thing wrong with the file: the field's path (dotted) and what is wrong. */
export interface ConfigIssue {
  path: string;
  message: string;
}

/**
 * The config file's contents merged with its overrides file (top-level `overrides: FILE`, relative to the config file):
 * a mapping there is merged key by key into this file's, anything else (a list, a value) replaces this file's, and
 * null removes the setting. A generated file (scripts/dev.sh) names an overrides file that the user owns.
 */
export function readConfigSource(text: string, file: string): { raw: unknown; files: string[] } {
  const raw = parseYamlText(text, file);
  const files = [file];
  if (!isMapping(raw) || raw.overrides === undefined) return { raw, files };
  if (typeof raw.overrides !== 'string' || raw.overrides === '') {
    throw new ConfigError(`${file}: overrides: must be the path of a YAML or JSON file`);
  }
  const overFile = resolve(dirname(file), raw.overrides);
  let overText: string;
  try {
    overText = readFileSync(overFile, 'utf8');
  } catch (e) {
    throw new ConfigError(`${file}: overrides: cannot read ${overFile} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const over = parseYamlText(overText, overFile) ?? {}; // a file of comments only overrides nothing
  if (!isMapping(over)) throw new ConfigError(`${overFile}: must be a mapping of settings (as in the config file)`);
  // One level only: an overrides file that names another could hide where a setting comes from.
  if (over.overrides !== undefined) throw new ConfigError(`${overFile}: overrides: is not allowed in an overrides file`);
  files.push(overFile);
  return { raw: mergeSettings(raw, over), files };
}

function parseYamlText(text: string, file: string): unknown {
  try {
    return parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid YAML or JSON: ${(e as Error).message.split('\n')[0]}`);
  }
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `over` merged into `base`: mappings key by key, lists and values replaced, null removes. Pure. */
export function mergeSettings(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else if (isMapping(v) && isMapping(out[k])) out[k] = mergeSettings(out[k] as Record<string, unknown>, v);
    else out[k] = v;
  }
  return out;
}

/** The schema's verdict on a merged source: the config, or every issue (not only the first). */
export function validateConfig(raw: unknown): { config: Config; issues: [] } | { config: undefined; issues: ConfigIssue[] } {
  const parsed = ConfigSchema.safeParse(raw);
  if (parsed.success) return { config: parsed.data, issues: [] };
  return { config: undefined, issues: parsed.error.issues.map((i) => ({ path: i.path.join('.') || '(top level)', message: i.message })) };
}

export function parseConfig(text: string, file: string): Config {
  const v = validateConfig(readConfigSource(text, file).raw);
  if (!v.config) {
    const lines = v.issues.slice(0, 5).map((i) => `  ${i.path}: ${i.message}`);
    throw new ConfigError(`${file} is not a valid configuration:\n${lines.join('\n')}`);
  }
  return v.config;
}

/**
 * What `xks serve` needs beyond what every command needs: an XKS listener and a key store. A config without them is
 * valid for the other commands (a CLI-only host).
 */
export function servingIssues(config: Config): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const l = config.listeners;
  if (!l.http && !l.https) issues.push({ path: 'listeners', message: 'needs an http or https listener to serve' });
  if (config.prefixes.length === 0) issues.push({ path: 'prefixes', message: 'needs at least one key store prefix to serve' });
  return issues;
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

/** SigV4 secrets as KMS accepts them (XksProxyAuthenticationCredential: 43 to 64 characters of Base64's alphabet). */
export const SIGV4_SECRET = /^[A-Za-z0-9+/=]{43,64}$/;

/** The file and its overrides, validated, with paths resolved; the PIN read only when `pin` (default) is true. */
export function loadFile(file: string, opts: { pin?: boolean } = {}): LoadedFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read configuration ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const { raw, files } = readConfigSource(text, file);
  const v = validateConfig(raw);
  if (!v.config) {
    const lines = v.issues.slice(0, 5).map((i) => `  ${i.path}: ${i.message}`);
    const from = files.length > 1 ? ` (with its overrides ${files[1]})` : '';
    throw new ConfigError(`${file}${from} is not a valid configuration:\n${lines.join('\n')}`);
  }
  const baseDir = dirname(file);
  const config = resolvePaths(v.config, baseDir);
  const policy: SecretFilePolicy = { mode: config.secretFilePermissions, warnings: [] };
  const pin = opts.pin === false ? '' : readSecret(config.hsm.pin, baseDir, 'hsm.pin', policy);
  return { file, files, config, pin, warnings: policy.warnings };
}

/** One key store credential's secret, read and checked; the only secret `xks call` reads. */
export function readSigV4Secret(loaded: LoadedFile, prefixIndex: number, credentialIndex: number, policy?: SecretFilePolicy): string {
  const c = loaded.config.prefixes[prefixIndex]!.credentials[credentialIndex]!;
  const what = `prefixes.${prefixIndex}.credentials.${credentialIndex}.secret`;
  const secret = readSecret(c.secret, dirname(loaded.file), what, policy ?? { mode: loaded.config.secretFilePermissions, warnings: loaded.warnings });
  if (!SIGV4_SECRET.test(secret)) throw new ConfigError(`${what}: must be 43 to 64 characters of A-Za-z0-9+/=`);
  return secret;
}

/** Everything `xks serve` needs: the PIN, the TLS key's permissions, every key store and admin secret. */
export function loadConfig(file: string): LoadedConfig {
  const base = loadFile(file, { pin: false });
  const { config } = base;
  const baseDir = dirname(file);
  const policy: SecretFilePolicy = { mode: config.secretFilePermissions, warnings: base.warnings };
  if (config.listeners.https) checkSecretFile(config.listeners.https.keyFile, 'listeners.https.keyFile', policy);
  const prefixes = config.prefixes.map((p, i) => {
    const credentials = new Map<string, string>();
    p.credentials.forEach((c, j) => credentials.set(c.accessKeyId, readSigV4Secret(base, i, j, policy)));
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
  const pin = readSecret(config.hsm.pin, baseDir, 'hsm.pin', policy);
  return { ...base, pin, prefixes, admin, warnings: policy.warnings };
}

// Admin secrets are not KMS's format: any 32 to 128 printable characters, as long as an HMAC key is sensible.
export const ADMIN_SECRET = /^[\x21-\x7e]{32,128}$/;

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
