// HSM profiles: what differs between vendors (module path, how AES-GCM gets its IV, sync or async calls).
// One YAML file per vendor in the repository's hsm/ directory; the config names one and may override fields.
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

export const IvModeSchema = z.enum(['caller-random', 'hsm-writes-param', 'hsm-appends']);
export type IvMode = z.infer<typeof IvModeSchema>;

/**
 * Where AES-GCM calls run. sync: on the event loop. async: on libuv's thread pool (network HSMs take milliseconds;
 * calls overlap). thread: on one dedicated thread, in batches (in-process software tokens: a call takes ~15 us of CPU,
 * too little to pay a thread-pool dispatch for and too much to spend on the event loop; calls run one at a time).
 */
export const CallModeSchema = z.enum(['sync', 'async', 'thread']);
export type CallMode = z.infer<typeof CallModeSchema>;

export const ProfileSchema = z.strictObject({
  name: z.string(),
  vendor: z.string(),
  description: z.string().optional(),
  /** Candidate module paths, first existing one wins unless the config names a module. */
  modulePaths: z.array(z.string()).min(1),
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
  notes: z.array(z.string()).default([]),
});
export type HsmProfile = z.infer<typeof ProfileSchema>;

export const PROFILE_DIR = fileURLToPath(new URL('../../hsm/', import.meta.url));

export function loadProfile(name: string): HsmProfile {
  if (!/^[a-z0-9-]+$/.test(name)) throw new Error(`HSM profile name "${name}" must be lower-case letters, digits and dashes`);
  const file = `${PROFILE_DIR}${name}.yaml`;
  if (!existsSync(file)) throw new Error(`no HSM profile "${name}": expected ${file}`);
  const parsed = ProfileSchema.safeParse(parseYaml(readFileSync(file, 'utf8')));
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`HSM profile ${file}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}

export function resolveModulePath(profile: HsmProfile, configured?: string): string {
  if (configured) return configured;
  const found = profile.modulePaths.find((p) => existsSync(p));
  if (!found) {
    throw new Error(
      `no PKCS#11 module found for profile "${profile.name}" (looked in ${profile.modulePaths.join(', ')}): set hsm.module in the config`,
    );
  }
  return found;
}
