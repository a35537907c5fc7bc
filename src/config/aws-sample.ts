// AWS's sample XKS proxy's settings file (aws-samples/aws-kms-xks-proxy, xks-axum/src/settings.rs: one TOML file) and
// its conversion into this proxy's configuration. Pure: the caller reads and writes files, finds the HSM profile and
// makes new credentials. The sample keeps secrets in clear (the PIN, SigV4 secrets): the conversion hands them back as
// secret files to write, and the config refers to those files; no message here ever contains a secret.
import { basename, isAbsolute, resolve } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { ProxyError } from '../errors.js';
import type { IvMode } from '../hsm/profile.js';
import { ConfigSchema } from './schema.js';

/** Why a settings file cannot be converted; the message names the setting, never its value. */
export class AwsSampleError extends ProxyError<'AwsSampleSettingsInvalid'> {
  override readonly name = 'AwsSampleError';
  constructor(message: string) {
    super('AwsSampleSettingsInvalid', message);
  }
}

const int = z.number().int();

// The sample's serde structs ignore unknown fields, and so do these.
export const AwsSampleSettingsSchema = z.object({
  server: z.object({
    ip: z.string(),
    port: int.min(0).max(65535),
    port_http_ping: int.min(0).max(65535).optional(),
    region: z.string(),
    service: z.string(),
    ciphertext_metadata_b64: z.string().optional(),
    tcp_keepalive: z.object({
      tcp_keepalive_secs: int.optional(),
      tcp_keepalive_interval_secs: int.optional(),
      tcp_keepalive_retries: int.optional(),
    }),
  }),
  security: z.object({
    is_sigv4_auth_enabled: z.boolean(),
    is_tls_enabled: z.boolean(),
    is_mtls_enabled: z.boolean(),
    secondary_auth: z.string().optional(),
    oso: z.object({ polar_file_path: z.string() }).optional(),
  }),
  tls: z
    .object({
      tls_cert_pem: z.string(),
      tls_key_pem: z.string(),
      mtls_client_ca_pem: z.string().optional(),
      mtls_client_dns_name: z.string().optional(),
    })
    .optional(),
  tracing: z.object({
    is_stdout_writer_enabled: z.boolean(),
    is_file_writer_enabled: z.boolean(),
    level: z.string().optional(),
    directory: z.string().optional(),
    file_prefix: z.string().optional(),
    rotation_kind: z.string().optional(),
  }),
  pkcs11: z.object({
    session_pool_max_size: int.min(0),
    session_pool_timeout_milli: int.min(0),
    user_pin: z.string(),
    session_eager_close: z.boolean(),
    PKCS11_HSM_MODULE: z.string(),
    context_read_timeout_milli: int.min(0),
  }),
  pkcs11_logger: z
    .object({
      PKCS11_LOGGER_LIBRARY_PATH: z.string(),
      PKCS11_LOGGER_LOG_FILE_PATH: z.string(),
      PKCS11_LOGGER_FLAGS: z.string(),
    })
    .optional(),
  limits: z.object({ max_plaintext_in_base64: int.min(0), max_aad_in_base64: int.min(0) }),
  hsm_capabilities: z.object({ can_generate_iv: z.boolean(), is_zero_iv_required: z.boolean() }),
  external_key_stores: z.array(
    z.object({
      uri_path_prefix: z.string(),
      sigv4_access_key_id: z.string(),
      sigv4_secret_access_key: z.string(),
      xks_key_id_set: z.array(z.string()),
    }),
  ),
});
export type AwsSampleSettings = z.infer<typeof AwsSampleSettingsSchema>;

/** The sections settings.rs reads; anything else in the file was never used by the sample either. */
const SECTIONS = new Set(['server', 'security', 'tls', 'tracing', 'pkcs11', 'pkcs11_logger', 'limits', 'hsm_capabilities', 'external_key_stores']);

/** Parse the sample's settings file. Errors say where (line and column, a setting's path), never what was there. */
export function parseAwsSampleSettings(text: string, file: string): { settings: AwsSampleSettings; unknownSections: string[] } {
  let raw: Record<string, unknown>;
  try {
    raw = parseToml(text);
  } catch (e) {
    // smol-toml's message quotes the offending line, which may be the PIN's: keep only its first sentence.
    const err = e as { message?: string; line?: number; column?: number };
    const why = (err.message ?? 'not valid TOML').split('\n')[0];
    throw new AwsSampleError(`${file}: ${why} (line ${err.line ?? '?'}, column ${err.column ?? '?'})`);
  }
  const parsed = AwsSampleSettingsSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.slice(0, 5).map((i) => `  ${i.path.join('.') || '(top level)'}: ${i.code === 'invalid_type' ? `expected ${(i as { expected?: string }).expected ?? 'another type'}` : 'not a valid value'}`);
    throw new AwsSampleError(`${file} is not a settings file of AWS's sample proxy:\n${lines.join('\n')}`);
  }
  return { settings: parsed.data, unknownSections: Object.keys(raw).filter((k) => !SECTIONS.has(k)) };
}

/** A setting that is not carried over as it was, with what to do instead. */
export interface MigrationNote {
  setting: string;
  note: string;
}

export interface MigrationSecret {
  /** File name, next to the config (the config refers to it by this name). */
  file: string;
  value: string;
  what: string;
}

export interface MigratedKeyStore {
  /** This proxy's prefix path (no leading slash). */
  path: string;
  /** The sample's uri_path_prefix, as it was. */
  samplePrefix: string;
  accessKeyId: string;
  /** The credential is new (the sample's was empty or not one KMS accepts): KMS must be given it. */
  newCredential: boolean;
  secretFile: string;
  keys: string[];
}

export interface Migration {
  /** This proxy's configuration, as it is written (validated against ConfigSchema). */
  config: Record<string, unknown>;
  secrets: MigrationSecret[];
  keyStores: MigratedKeyStore[];
  notes: MigrationNote[];
}

export interface MigrationOptions {
  /** The token: the sample took the first slot with a token; this proxy never guesses. */
  tokenLabel?: string | undefined;
  tokenSerial?: string | undefined;
  /** The HSM profiles there are, for the module the sample loaded (matched by the library's file name). */
  profiles: readonly { name: string; modulePaths: readonly string[]; ivMode: IvMode }[];
  /** A profile named by the operator instead of the one the library's name gives. */
  profile?: string | undefined;
  /** The module to load instead of the sample's. */
  module?: string | undefined;
  /** Whether a path exists on this host (the sample's module path may be another host's). */
  exists: (path: string) => boolean;
  /** The directory the sample ran in: its relative paths (tls/..., configuration/...) are relative to it. */
  sampleDir: string;
  /** The XKS listener's port instead of the sample's (which the sample holds while both run). */
  port?: number | undefined;
  /** Base name of the secret files: `<stem>.pin`, `<stem>.sigv4-secret-<n>`. */
  stem: string;
  /** A new SigV4 credential, for a key store whose credential KMS would not accept. */
  newCredential: () => { accessKeyId: string; secret: string };
}

// KMS's rules for a proxy credential (CreateCustomKeyStore): also what this proxy's loader checks.
const ACCESS_KEY_ID = /^[A-Z2-7]{20,30}$/;
const SECRET = /^[A-Za-z0-9+/=]{43,64}$/;
/** The placeholders in the sample's example settings files: public, so never a secret. */
const PUBLISHED_PLACEHOLDERS = new Set(['PleaseReplaceThisWithSomeSecretOfLength43To64']);
const LEVELS: Record<string, string> = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };

export function migrateAwsSample(s: AwsSampleSettings, opts: MigrationOptions): Migration {
  const notes: MigrationNote[] = [];
  const note = (setting: string, text: string) => notes.push({ setting, note: text });
  const secrets: MigrationSecret[] = [];
  const samplePath = (setting: string, p: string) => {
    const full = isAbsolute(p) ? p : resolve(opts.sampleDir, p);
    if (!isAbsolute(p)) note(setting, `${p} is relative to the directory the sample ran in: read as ${full} (--sample-dir).`);
    if (!opts.exists(full)) note(setting, `${full} is not on this host: copy it here, or fix the path in the config.`);
    return full;
  };

  // -- hsm --
  if ((opts.tokenLabel === undefined) === (opts.tokenSerial === undefined)) {
    throw new AwsSampleError('name the token with exactly one of --token-label or --token-serial (the sample took the first slot; this proxy never does)');
  }
  const logger = s.pkcs11_logger?.PKCS11_LOGGER_LIBRARY_PATH ? s.pkcs11_logger : undefined;
  // With pkcs11-logger in front, the module the sample named is the logger; the token's library is the logger's target.
  const library = logger && basename(s.pkcs11.PKCS11_HSM_MODULE).includes('pkcs11-logger') ? logger.PKCS11_LOGGER_LIBRARY_PATH : s.pkcs11.PKCS11_HSM_MODULE;
  if (library !== s.pkcs11.PKCS11_HSM_MODULE) {
    note('pkcs11_logger', `not carried over: the token's library ${library} is loaded directly. To log PKCS#11 calls again, set hsm.module to the logger and its PKCS11_LOGGER_* variables in the service's environment.`);
  }
  note('pkcs11.PKCS11_HSM_MODULE', 'the sample let the PKCS11_HSM_MODULE environment variable override this setting: if it was set, pass that path with --module.');
  const profile = opts.profile ?? profileFor(library, opts.profiles);
  if (!profile) {
    throw new AwsSampleError(`no HSM profile knows the library ${basename(library)}: name one with --profile (${opts.profiles.map((p) => p.name).join(', ')})`);
  }
  const module = opts.module ?? (opts.exists(library) ? library : undefined);
  if (!module) note('pkcs11.PKCS11_HSM_MODULE', `${library} is not on this host: the profile ${profile} finds its library itself; set hsm.module (or pass --module) if it is elsewhere.`);
  const ivMode = ivModeOf(s.hsm_capabilities);
  const profileIv = opts.profiles.find((p) => p.name === profile)?.ivMode;
  if (profileIv && profileIv !== ivMode) {
    note('hsm_capabilities', `say ${ivMode} (can_generate_iv ${s.hsm_capabilities.can_generate_iv}, is_zero_iv_required ${s.hsm_capabilities.is_zero_iv_required}) where the profile ${profile} says ${profileIv}: kept the sample's; check it with \`xks hsm check\`.`);
  }
  const pinFile = `${opts.stem}.pin`;
  secrets.push({ file: pinFile, value: s.pkcs11.user_pin, what: 'the HSM PIN (pkcs11.user_pin)' });
  const poolSize = Math.min(256, Math.max(1, s.pkcs11.session_pool_max_size));
  note('pkcs11.session_pool_timeout_milli', 'no equivalent: hsm.acquireTimeoutMs (100 ms) bounds the wait for a session, then ThrottlingException, which KMS retries.');
  note('pkcs11.context_read_timeout_milli', 'no equivalent: hsm.operationTimeoutMs (200 ms) bounds each HSM call, and an HSM that hangs never stalls the process.');
  if (s.pkcs11.session_eager_close) note('pkcs11.session_eager_close', 'not carried over (the sample: "for testing purposes only"): sessions are always pooled.');

  // -- listeners --
  const port = opts.port ?? s.server.port;
  const pingPort = s.server.port_http_ping ?? 80; // the sample's default
  const listeners: Record<string, unknown> = {};
  if (s.security.is_tls_enabled) {
    if (!s.tls || !s.tls.tls_cert_pem || !s.tls.tls_key_pem) throw new AwsSampleError('security.is_tls_enabled is true but tls.tls_cert_pem or tls.tls_key_pem is not set');
    const https: Record<string, unknown> = { host: s.server.ip, port, certFile: samplePath('tls.tls_cert_pem', s.tls.tls_cert_pem), keyFile: samplePath('tls.tls_key_pem', s.tls.tls_key_pem) };
    if (s.security.is_mtls_enabled) {
      if (!s.tls.mtls_client_ca_pem || !s.tls.mtls_client_dns_name) {
        throw new AwsSampleError('security.is_mtls_enabled is true but tls.mtls_client_ca_pem or tls.mtls_client_dns_name is not set');
      }
      https.mtls = { clientCaFile: samplePath('tls.mtls_client_ca_pem', s.tls.mtls_client_ca_pem), allowedSubjects: [s.tls.mtls_client_dns_name] };
    }
    listeners.https = https;
  } else {
    if (s.security.is_mtls_enabled) note('security.is_mtls_enabled', 'true without TLS: the sample ignored it, and so does this config.');
    listeners.http = { host: s.server.ip, port };
  }
  if (pingPort !== s.server.port) {
    // The sample served GET /ping alone on that port; here the operations listener serves /ping with /metrics and /health.
    listeners.ops = { host: s.server.ip, port: pingPort };
    note('server.port_http_ping', `/ping is served on ${s.server.ip}:${pingPort} by the operations listener, which also serves /metrics and /health without authentication: restrict that port to your load balancer and Prometheus, or move listeners.ops to 127.0.0.1. /ping is on the XKS listener too.`);
  }
  if (opts.port !== undefined && opts.port !== s.server.port) note('server.port', `the XKS listener is on port ${opts.port} (--port), not the sample's ${s.server.port}: the endpoint KMS calls changes with it.`);
  if (port > 0 && port < 1024) note('server.port', `port ${port} is privileged: give the proxy CAP_NET_BIND_SERVICE (AmbientCapabilities= and CapabilityBoundingSet= in deploy/systemd/xks-proxy.service), or bind a higher port behind a load balancer.`);
  const ka = s.server.tcp_keepalive;
  if (ka.tcp_keepalive_secs !== undefined || ka.tcp_keepalive_interval_secs !== undefined || ka.tcp_keepalive_retries !== undefined) {
    note('server.tcp_keepalive', "not carried over: TCP keep-alive probes follow the host's settings (sysctl net.ipv4.tcp_keepalive_time, _intvl, _probes); idle connections are closed after listeners.idleTimeoutMs (65 s).");
  }

  // -- key stores --
  if (s.server.service !== 'kms-xks-proxy') {
    note('server.service', `"${s.server.service}" is not carried over: SigV4 is verified for service kms-xks-proxy, the one KMS signs with.`);
  }
  if (!s.security.is_sigv4_auth_enabled) {
    note('security.is_sigv4_auth_enabled', 'false is not carried over: every request must be signed with SigV4 (KMS always signs; so must your test clients).');
  }
  const keyStores: MigratedKeyStore[] = s.external_key_stores.map((k, i) => {
    const path = k.uri_path_prefix.replace(/^\/+|\/+$/g, '');
    const secretFile = `${opts.stem}.sigv4-secret-${i + 1}`;
    const valid = ACCESS_KEY_ID.test(k.sigv4_access_key_id) && SECRET.test(k.sigv4_secret_access_key);
    const credential = valid ? { accessKeyId: k.sigv4_access_key_id, secret: k.sigv4_secret_access_key } : opts.newCredential();
    const where = `external_key_stores[${i}] (uri_path_prefix "${k.uri_path_prefix}")`;
    if (!valid) {
      note(
        where,
        `its SigV4 credential is empty or not one KMS accepts: a new one was made (access key id ${credential.accessKeyId}, secret in ${secretFile}). Give it to KMS: aws kms update-custom-key-store --custom-key-store-id <id> --xks-proxy-authentication-credential AccessKeyId=${credential.accessKeyId},RawSecretAccessKey=<the file's content>.`,
      );
    } else if (PUBLISHED_PLACEHOLDERS.has(k.sigv4_secret_access_key)) {
      note(where, "its SigV4 secret is the placeholder published in the sample's example settings: anyone can sign with it. Replace it (README: rotating a SigV4 credential).");
    }
    secrets.push({ file: secretFile, value: credential.secret, what: `the SigV4 secret of ${where}` });
    return { path, samplePrefix: k.uri_path_prefix, accessKeyId: credential.accessKeyId, newCredential: !valid, secretFile, keys: [...k.xks_key_id_set] };
  });
  if (s.security.secondary_auth !== undefined) {
    const polar = s.security.oso?.polar_file_path;
    note('security.secondary_auth', `${s.security.secondary_auth} policies${polar ? ` (${polar})` : ''} are not carried over: write them as prefixes[].policy and prefixes[].keyPolicies statements (README: Authorization policies). Until then every signed request of a key store is allowed.`);
  }

  // -- limits, logs, metadata --
  const bodyBytes = Math.min(1 << 20, Math.max(32 * 1024, s.limits.max_plaintext_in_base64 + s.limits.max_aad_in_base64 + 8192));
  if (s.limits.max_plaintext_in_base64 > 10924 || s.limits.max_aad_in_base64 > 21848) {
    note('limits', 'above what this proxy accepts per field (the spec\'s: 8192 bytes of plaintext, 16384 of AAD): larger requests are UnsupportedOperationException. KMS sends at most 4300 bytes of plaintext.');
  }
  const level = LEVELS[(s.tracing.level ?? 'INFO').toUpperCase()] ?? 'info';
  if (level === 'debug' || level === 'trace') note('tracing.level', `${s.tracing.level} is carried over as log.level ${level}; the sample says INFO for production, and so does this proxy.`);
  if (s.tracing.is_file_writer_enabled) {
    note('tracing (file writer, rotation)', `not carried over: the proxy writes JSON lines to stdout only. Send them to journald (deploy/ has a systemd unit) or your log collector, and rotate there; ${s.tracing.directory ?? 'the log directory'} and xks-proxy_cleanlogs are no longer needed.`);
  }
  if (!s.tracing.is_stdout_writer_enabled) note('tracing.is_stdout_writer_enabled', 'false is not carried over: the request log always goes to stdout.');
  if (s.server.ciphertext_metadata_b64 !== undefined) {
    note('server.ciphertext_metadata_b64', "not needed: ciphertexts the sample made with it decrypt here with no setting (xks.awsSampleAadFallback); new ciphertexts carry this proxy's own metadata (the key version).");
  }

  const config: Record<string, unknown> = {
    hsm: {
      profile,
      ...(module ? { module } : {}),
      ...(opts.tokenLabel !== undefined ? { tokenLabel: opts.tokenLabel } : { tokenSerial: opts.tokenSerial }),
      pin: { file: pinFile },
      sessionPoolSize: poolSize,
      ivMode,
    },
    listeners,
    limits: { bodyBytes },
    prefixes: keyStores.map((k) => ({
      path: k.path,
      region: s.server.region,
      credentials: [{ accessKeyId: k.accessKeyId, secret: { file: k.secretFile } }],
      keys: k.keys,
    })),
    // The reason to migrate: the sample's ciphertexts keep decrypting.
    xks: { awsSampleAadFallback: true },
    log: { level },
  };
  const checked = ConfigSchema.safeParse(config);
  if (!checked.success) {
    const lines = checked.error.issues.slice(0, 5).map((i) => `  ${i.path.join('.') || '(top level)'}: ${i.message}`);
    throw new AwsSampleError(`the converted configuration is not valid (fix the sample's setting behind it):\n${lines.join('\n')}`);
  }
  return { config, secrets, keyStores, notes };
}

/** The sample's two IV settings as this proxy's IV mode (the sample's encrypt: random, zero IV written over, appended). */
export function ivModeOf(c: { can_generate_iv: boolean; is_zero_iv_required: boolean }): IvMode {
  if (!c.can_generate_iv) return 'caller-random';
  return c.is_zero_iv_required ? 'hsm-writes-param' : 'hsm-appends';
}

/** The profile whose module paths name the same library file; undefined when none or several do. */
export function profileFor(library: string, profiles: MigrationOptions['profiles']): string | undefined {
  const file = basename(library);
  const matches = profiles.filter((p) => p.modulePaths.some((m) => basename(m) === file));
  return matches.length === 1 ? matches[0]!.name : undefined;
}
