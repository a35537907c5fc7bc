// Request bodies of the admin API, one strict zod schema per operation (X-Amz-Target: XksAdmin.<Operation>), with
// KMS's field names. Strict: a misspelt field (PendingWindowDays) is refused rather than silently taking a default.
// The bounds are the key model's (keys/key-record.ts), so a request that passes here is not refused for its numbers.
import { z } from 'zod';
import { EXTERNAL_KEY_ID } from '../keys/key-objects.js';
import { IMPORT_ADMIN_SCHEMAS } from '../import/schemas.js';
import { PENDING_WINDOW_DAYS, ROTATION_DAYS } from '../keys/key-record.js';

const KeyId = z.string({ error: 'must be a string' }).regex(EXTERNAL_KEY_ID, 'must be an external key id: 1 to 128 characters of A-Za-z0-9._-');

const wholeDays = (min: number, max: number) => {
  const message = `must be a whole number of days from ${min} to ${max}`;
  return z.number({ error: message }).int(message).min(min, message).max(max, message);
};
const RotationPeriodInDays = wholeDays(ROTATION_DAYS.min, ROTATION_DAYS.max);
const PendingWindowInDays = wholeDays(PENDING_WINDOW_DAYS.min, PENDING_WINDOW_DAYS.max);

const OneKey = z.strictObject({ KeyId });
const NoFields = z.strictObject({});

export const ADMIN_SCHEMAS = {
  CreateKey: z.strictObject({
    KeyId,
    /** As DescribeKey shows it; default both. An empty list makes a key that can do neither (for tests of KMS). */
    KeyUsage: z
      .array(z.enum(['ENCRYPT', 'DECRYPT'], { error: 'must list ENCRYPT and/or DECRYPT' }), { error: 'must be a list such as ["ENCRYPT", "DECRYPT"]' })
      .refine((u) => new Set(u).size === u.length, 'lists a usage twice')
      .optional(),
    /** HSM: generated in the HSM (default); EXTERNAL: no material until it is imported. */
    Origin: z.enum(['HSM', 'EXTERNAL'], { error: 'must be HSM or EXTERNAL' }).optional(),
    RotationPeriodInDays: RotationPeriodInDays.optional(),
    Exportable: z.boolean({ error: 'must be true or false' }).optional(),
  }),
  DescribeKey: OneKey,
  ListKeys: z.strictObject({
    Limit: z.number({ error: 'must be a whole number from 1 to 1000' }).int('must be a whole number from 1 to 1000').min(1, 'must be a whole number from 1 to 1000').max(1000, 'must be a whole number from 1 to 1000').optional(),
    /** NextMarker of the previous page. */
    Marker: KeyId.optional(),
  }),
  EnableKey: OneKey,
  DisableKey: OneKey,
  GetKeyRotationStatus: OneKey,
  /** KMS's default period is 365 days. */
  EnableKeyRotation: z.strictObject({ KeyId, RotationPeriodInDays: RotationPeriodInDays.optional() }),
  DisableKeyRotation: OneKey,
  RotateKeyOnDemand: OneKey,
  ScheduleKeyDeletion: z.strictObject({ KeyId, PendingWindowInDays: PendingWindowInDays.optional() }),
  CancelKeyDeletion: OneKey,
  /** Our own: the CLI's rotate-due and purge-due, for a scheduler that can call HTTP but not run the CLI. */
  RotateDueKeys: NoFields,
  PurgeDueKeys: NoFields,
  // Bring your own key (src/import): GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial, SweepImports.
  ...IMPORT_ADMIN_SCHEMAS,
} as const;

export type AdminOperation = keyof typeof ADMIN_SCHEMAS;
export type AdminRequest<O extends AdminOperation> = z.infer<(typeof ADMIN_SCHEMAS)[O]>;

export function isAdminOperation(name: string): name is AdminOperation {
  return Object.hasOwn(ADMIN_SCHEMAS, name);
}

/** X-Amz-Target's prefix, as KMS's is TrentService. */
export const ADMIN_TARGET_PREFIX = 'XksAdmin.';
export const ADMIN_SERVICE = 'xks-admin';
export const DEFAULT_ROTATION_PERIOD_DAYS = 365;
