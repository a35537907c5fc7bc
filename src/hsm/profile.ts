// HSM profiles: what differs between vendors (module path, how AES-GCM gets its IV, sync or async calls).
// One YAML file per vendor in the repository's hsm/ directory; the config names one and may override fields.
import { readFileSync, existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { LibrarySpec } from './module.js';

export const IvModeSchema = z.enum(['caller-random', 'hsm-writes-param', 'hsm-appends']);
export type IvMode = z.infer<typeof IvModeSchema>;

/**
 * Where AES-GCM calls run. sync: on the event loop. async: on libuv's thread pool (network HSMs take milliseconds;
 * calls overlap). thread: on one dedicated thread, in batches (in-process software tokens: a call takes ~15 us of CPU,
 * too little to pay a thread-pool dispatch for and too much to spend on the event loop; calls run one at a time).
 */
export const CallModeSchema = z.enum(['sync', 'async', 'thread']);
export type CallMode = z.infer<typeof CallModeSchema>;

/** A standard code's name, or a vendor's own number as errors.ts names it (CKR_VENDOR_DEFINED+0x...). */
const CkrNameSchema = z.string().regex(/^(CKR_[A-Z0-9_]+|CKR_VENDOR_DEFINED\+0x[0-9a-f]+)$/, 'must be a CKR_ name or CKR_VENDOR_DEFINED+0x<hex>');

export const ProfileSchema = z.strictObject({
  name: z.string(),
  vendor: z.string(),
  description: z.string().optional(),
  /**
   * Candidate module paths, first existing one wins unless the config names a module. A relative path is relative to
   * the repository (the emulated vendor profiles' module is built there by scripts/setup.sh).
   */
  modulePaths: z.array(z.string()).min(1),
  /** Passed to every C_Initialize (NSS: its database; the emulator: the vendor); hsm.libraryParameters overrides it. */
  libraryParameters: z.string().min(1).optional(),
  /**
   * caller-random: the proxy draws 12 bytes from C_GenerateRandom and passes them (SoftHSM never generates IVs).
   * hsm-writes-param: the proxy passes a zero IV and the HSM writes the one it generated into the parameter (CloudHSM, nShield).
   * hsm-appends: the HSM generates the IV and appends it to the ciphertext output (Luna).
   */
  ivMode: IvModeSchema,
  callMode: CallModeSchema,
  /**
   * Run AES-GCM on a session copy of each token key (C_CopyObject with CKA_TOKEN=false, still sensitive and
   * non-extractable, gone when the process ends). SoftHSM re-checks its object files on every C_*Init of a token key;
   * a session copy skips that and doubles its throughput. Hardware HSMs gain nothing and may forbid copies.
   */
  sessionKeyCopies: z.boolean().default(false),
  /** PKCS#11 logins race on some tokens when several processes start at once: retry with backoff. */
  loginRetries: z.number().int().min(0).max(20).default(5),
  /**
   * What this token's return codes mean where PKCS#11 leaves it open or the token departs from it. Each entry in a
   * profile's YAML cites its source.
   */
  errors: z
    .strictObject({
      /** Codes a failed AES-GCM tag check (or unwrap integrity check) answers, besides the standard ones. */
      badTag: z.array(CkrNameSchema).default([]),
      /** Codes that mean "busy, retry soon" when the device answers a probe: no re-initialisation. */
      busy: z.array(CkrNameSchema).default([]),
    })
    .default({ badTag: [], busy: [] }),
  /** What the token's objects can hold and report. */
  attributes: z
    .strictObject({
      /** Token objects may carry CKA_ALLOWED_MECHANISMS (NSS softoken refuses it with CKR_GENERAL_ERROR). */
      allowedMechanisms: z.boolean().default(true),
      /**
       * CKA_LOCAL / CKA_NEVER_EXTRACTABLE are reported faithfully (true for a key generated in the token, false for one
       * created or unwrapped), so they prove where a key came from. NSS softoken reports CKA_LOCAL false for generated
       * keys: on a token not known to, reports say "unknown" instead.
       */
      localIsEvidence: z.boolean().default(false),
      /**
       * The token keeps and enforces CKA_WRAP_WITH_TRUSTED: an exportable key can be wrapped only under a key the
       * security officer marked CKA_TRUSTED. NSS softoken keeps neither (nor has a security officer): there, an
       * exportable key could be wrapped out under any key of the user, so the proxy makes none.
       */
      wrapWithTrusted: z.boolean().default(true),
    })
    .default({ allowedMechanisms: true, localIsEvidence: false, wrapWithTrusted: true }),
  notes: z.array(z.string()).default([]),
});
export type HsmProfile = z.infer<typeof ProfileSchema>;

export const PROFILE_DIR = fileURLToPath(new URL('../../hsm/', import.meta.url));
const REPOSITORY_DIR = resolve(PROFILE_DIR, '..');

/** The profile names shipped in hsm/ (one YAML file each). */
export const PROFILE_NAME = /^[a-z0-9-]+$/;

export function loadProfile(name: string): HsmProfile {
  if (!PROFILE_NAME.test(name)) throw new Error(`HSM profile name "${name}" must be lower-case letters, digits and dashes`);
  const file = `${PROFILE_DIR}${name}.yaml`;
  if (!existsSync(file)) throw new Error(`no HSM profile "${name}": expected ${file}`);
  return parseProfile(readFileSync(file, 'utf8'), file);
}

/** A profile from its text; every error names the file (an operator must not look for it in their own config). */
export function parseProfile(text: string, file: string): HsmProfile {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new Error(`HSM profile ${file} is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  const parsed = ProfileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`HSM profile ${file}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}

export function resolveModulePath(profile: HsmProfile, configured?: string): string {
  if (configured) return configured;
  const candidates = profile.modulePaths.map((p) => (isAbsolute(p) ? p : resolve(REPOSITORY_DIR, p)));
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(
      `no PKCS#11 module found for profile "${profile.name}" (looked in ${candidates.join(', ')}): set hsm.module in the config`,
    );
  }
  return found;
}

/** The library to load for a profile and the config's hsm section: its path and its C_Initialize parameters. */
export function resolveLibrary(profile: HsmProfile, configured: { module?: string | undefined; libraryParameters?: string | undefined }): LibrarySpec {
  const libraryParameters = configured.libraryParameters ?? profile.libraryParameters;
  return { modulePath: resolveModulePath(profile, configured.module), ...(libraryParameters !== undefined ? { libraryParameters } : {}) };
}
