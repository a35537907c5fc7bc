// `xks config check`, and what `xks serve` checks at start-up: the file, every secret it refers to, the TLS files, the
// mTLS CA and the ports. Each finding names the setting and never holds a secret's value.
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { rootCertificates } from 'node:tls';
import {
  ADMIN_SECRET,
  ConfigError,
  readConfigSource,
  readSecret,
  resolvePaths,
  secretFileExposure,
  servingIssues,
  SIGV4_SECRET,
  validateConfig,
  type SecretFilePolicy,
} from './load.js';
import type { Config, SecretRef } from './schema.js';

/** fail: a problem (exit 1; `serve` refuses to start); warn: works, but look at it; note and ok: for the record. */
export type FindingStatus = 'ok' | 'note' | 'warn' | 'fail';

export interface ConfigFinding {
  status: FindingStatus;
  /** The setting (dotted path) or the file the finding is about. */
  where: string;
  message: string;
}

const DAY_MS = 86_400_000;
/** KMS alarms on certificate expiry; so do we, this many days ahead. */
export const CERT_WARN_DAYS = 30;

/** Everything about the file that needs no HSM; `probePorts` also tries to bind each port (not at start-up: serve binds). */
export async function checkConfigFile(file: string, opts: { now?: Date; probePorts?: boolean } = {}): Promise<{ findings: ConfigFinding[]; config?: Config }> {
  const findings: ConfigFinding[] = [];
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    return { findings: [fail(file, `cannot read the configuration (${(e as NodeJS.ErrnoException).code ?? 'error'})`)] };
  }
  let source;
  try {
    source = readConfigSource(text, file);
  } catch (e) {
    return { findings: [fail(file, (e as Error).message.replace(`${file}: `, ''))] };
  }
  const v = validateConfig(source.raw);
  if (!v.config) return { findings: v.issues.map((i) => fail(i.path, i.message)) };
  const config = resolvePaths(v.config, dirname(file));
  const over = source.files.length > 1 ? ` merged with its overrides ${source.files[1]}` : '';
  findings.push(ok(file, `valid${over}: ${config.prefixes.length} key store(s), HSM profile ${config.hsm.profile}`));
  for (const i of servingIssues(config)) findings.push({ status: 'note', where: i.path, message: `${i.message}; \`xks serve\` refuses this file, other commands use it` });
  findings.push(...secretFindings(config, dirname(file)));
  findings.push(...serveFileFindings(config, opts.now));
  if (opts.probePorts) findings.push(...(await portProbes(config)));
  return { findings, config };
}

/** Every secret reference: set or readable, not open to others (per secretFilePermissions), of the right shape. */
export function secretFindings(config: Config, baseDir: string): ConfigFinding[] {
  const out: ConfigFinding[] = [];
  const sigv4 = new Set<string>();
  const one = (ref: SecretRef, what: string, shape?: { test: RegExp; says: string }): string | undefined => {
    const policy: SecretFilePolicy = { mode: config.secretFilePermissions, warnings: [] };
    let value: string;
    try {
      value = readSecret(ref, baseDir, what, policy);
    } catch (e) {
      out.push(fail(what, (e as Error).message.replace(`${what}: `, '')));
      return undefined;
    }
    for (const w of policy.warnings) out.push({ status: 'warn', where: what, message: w.replace(`${what}: `, '') });
    if (shape && !shape.test.test(value)) {
      out.push(fail(what, `must be ${shape.says}`));
      return undefined;
    }
    if (!policy.warnings.length) out.push(ok(what, 'env' in ref ? `environment variable ${ref.env} is set` : `${resolve(baseDir, ref.file)} is readable by this process only`));
    return value;
  };
  one(config.hsm.pin, 'hsm.pin');
  const https = config.listeners.https;
  if (https) {
    const why = secretFileExposure(https.keyFile);
    if (why) {
      const text = `${https.keyFile} ${why}: chmod 0600 or 0400, or 0440 with this process's group`;
      out.push(config.secretFilePermissions === 'warn' ? { status: 'warn', where: 'listeners.https.keyFile', message: `${text}; loaded anyway (secretFilePermissions: warn)` } : fail('listeners.https.keyFile', text));
    }
  }
  config.prefixes.forEach((p, i) =>
    p.credentials.forEach((c, j) => {
      const v = one(c.secret, `prefixes.${i}.credentials.${j}.secret`, { test: SIGV4_SECRET, says: '43 to 64 characters of A-Za-z0-9+/=' });
      if (v !== undefined) sigv4.add(v);
    }),
  );
  config.admin?.credentials.forEach((c, i) => {
    const what = `admin.credentials.${i}.secret`;
    const v = one(c.secret, what, { test: ADMIN_SECRET, says: '32 to 128 printable characters without spaces' });
    if (v !== undefined && sigv4.has(v)) out.push(fail(what, 'is also a key store secret; give the admin API a secret of its own'));
  });
  return out;
}

/**
 * What `xks serve` checks at start-up besides loading (load.ts): the HTTPS certificate and key, the mTLS CA, the
 * ports. Paths are resolved already.
 */
export function serveFileFindings(config: Config, now: Date = new Date()): ConfigFinding[] {
  const out: ConfigFinding[] = [];
  const https = config.listeners.https;
  if (https) {
    out.push(...tlsFindings(https.certFile, https.keyFile, now));
    if (https.mtls) out.push(...caFindings(https.mtls.clientCaFile, now));
  }
  out.push(...portFindings(config));
  return out;
}

/** The certificate file (leaf first, then intermediates), the key, whether they match, dates, and the chain. */
export function tlsFindings(certFile: string, keyFile: string, now: Date): ConfigFinding[] {
  const where = 'listeners.https.certFile';
  const certs = readCertificates(certFile);
  if (typeof certs === 'string') return [fail(where, certs)];
  const out: ConfigFinding[] = [];
  const leaf = certs[0]!;
  let key: KeyObject | undefined;
  try {
    key = createPrivateKey(readFileSync(keyFile));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    out.push(fail('listeners.https.keyFile', code?.startsWith('E') && !code.startsWith('ERR_') ? `cannot read ${keyFile} (${code})` : `${keyFile} is not a private key in PEM or DER`));
  }
  if (key && !leaf.checkPrivateKey(key)) out.push(fail('listeners.https.keyFile', `${keyFile} is not the key of the certificate in ${certFile}`));
  certs.forEach((c, i) => out.push(...dateFindings(c, i === 0 ? where : `${where} (certificate ${i + 1}, ${c.subject.replace(/\n/g, ', ')})`, now)));
  // Leaf first, then each issuer: what a TLS client is sent.
  for (let i = 0; i + 1 < certs.length; i++) {
    if (!issuedBy(certs[i]!, certs[i + 1]!)) {
      out.push(fail(where, `certificate ${i + 1} is not issued by certificate ${i + 2}: put the server's certificate first, then each issuer in order`));
      return out;
    }
  }
  const last = certs[certs.length - 1]!;
  const names = leaf.subjectAltName ?? '(no subjectAltName)';
  const days = Math.floor((Date.parse(leaf.validTo) - now.getTime()) / DAY_MS);
  if (issuedBy(last, last)) {
    out.push(
      certs.length === 1
        ? warn(where, `self-signed (${names}): KMS accepts only a certificate from a public CA it trusts; fine for a test, or behind a TLS load balancer`)
        : note(where, `the file ends with its root CA (${last.subject.replace(/\n/g, ', ')}); clients need not be sent it`),
    );
  } else {
    const root = rootCertificates.map((pem) => new X509Certificate(pem)).find((r) => issuedBy(last, r));
    out.push(
      root
        ? ok(where, `chains to ${root.subject.replace(/\n/g, ', ')} (a public CA)`)
        : warn(where, `does not chain to a public CA Node knows (its last certificate is issued by ${last.issuer.replace(/\n/g, ', ')}): KMS requires a certificate from a public CA it trusts; an intermediate may be missing from the file`),
    );
  }
  if (days >= 0) out.push(ok(where, `${names}, valid until ${new Date(Date.parse(leaf.validTo)).toISOString().slice(0, 10)} (${days} days)`));
  return out;
}

/** The mTLS CA file: CA certificates, in date. */
export function caFindings(file: string, now: Date): ConfigFinding[] {
  const where = 'listeners.https.mtls.clientCaFile';
  const certs = readCertificates(file);
  if (typeof certs === 'string') return [fail(where, certs)];
  const out: ConfigFinding[] = [];
  for (const c of certs) {
    const subject = c.subject.replace(/\n/g, ', ');
    if (!c.ca) out.push(fail(where, `${subject} is not a CA certificate (basicConstraints CA:FALSE or absent): it cannot verify client certificates`));
    out.push(...dateFindings(c, `${where} (${subject})`, now));
  }
  if (!out.some((f) => f.status === 'fail')) out.push(ok(where, `${certs.length} CA certificate(s): ${certs.map((c) => c.subject.replace(/\n/g, ', ')).join('; ')}`));
  return out;
}

function dateFindings(c: X509Certificate, where: string, now: Date): ConfigFinding[] {
  const from = Date.parse(c.validFrom);
  const to = Date.parse(c.validTo);
  const day = (t: number) => new Date(t).toISOString().slice(0, 10);
  if (now.getTime() < from) return [fail(where, `not valid before ${day(from)}`)];
  if (now.getTime() > to) return [fail(where, `expired on ${day(to)}`)];
  const days = Math.floor((to - now.getTime()) / DAY_MS);
  if (days < CERT_WARN_DAYS) return [warn(where, `expires on ${day(to)}, in ${days} days`)];
  return [];
}

function readCertificates(file: string): X509Certificate[] | string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    return `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`;
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) return `${file} holds no PEM certificate`;
  try {
    return blocks.map((b) => new X509Certificate(b));
  } catch {
    return `${file} holds a certificate that does not parse`;
  }
}

function issuedBy(c: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return c.checkIssued(issuer) && c.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

interface Bound {
  where: string;
  host: string;
  port: number;
}

function listenersOf(config: Config): Bound[] {
  const l = config.listeners;
  const out: Bound[] = [];
  if (l.http) out.push({ where: 'listeners.http', ...l.http });
  if (l.https) out.push({ where: 'listeners.https', host: l.https.host, port: l.https.port });
  if (l.ops) out.push({ where: 'listeners.ops', ...l.ops });
  if (config.admin) out.push({ where: 'admin.listener', ...config.admin.listener });
  return out;
}

const WILDCARD = new Set(['0.0.0.0', '::', '']);

/** Two listeners on one port of one address (or of every address), and privileged ports. Port 0: any free port. */
export function portFindings(config: Config): ConfigFinding[] {
  const out: ConfigFinding[] = [];
  const all = listenersOf(config);
  all.forEach((a, i) => {
    if (a.port === 0) return;
    const clash = all.slice(0, i).find((b) => b.port === a.port && (b.host === a.host || WILDCARD.has(a.host) || WILDCARD.has(b.host)));
    if (clash) out.push(fail(`${a.where}.port`, `${a.host}:${a.port} is also ${clash.where} (${clash.host}:${clash.port}): give each listener its own port`));
    else if (a.port < 1024 && process.getuid?.() !== 0) out.push(warn(`${a.where}.port`, `${a.port} is below 1024: binding it needs root or CAP_NET_BIND_SERVICE`));
  });
  return out;
}

/** Try to bind each configured port once (released at once): in use, or an address this host does not have. */
export async function portProbes(config: Config): Promise<ConfigFinding[]> {
  const out: ConfigFinding[] = [];
  for (const b of listenersOf(config)) {
    if (b.port === 0) continue;
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      const s = createServer();
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e));
      s.listen({ host: b.host, port: b.port, exclusive: true }, () => s.close(() => resolve(undefined)));
    });
    const at = `${b.host}:${b.port}`;
    if (!error) out.push(ok(`${b.where}.port`, `${at} is free`));
    else if (error.code === 'EADDRINUSE') out.push(warn(`${b.where}.port`, `${at} is in use (by a proxy already running with this file?)`));
    else if (error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND') out.push(fail(`${b.where}.host`, `${b.host} is not an address of this host`));
    else out.push(fail(`${b.where}.port`, `${at} cannot be bound (${error.code ?? error.message})`));
  }
  return out;
}

/** A ConfigError for start-up naming every problem, or undefined when there is none. */
export function startUpRefusal(file: string, findings: ConfigFinding[]): ConfigError | undefined {
  const problems = findings.filter((f) => f.status === 'fail');
  if (problems.length === 0) return undefined;
  return new ConfigError(`${file} cannot serve (\`xks config check\` says the same):\n${problems.map((p) => `  ${p.where}: ${p.message}`).join('\n')}`);
}

const ok = (where: string, message: string): ConfigFinding => ({ status: 'ok', where, message });
const note = (where: string, message: string): ConfigFinding => ({ status: 'note', where, message });
const warn = (where: string, message: string): ConfigFinding => ({ status: 'warn', where, message });
const fail = (where: string, message: string): ConfigFinding => ({ status: 'fail', where, message });
