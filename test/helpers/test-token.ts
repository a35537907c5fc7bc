// A real PKCS#11 token for one test file, of the kind XKS_TEST_TOKEN names (default softhsm): its own directory,
// database and PINs, removed afterwards. Every test reaches its token through this object only: the library to load and
// its C_Initialize parameters (modulePath, libraryParameters: for HsmConnection / CeremonySession / initToken in this
// process), the config file's hsm section (hsmConfig()), and what a child process (`xks ...`, `xks serve`) needs in its
// environment (env). A test that cannot apply to a kind says so with it.skipIf / describe.skipIf and TOKEN_FACTS.
//
//   softhsm  SoftHSMv2: a token directory of its own and SOFTHSM2_CONF pointing at it (set in this process too).
//   nss      NSS softoken: a database made with certutil; the user PIN is the database password; no SO login.
//
//   emulated-cloudhsm | emulated-luna | emulated-nshield
//           a SoftHSM token (made as `softhsm` is, SOFTHSM2_CONF in env) reached through our forwarding module
//           test/emulator/build/libxks-emulator.so with profile `emulated-<vendor>` (its libraryParameters name the
//           vendor whose documented behaviour the module imposes: test/emulator/pkcs11-emulator.c).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { findSlot, infoText, loadModule, type LibrarySpec } from '../../src/hsm/module.js';
import { loadProfile, resolveModulePath } from '../../src/hsm/profile.js';
import { initToken } from '../../src/hsm/token-init.js';
import { buildEmulator } from './emulator.js';

export type TokenKind = 'softhsm' | 'nss' | 'emulated-cloudhsm' | 'emulated-luna' | 'emulated-nshield';
export const TOKEN_KINDS: readonly TokenKind[] = ['softhsm', 'nss', 'emulated-cloudhsm', 'emulated-luna', 'emulated-nshield'];

/** The kind this run tests (XKS_TEST_TOKEN); an unknown value fails every test file at once, loudly. */
export const TOKEN_KIND: TokenKind = (() => {
  const v = process.env.XKS_TEST_TOKEN || 'softhsm';
  if (!(TOKEN_KINDS as readonly string[]).includes(v)) throw new Error(`XKS_TEST_TOKEN="${v}": expected one of ${TOKEN_KINDS.join(', ')}`);
  return v as TokenKind;
})();

/** What a kind of token can do, for tests that cannot apply to every kind (each skip names the fact). */
export interface TokenFacts {
  /** C_Login(CKU_SO) works: KEK ceremonies (CKA_TRUSTED keys), C_InitToken. NSS answers CKR_USER_TYPE_INVALID. */
  soLogin: boolean;
  /** A token secret key may be made with CKA_SENSITIVE false (NSS makes every private token key sensitive). */
  nonSensitiveKeys: boolean;
  /** SoftHSM-only behaviour some tests are about (file object store, session handle numbering, GCM refusals...). */
  softhsm: boolean;
  /** The token's manufacturerID (C_GetTokenInfo), which the health status reports as ekmVendor. */
  manufacturer: string;
  /** CKM_RSA_PKCS_OAEP takes SHA-256 (NSS); SoftHSM 2.6 has SHA-1 only, so RSAES_OAEP_SHA_256 needs the opt-in there. */
  oaepSha256: boolean;
  /** CKA_WRAP_WITH_TRUSTED is kept and enforced (its profile): exportable keys, trusted KEKs and backups exist. */
  wrapWithTrusted: boolean;
  /** CKA_LOCAL / CKA_NEVER_EXTRACTABLE are faithful (its profile's localIsEvidence): NSS reports CKA_LOCAL false for keys it generates. */
  localIsEvidence: boolean;
}

const FACTS: Record<TokenKind, TokenFacts> = {
  softhsm: { soLogin: true, nonSensitiveKeys: true, softhsm: true, manufacturer: 'SoftHSM project', localIsEvidence: true, wrapWithTrusted: true, oaepSha256: false },
  nss: { soLogin: false, nonSensitiveKeys: false, softhsm: false, manufacturer: 'Mozilla Foundation', localIsEvidence: false, wrapWithTrusted: false, oaepSha256: true },
  // SoftHSM underneath, a vendor's behaviour on top: none of the SoftHSM-only facts some tests are about hold.
  'emulated-cloudhsm': { soLogin: true, nonSensitiveKeys: true, softhsm: false, manufacturer: 'SoftHSM project', localIsEvidence: true, wrapWithTrusted: true, oaepSha256: false },
  'emulated-luna': { soLogin: true, nonSensitiveKeys: true, softhsm: false, manufacturer: 'SoftHSM project', localIsEvidence: true, wrapWithTrusted: true, oaepSha256: false },
  'emulated-nshield': { soLogin: true, nonSensitiveKeys: true, softhsm: false, manufacturer: 'SoftHSM project', localIsEvidence: true, wrapWithTrusted: true, oaepSha256: false },
};
export const TOKEN_FACTS: TokenFacts = FACTS[TOKEN_KIND];

/** What `xks keys describe` and the report show for CKA_LOCAL / CKA_NEVER_EXTRACTABLE: the value, or "unknown" where they prove nothing. */
export function evidence(value: boolean): boolean | 'unknown' {
  return TOKEN_FACTS.localIsEvidence ? value : 'unknown';
}

/** The hsm section fields of a config file for a token (the test adds pin and anything else). */
export interface TokenHsmConfig {
  profile: string;
  tokenLabel: string;
  module?: string;
  libraryParameters?: string;
}

export interface TestToken {
  kind: TokenKind;
  label: string;
  userPin: string;
  /** The security officer's PIN; undefined where there is no SO login (NSS). */
  soPin: string | undefined;
  serial: string;
  /** A directory of the test's own (configs, audit logs, FIFOs), removed by cleanup(). */
  dir: string;
  /** The profile name (hsm/<profile>.yaml). */
  profile: string;
  modulePath: string;
  /** Passed to every C_Initialize (NSS: its database); undefined for SoftHSM. */
  libraryParameters: string | undefined;
  /** modulePath and libraryParameters, for HsmConnection.open, CeremonySession.open, initToken, ceremony access. */
  library: LibrarySpec;
  /** What a child process needs in its environment to reach this token (SoftHSM: SOFTHSM2_CONF). */
  env: Record<string, string>;
  /** SoftHSM only: the SOFTHSM2_CONF file. */
  conf?: string;
  hsmConfig(): TokenHsmConfig;
  cleanup(): void;
}

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

const PROFILE: Record<TokenKind, string> = {
  softhsm: 'softhsm2',
  nss: 'nss',
  'emulated-cloudhsm': 'emulated-cloudhsm',
  'emulated-luna': 'emulated-luna',
  'emulated-nshield': 'emulated-nshield',
};

function newPin(): string {
  return randomBytes(8).toString('hex');
}

function token(fields: Omit<TestToken, 'library' | 'hsmConfig' | 'modulePath' | 'profile'> & { profile?: string; modulePath?: string }): TestToken {
  const profile = fields.profile ?? PROFILE[fields.kind];
  const modulePath = fields.modulePath ?? resolveModulePath(loadProfile(profile));
  const library: LibrarySpec = { modulePath, ...(fields.libraryParameters ? { libraryParameters: fields.libraryParameters } : {}) };
  return {
    ...fields,
    profile,
    modulePath,
    library,
    hsmConfig: () => ({
      profile,
      tokenLabel: fields.label,
      // The profile finds the module itself; a kind whose module is not one of its profile's paths names it here.
      ...(fields.modulePath ? { module: fields.modulePath } : {}),
      ...(fields.libraryParameters ? { libraryParameters: fields.libraryParameters } : {}),
    }),
  };
}

// --- SoftHSM -------------------------------------------------------------------------------------------------------

function softhsmTokens(labels: string[]): TestToken[] {
  const dir = mkdtempSync(join(tmpdir(), 'xks-softhsm-'));
  mkdirSync(join(dir, 'tokens'));
  const conf = join(dir, 'softhsm2.conf');
  const template = readFileSync(new URL('../../softhsm-config/softhsm2.conf.template', import.meta.url), 'utf8');
  writeFileSync(conf, template.replaceAll('@TOKENDIR@', join(dir, 'tokens')));
  const env = { SOFTHSM2_CONF: conf };
  // Set before any C_Initialize in this process: the in-process proxy and ceremonies read it.
  Object.assign(process.env, env);
  return labels.map((label, i) => {
    const userPin = newPin();
    const soPin = newPin();
    const { serial } = initToken({ modulePath: resolveModulePath(loadProfile('softhsm2')), label, soPin, userPin });
    return token({
      kind: 'softhsm',
      label,
      userPin,
      soPin,
      serial,
      dir,
      libraryParameters: undefined,
      env,
      conf,
      cleanup: i === 0 ? () => rmSync(dir, { recursive: true, force: true }) : () => undefined,
    });
  });
}

// --- NSS softoken --------------------------------------------------------------------------------------------------

const NSS_DB = "certPrefix='' keyPrefix='' flags=";

function nssDatabase(dir: string, name: string, pin: string): string {
  const db = join(dir, name);
  mkdirSync(db);
  const pinFile = join(dir, `.${name}.pin`);
  writeFileSync(pinFile, pin, { mode: 0o600 });
  try {
    execFileSync('certutil', ['-N', '-d', `sql:${db}`, '-f', pinFile], { stdio: 'pipe' });
  } catch (e) {
    const err = e as { code?: string; stderr?: Buffer };
    if (err.code === 'ENOENT') throw new Error('certutil not found: install libnss3-tools (scripts/setup.sh does)');
    throw new Error(`certutil -N failed: ${err.stderr?.toString() ?? String(e)}`);
  } finally {
    rmSync(pinFile, { force: true });
  }
  return db;
}

function nssTokens(labels: string[]): TestToken[] {
  const dir = mkdtempSync(join(tmpdir(), 'xks-nss-'));
  const pins = labels.map(() => newPin());
  const dbs = labels.map((_, i) => nssDatabase(dir, `nssdb${i}`, pins[i]!));
  // One database: its token is named by dbTokenDescription. Several in one process: NSS's tokens=<> list gives each its
  // own slot (4, 5, ...) and label; every process touching them must load the library with the same parameters.
  const libraryParameters =
    labels.length === 1
      ? `configdir='sql:${dbs[0]}' ${NSS_DB} secmod='secmod.db' dbTokenDescription='${labels[0]}'`
      : `configdir='sql:${dbs[0]}' ${NSS_DB} secmod='secmod.db' tokens=<${labels
          .map((label, i) => `0x${(4 + i).toString(16)}=[configdir='sql:${dbs[i]}' tokenDescription='${label}' ${NSS_DB}]`)
          .join(' ')}>`;
  const modulePath = resolveModulePath(loadProfile('nss'));
  // Every NSS database has serial 0000000000000000: read it as the proxy will, which also proves the token is there.
  const mod = loadModule({ modulePath, libraryParameters });
  let serials: string[];
  try {
    serials = labels.map((label) => infoText(mod.C_GetTokenInfo(findSlot(mod, { tokenLabel: label })).serialNumber));
  } finally {
    mod.C_Finalize();
  }
  return labels.map((label, i) =>
    token({
      kind: 'nss',
      label,
      userPin: pins[i]!,
      soPin: undefined,
      serial: serials[i]!,
      dir,
      libraryParameters,
      env: {},
      cleanup: i === 0 ? () => rmSync(dir, { recursive: true, force: true }) : () => undefined,
    }),
  );
}

// --- SoftHSM behind the vendor emulator ---------------------------------------------------------------------------

function emulatedTokens(kind: 'emulated-cloudhsm' | 'emulated-luna' | 'emulated-nshield'): (labels: string[]) => TestToken[] {
  return (labels) => {
    buildEmulator();
    // The profile names the emulator's module and its vendor (libraryParameters): nothing else differs from SoftHSM.
    const profile = loadProfile(kind);
    return softhsmTokens(labels).map((t) =>
      token({ ...t, kind, profile: kind, modulePath: undefined, libraryParameters: profile.libraryParameters }),
    );
  };
}

const KINDS: Record<TokenKind, (labels: string[]) => TestToken[]> = {
  softhsm: softhsmTokens,
  nss: nssTokens,
  'emulated-cloudhsm': emulatedTokens('emulated-cloudhsm'),
  'emulated-luna': emulatedTokens('emulated-luna'),
  'emulated-nshield': emulatedTokens('emulated-nshield'),
};

/**
 * Makes a token of the kind under test. For SoftHSM this also sets this process's SOFTHSM2_CONF (before any
 * C_Initialize). Loads and finalises the library once: call it before this process opens the library.
 */
export function createTestToken(label = 'xks-test'): TestToken {
  return KINDS[TOKEN_KIND]([label])[0]!;
}

/**
 * Several tokens that one process can use together (the backup tests' A and B): one SoftHSM token directory, or NSS
 * databases listed in one set of library parameters (so every token carries the same libraryParameters and env).
 * The first token's cleanup() removes them all.
 */
export function createTestTokens(labels: string[]): TestToken[] {
  return KINDS[TOKEN_KIND](labels);
}

/** The PINs a test must never find in output: the user's and, where there is one, the SO's. */
export function tokenSecrets(t: TestToken): string[] {
  return t.soPin === undefined ? [t.userPin] : [t.userPin, t.soPin];
}

export interface ForeignKeyOptions {
  /** Default false, as pkcs11-tool --keygen on SoftHSM (NSS makes every private token key sensitive whatever it is asked). */
  sensitive?: boolean;
  extractable?: boolean;
}

/**
 * An AES-256 token key made "by another tool", as `pkcs11-tool --keygen --key-type aes:32 --label LABEL` makes it on
 * SoftHSM (no CKA_ID, CKA_PRIVATE false, not sensitive, not extractable, encrypt/decrypt/wrap/unwrap), but with
 * pkcs11js so that it works on every kind (pkcs11-tool cannot pass NSS its parameters). Runs in a child process, so it
 * works whether or not this process has the library open.
 */
export function makeForeignAesKey(t: TestToken, label: string, opts: ForeignKeyOptions = {}): void {
  const script = `
const P = require('pkcs11js');
const [modulePath, libraryParameters, tokenLabel, pin, label, sensitive, extractable] = JSON.parse(process.env.XKS_FOREIGN_KEY);
const mod = new P.PKCS11();
mod.load(modulePath);
// A trailing space: pkcs11js 2.1.7 drops the last character of libraryParameters (src/hsm/module.ts initializeArgs).
mod.C_Initialize(libraryParameters ? { flags: 2, libraryParameters: libraryParameters + ' ' } : { flags: 2 });
try {
  const slot = mod.C_GetSlotList(true).find((s) => mod.C_GetTokenInfo(s).label.replace(/[\\s\\0]+$/, '') === tokenLabel);
  if (!slot) throw new Error('no token ' + tokenLabel);
  const s = mod.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
  mod.C_Login(s, P.CKU_USER, pin);
  mod.C_GenerateKey(s, { mechanism: P.CKM_AES_KEY_GEN }, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_VALUE_LEN, value: 32 },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: false },
    { type: P.CKA_SENSITIVE, value: sensitive },
    { type: P.CKA_EXTRACTABLE, value: extractable },
    { type: P.CKA_ENCRYPT, value: true },
    { type: P.CKA_DECRYPT, value: true },
    { type: P.CKA_WRAP, value: true },
    { type: P.CKA_UNWRAP, value: true },
    { type: P.CKA_LABEL, value: label },
  ]);
  mod.C_Logout(s);
  mod.C_CloseSession(s);
} finally {
  mod.C_Finalize();
}`;
  const args = [t.modulePath, t.libraryParameters ?? '', t.label, t.userPin, label, opts.sensitive ?? false, opts.extractable ?? false];
  // The PIN in the environment, not on a command line where ps would show it.
  execFileSync(process.execPath, ['-e', script], {
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    env: { ...process.env, ...t.env, XKS_FOREIGN_KEY: JSON.stringify(args) },
    stdio: 'pipe',
  });
}
