// How many encryptions a key version may make (config `encryptionLimits`, advanced): NIST SP 800-38D 8.3 allows at
// most 2^32 invocations of AES-GCM with random 96-bit IVs per key. Counted in the token (encryption-blocks.ts).
import { z } from 'zod';

export const NIST_GCM_RANDOM_IV_LIMIT = 2 ** 32;

export const DEFAULT_ENCRYPTION_LIMITS = {
  // 16 default blocks below the bound: the room racing claims may take on SoftHSM's file store (docs/key-model.md).
  perVersion: NIST_GCM_RANDOM_IV_LIMIT - 2 ** 26,
  rotateAfter: 2 ** 31,
  // About 30 minutes of one process at KMS's default 1,800 requests/s.
  perBlock: 2 ** 22,
} as const;

export const EncryptionLimitsSchema = z
  .strictObject({
    /** No block is reserved past this many encryptions of one version, so Encrypt under it is refused from there. */
    perVersion: z.number().int().min(1).max(NIST_GCM_RANDOM_IV_LIMIT).default(DEFAULT_ENCRYPTION_LIMITS.perVersion),
    /** A version with this many reserved is due for rotation (xks keys rotate-due, xks report, xks keys describe). */
    rotateAfter: z.number().int().min(1).max(NIST_GCM_RANDOM_IV_LIMIT).default(DEFAULT_ENCRYPTION_LIMITS.rotateAfter),
    /** The largest block one process reserves at once (its first is 1/64 of it, each next twice the one before). */
    perBlock: z.number().int().min(1).max(2 ** 26).default(DEFAULT_ENCRYPTION_LIMITS.perBlock),
  })
  .refine((e) => e.rotateAfter <= e.perVersion, { message: 'must not be above perVersion', path: ['rotateAfter'] });
export type EncryptionLimits = z.infer<typeof EncryptionLimitsSchema>;
