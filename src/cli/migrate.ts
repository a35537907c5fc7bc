// `xks migrate aws-sample`: AWS's sample proxy's settings file (aws-samples/aws-kms-xks-proxy) into this proxy's config.
// The secrets the sample keeps in clear go into files of mode 0600 next to the config; nothing secret is printed. The
// files are written in a directory of their own first, the config is loaded from there by the proxy's own loader, and
// only then moved into place: a config that would not load is never written. --check then lists the keys the sample
// served and what would break when this proxy serves them (src/keys/adoption.ts).
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { ANCHOR_LABEL } from '../audit/audit-anchor.js';
import { DEFAULT_AUDIT_KEY_LABEL } from '../audit/audit-key.js';
import { stringify } from 'yaml';
import { AwsSampleError, migrateAwsSample, parseAwsSampleSettings, type Migration, type MigrationNote } from '../config/aws-sample.js';
import { loadConfig, secretFileExposure, type LoadedConfig } from '../config/load.js';
import type { KeyObject } from '../hsm/key-store.js';
import { loadProfile, PROFILE_DIR } from '../hsm/profile.js';
import { adoptionRows, type AdoptionRow } from '../keys/adoption.js';
import { searchKeyObjects } from '../keys/catalogue.js';
import { openHsm } from '../proxy.js';

interface AwsSampleOptions {
  out: string;
  tokenLabel?: string;
  tokenSerial?: string;
  profile?: string;
  module?: string;
  sampleDir?: string;
  port?: number;
  force?: boolean;
  check?: boolean;
  json?: boolean;
}

export function migrateCommand(): Command {
  const migrate = new Command('migrate').description('move a key store to this proxy from another XKS proxy');
  migrate.addCommand(
    new Command('aws-sample')
      .description("write this proxy's config from a settings file of AWS's sample proxy (aws-samples/aws-kms-xks-proxy); its ciphertexts decrypt here with no setting")
      .argument('<settings.toml>', "the sample's settings file (XKS_PROXY_SETTINGS_TOML)")
      .requiredOption('--out <file>', 'the config file to write; the PIN and SigV4 secrets go next to it (<name>.pin, <name>.sigv4-secret-<n>, mode 0600)')
      .addOption(new Option('--token-label <label>', 'the token to use (the sample took the first slot; this proxy never guesses)').conflicts('tokenSerial'))
      .option('--token-serial <serial>', 'the token to use, by serial number')
      .option('--profile <name>', "the HSM profile (hsm/<name>.yaml) instead of the one the sample's library name gives")
      .option('--module <path>', "the PKCS#11 library instead of the sample's (PKCS11_HSM_MODULE)")
      .option('--sample-dir <dir>', "the directory the sample ran in: its relative paths (tls/...) are relative to it (default: the current directory)")
      .option('--port <port>', "the XKS listener's port instead of the sample's (which the sample holds while both run)", parsePort)
      .option('--force', 'replace the config and secret files if they exist (a running proxy reading them changes with them)')
      .option('--check', 'then open the token and list the keys the sample served, with what would break here (exit 1 if anything does)')
      .option('--json', 'print the result as JSON')
      .action(async (settingsFile: string, opts: AwsSampleOptions) => {
        const result = writeMigration(settingsFile, opts);
        const rows = opts.check ? await checkAdoption(result.loaded, result.migration) : undefined;
        console.log(opts.json ? JSON.stringify(jsonOf(result, rows)) : format(result, rows));
        const broken = rows?.filter((r) => r.findings.some((f) => f.severity === 'breaks')) ?? [];
        // One sentence on stderr and exit 1 (main.ts), after the report; the config is written either way.
        if (broken.length) throw new Error(`${broken.length} of the sample's keys would not work here as they stand: ${broken.map((r) => r.keyId).join(', ')}`);
      }),
  );
  return migrate;
}

function parsePort(value: string): number {
  if (!/^[0-9]{1,5}$/.test(value) || Number(value) > 65535) throw new Error(`--port takes a port number, not "${value}"`);
  return Number(value);
}

interface Written {
  out: string;
  files: string[];
  migration: Migration;
  notes: MigrationNote[];
  loaded: LoadedConfig;
}

function writeMigration(settingsFile: string, opts: AwsSampleOptions): Written {
  const file = resolve(settingsFile);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new AwsSampleError(`cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const { settings, unknownSections } = parseAwsSampleSettings(text, file);
  const out = resolve(opts.out);
  const dir = dirname(out);
  if (!existsSync(dir)) throw new AwsSampleError(`${dir} does not exist: make the directory of --out first`);
  const stem = basename(out, extname(out));
  const migration = migrateAwsSample(settings, {
    tokenLabel: opts.tokenLabel,
    tokenSerial: opts.tokenSerial,
    profiles: availableProfiles(),
    profile: opts.profile,
    module: opts.module ? resolve(opts.module) : undefined,
    exists: existsSync,
    sampleDir: resolve(opts.sampleDir ?? '.'),
    port: opts.port,
    stem,
    newCredential,
  });
  const notes = [...migration.notes, ...unknownSections.map((s) => ({ setting: s, note: 'not a section the sample reads: ignored.' }))];
  const files: { name: string; text: string; secret: boolean }[] = migration.secrets.map((s) => ({ name: s.file, text: s.value, secret: true }));

  // A TLS key others can read is refused by the loader; the sample may still need it as it is, so it is copied.
  const https = (migration.config.listeners as { https?: { keyFile: string } }).https;
  if (https && existsSync(https.keyFile) && secretFileExposure(https.keyFile)) {
    const copy = `${stem}.tls-key.pem`;
    let key: string;
    try {
      key = readFileSync(https.keyFile, 'utf8');
    } catch (e) {
      throw new AwsSampleError(`tls.tls_key_pem: cannot read ${https.keyFile} to copy it to a file of mode 0600 (${(e as NodeJS.ErrnoException).code ?? 'error'}): run the migration as a user who can read it`);
    }
    files.push({ name: copy, text: key, secret: true });
    notes.push({ setting: 'tls.tls_key_pem', note: `${https.keyFile} ${secretFileExposure(https.keyFile)}: copied to ${copy} (mode 0600), which the config uses. Restrict or delete the original once the sample is retired.` });
    https.keyFile = copy;
  }
  files.push({ name: basename(out), text: header(file) + stringify(migration.config), secret: false });

  const existing = files.map((f) => join(dir, f.name)).filter((p) => existsSync(p));
  if (existing.length && !opts.force) throw new AwsSampleError(`${existing.join(', ')} exist: choose another --out, or pass --force to replace them`);

  // Written and loaded in a directory of their own, then moved: nothing that does not load is ever in place.
  const staging = mkdtempSync(join(dir, '.xks-migrate-'));
  try {
    for (const f of files) {
      writeFileSync(join(staging, f.name), f.text, { mode: f.secret ? 0o600 : 0o644, flag: 'wx' });
      if (f.secret) chmodSync(join(staging, f.name), 0o600); // whatever the umask says
    }
    loadConfig(join(staging, basename(out)));
    for (const f of files) renameSync(join(staging, f.name), join(dir, f.name));
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return { out, files: files.map((f) => join(dir, f.name)), migration, notes, loaded: loadConfig(out) };
}

function header(settingsFile: string): string {
  return `# Converted by \`xks migrate aws-sample\` from ${settingsFile} on ${new Date().toISOString()}.\n# Secrets are in the files next to this one (mode 0600). See docs/migrate-from-aws-sample.md.\n`;
}

/** The HSM profiles shipped in hsm/, for the library the sample loaded. */
function availableProfiles() {
  return readdirSync(PROFILE_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => loadProfile(f.slice(0, -'.yaml'.length)));
}

/** A SigV4 credential KMS accepts: 20 characters of A-Z2-7, and a 44-character Base64 secret (264 random bits). */
function newCredential(): { accessKeyId: string; secret: string } {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const accessKeyId = [...randomBytes(20)].map((b) => alphabet[b & 31]).join('');
  return { accessKeyId, secret: randomBytes(33).toString('base64') };
}

/** One search per label the sample's key stores named, on the token the new config names. */
async function checkAdoption(loaded: LoadedConfig, migration: Migration): Promise<AdoptionRow[]> {
  const hsm = await openHsm(loaded);
  try {
    const objects = new Map<string, KeyObject[]>();
    for (const ks of migration.keyStores) {
      for (const id of ks.keys) if (!objects.has(id)) objects.set(id, await searchKeyObjects(hsm, { label: id }));
    }
    const reserved = new Set([loaded.config.hsm.healthKeyLabel, loaded.config.audit?.keyLabel ?? DEFAULT_AUDIT_KEY_LABEL, ANCHOR_LABEL]);
    return adoptionRows(migration.keyStores, objects, reserved);
  } finally {
    hsm.close();
  }
}

function jsonOf(w: Written, rows: AdoptionRow[] | undefined) {
  return {
    config: w.out,
    files: w.files,
    keyStores: w.migration.keyStores.map(({ path, samplePrefix, accessKeyId, newCredential: isNew, secretFile, keys }) => ({
      samplePrefix,
      path,
      accessKeyId,
      newCredential: isNew,
      secretFile: join(dirname(w.out), secretFile),
      keys,
    })),
    notes: w.notes,
    ...(rows ? { keys: rows } : {}),
  };
}

function format(w: Written, rows: AdoptionRow[] | undefined): string {
  const lines = [`wrote ${w.out} (it loads with this proxy's loader)`, `secret files (mode 0600): ${w.files.filter((f) => f !== w.out).join(', ')}`, '', 'key stores:'];
  for (const k of w.migration.keyStores) {
    lines.push(
      `  "${k.samplePrefix}" -> /${k.path ? `${k.path}/` : ''}kms/xks/v1, access key id ${k.accessKeyId}${k.newCredential ? ' (NEW: give it to KMS)' : ''}, keys ${k.keys.join(', ') || '(none)'}`,
    );
  }
  lines.push('', 'not carried over as it was, and what to do instead:');
  for (const n of w.notes) lines.push(`  - ${n.setting}: ${n.note}`);
  if (rows) {
    lines.push('', "the sample's keys on this token:");
    for (const r of rows) {
      const breaks = r.findings.some((f) => f.severity === 'breaks');
      lines.push(`  ${r.keyId}: ${breaks ? 'WOULD BREAK' : 'ok'} (${r.objects} object${r.objects === 1 ? '' : 's'}; key stores ${r.keyStores.map((p) => `"${p}"`).join(', ')})`);
      for (const f of r.findings) lines.push(`      ${f.severity === 'breaks' ? 'FAIL' : 'WARN'} ${f.problem}: ${f.message}`, `           -> ${f.fix}`);
    }
  }
  return lines.join('\n');
}
