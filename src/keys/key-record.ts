// The key record: what a key is beyond its material (state, usage, origin, dates). Stored as compact JSON in the
// CKA_ID of a generic secret object that carries the key's label (key-objects.ts); the token stays the only store.
import { z } from 'zod';

/** Key states, named as KMS names them. */
export const KeyStateSchema = z.enum(['Enabled', 'Disabled', 'PendingDeletion', 'PendingImport']);
export type KeyState = z.infer<typeof KeyStateSchema>;

/** HSM: generated in the HSM; EXTERNAL: customer material imported; ADOPTED: a bare labelled key found in the token. */
export const OriginSchema = z.enum(['HSM', 'EXTERNAL', 'ADOPTED']);
export type Origin = z.infer<typeof OriginSchema>;

export const KeyUsageSchema = z.enum(['ENCRYPT', 'DECRYPT']);

/** KMS's bounds for automatic rotation (RotationPeriodInDays) and for the deletion waiting period. */
export const ROTATION_DAYS = { min: 90, max: 2560 } as const;
export const PENDING_WINDOW_DAYS = { min: 7, max: 30, default: 30 } as const;

export const KeyRecordSchema = z.looseObject({
  /** Record format version. */
  f: z.literal(1),
  state: KeyStateSchema,
  usage: z.array(KeyUsageSchema),
  origin: OriginSchema,
  created: z.iso.datetime(),
  exportable: z.boolean().default(false),
  rotationDays: z.number().int().min(ROTATION_DAYS.min).max(ROTATION_DAYS.max).optional(),
  deletionDate: z.iso.datetime().optional(),
  /**
   * Versions served although their material can leave the HSM (keys/exposure.ts): the operator's choice for this key,
   * made with `xks keys allow-exposed` (on the audit trail). Absent: every exposed version is refused.
   */
  allowExposed: z.array(z.number().int().min(1)).optional(),
  /** Bring-your-own-key bookkeeping: its shape and reading in imported-material.ts, changed only by src/import; opaque to the lifecycle. */
  import: z.record(z.string(), z.unknown()).optional(),
});
export type KeyRecord = z.infer<typeof KeyRecordSchema>;

export function encodeRecord(r: KeyRecord): string {
  return JSON.stringify(r);
}

/** The record, or undefined when the JSON is damaged (the key is then refused, never guessed). */
export function decodeRecord(json: string): KeyRecord | undefined {
  try {
    const parsed = KeyRecordSchema.safeParse(JSON.parse(json));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
