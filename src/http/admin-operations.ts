// The admin API's operations: each a { schema, run } entry (request-cycle.ts runs them), with KMS's names and
// response fields. Every operation in admin-schemas.ts must have one: the compiler checks the table.
import type { z, ZodType } from 'zod';
import type { ImportService } from '../import/import-service.js';
import { getParametersForImportResponse } from '../import/schemas.js';
import { describeKey } from '../keys/key-description.js';
import { PENDING_WINDOW_DAYS } from '../keys/key-record.js';
import type { KeyLifecycle } from '../keys/lifecycle.js';
import { ADMIN_SCHEMAS, DEFAULT_ROTATION_PERIOD_DAYS, type AdminOperation } from './admin-schemas.js';
import type { Operation } from './request-cycle.js';

/** The services the operations call: key lifecycle and the import of key material. */
export interface AdminServices {
  lifecycle: KeyLifecycle;
  imports: ImportService;
}

/** An operation on the services, typed by its schema. */
function op<S extends ZodType>(schema: S, run: (services: AdminServices, request: z.output<S>) => Promise<object>): Operation<AdminServices, object> {
  return { schema, run };
}

/** Each operation: its body's schema, and one service call answered with KMS's response fields (and the key after the change). */
export const ADMIN_OPERATIONS = {
  CreateKey: op(ADMIN_SCHEMAS.CreateKey, async ({ lifecycle: lc }, r) => {
    const usage = r.KeyUsage ?? ['ENCRYPT', 'DECRYPT'];
    const key = await lc.create(r.KeyId, {
      usage: { encrypt: usage.includes('ENCRYPT'), decrypt: usage.includes('DECRYPT') },
      origin: r.Origin ?? 'HSM',
      rotationPeriodDays: r.RotationPeriodInDays,
      exportable: r.Exportable === true,
    });
    return { KeyMetadata: describeKey(key) };
  }),
  DescribeKey: op(ADMIN_SCHEMAS.DescribeKey, async ({ lifecycle: lc }, r) => {
    const key = await lc.get(r.KeyId);
    return { KeyMetadata: describeKey(key, await lc.encryptionCounts(key)) };
  }),
  ListKeys: op(ADMIN_SCHEMAS.ListKeys, async ({ lifecycle: lc }, r) => {
    // Code-point order, so a marker means the same thing in every process.
    const all = (await lc.list()).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const marker = r.Marker;
    const from = marker === undefined ? all : all.filter((k) => k.id > marker);
    const page = from.slice(0, r.Limit ?? 1000);
    const truncated = page.length < from.length;
    return {
      Keys: page.map((k) => ({ KeyId: k.id, KeyState: k.state })),
      Truncated: truncated,
      ...(truncated ? { NextMarker: page[page.length - 1]!.id } : {}),
    };
  }),
  EnableKey: op(ADMIN_SCHEMAS.EnableKey, async ({ lifecycle: lc }, r) => ({ KeyMetadata: describeKey(await lc.enable(r.KeyId)) })),
  DisableKey: op(ADMIN_SCHEMAS.DisableKey, async ({ lifecycle: lc }, r) => ({ KeyMetadata: describeKey(await lc.disable(r.KeyId)) })),
  GetKeyRotationStatus: op(ADMIN_SCHEMAS.GetKeyRotationStatus, async ({ lifecycle: lc }, r) => {
    const d = describeKey(await lc.get(r.KeyId));
    return {
      KeyId: d.KeyId,
      KeyRotationEnabled: d.RotationPeriodInDays !== undefined,
      ...(d.RotationPeriodInDays !== undefined ? { RotationPeriodInDays: d.RotationPeriodInDays } : {}),
      ...(d.NextRotationDate !== undefined ? { NextRotationDate: d.NextRotationDate } : {}),
      ...(d.CurrentVersion !== undefined ? { CurrentVersion: d.CurrentVersion } : {}),
    };
  }),
  EnableKeyRotation: op(ADMIN_SCHEMAS.EnableKeyRotation, async ({ lifecycle: lc }, r) => ({
    KeyMetadata: describeKey(await lc.setRotation(r.KeyId, r.RotationPeriodInDays ?? DEFAULT_ROTATION_PERIOD_DAYS)),
  })),
  DisableKeyRotation: op(ADMIN_SCHEMAS.DisableKeyRotation, async ({ lifecycle: lc }, r) => ({ KeyMetadata: describeKey(await lc.setRotation(r.KeyId, undefined)) })),
  RotateKeyOnDemand: op(ADMIN_SCHEMAS.RotateKeyOnDemand, async ({ lifecycle: lc }, r) => {
    const done = await lc.rotate(r.KeyId);
    return { KeyId: done.KeyId, Version: done.Version };
  }),
  ScheduleKeyDeletion: op(ADMIN_SCHEMAS.ScheduleKeyDeletion, async ({ lifecycle: lc }, r) => {
    const days = r.PendingWindowInDays ?? PENDING_WINDOW_DAYS.default;
    const d = describeKey(await lc.scheduleDeletion(r.KeyId, days));
    return { KeyId: d.KeyId, DeletionDate: d.DeletionDate, KeyState: d.KeyState, PendingWindowInDays: days };
  }),
  CancelKeyDeletion: op(ADMIN_SCHEMAS.CancelKeyDeletion, async ({ lifecycle: lc }, r) => {
    const d = describeKey(await lc.cancelDeletion(r.KeyId));
    return { KeyId: d.KeyId, KeyState: d.KeyState };
  }),
  RotateDueKeys: op(ADMIN_SCHEMAS.RotateDueKeys, async ({ lifecycle: lc }) => ({
    ...(await lc.rotateDue().then((all) => ({
      Rotations: all.filter((x) => x.Rotated).map((x) => ({ KeyId: x.KeyId, Version: x.Version })),
      ...(all.some((x) => x.Error) ? { Failures: all.filter((x) => x.Error).map((x) => ({ KeyId: x.KeyId, Error: x.Error })) } : {}),
    }))),
  })),
  PurgeDueKeys: op(ADMIN_SCHEMAS.PurgeDueKeys, async ({ lifecycle: lc }) => ({ DeletedKeyIds: await lc.purgeDue() })),
  GetParametersForImport: op(ADMIN_SCHEMAS.GetParametersForImport, async ({ imports }, r) => getParametersForImportResponse(await imports.getParametersForImport(r))),
  ImportKeyMaterial: op(ADMIN_SCHEMAS.ImportKeyMaterial, async ({ imports }, r) => imports.importKeyMaterial(r)),
  DeleteImportedKeyMaterial: op(ADMIN_SCHEMAS.DeleteImportedKeyMaterial, async ({ imports }, r) => imports.deleteImportedKeyMaterial(r.KeyId)),
  SweepImports: op(ADMIN_SCHEMAS.SweepImports, async ({ imports }) => imports.sweep()),
} satisfies { [O in AdminOperation]: Operation<AdminServices, object> };

/** The version an answer names: RotateKeyOnDemand's Version, an import's KeyMaterialVersion, else the key's CurrentVersion. */
export function versionIn(result: object): number | undefined {
  const r = result as { Version?: unknown; KeyMaterialVersion?: unknown; KeyMetadata?: { CurrentVersion?: unknown } };
  if (typeof r.Version === 'number' && r.Version > 0) return r.Version;
  if (typeof r.KeyMaterialVersion === 'number') return r.KeyMaterialVersion;
  const v = r.KeyMetadata?.CurrentVersion;
  return typeof v === 'number' ? v : undefined;
}

