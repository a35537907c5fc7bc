// Imported material as the key record keeps it (the record's `import` field, key-record.ts): per imported version, the
// material's fingerprint (a key check value computed in the HSM), when the version was made (its CKA_ID date, reused
// when the same material is imported again), the expiration, and whether the material is gone (deleted by the
// operator or expired) and so waits for the same material to come back. Reading and writing it, and whether material
// may be used (materialExpired, asked on the XKS path), are key-record logic; only the import (src/import) changes it.
import { z } from 'zod';
import { KeyError } from './errors.js';
import type { KeyRecord } from './key-record.js';

export const ExpirationModelSchema = z.enum(['KEY_MATERIAL_EXPIRES', 'KEY_MATERIAL_DOES_NOT_EXPIRE'], {
  error: 'must be KEY_MATERIAL_EXPIRES or KEY_MATERIAL_DOES_NOT_EXPIRE',
});
export type ExpirationModel = z.infer<typeof ExpirationModelSchema>;

export const ImportedVersionSchema = z.strictObject({
  /** HMAC-SHA256(material, KCV_LABEL) computed in the HSM, first 16 bytes, base64url. */
  kcv: z.string().regex(/^[A-Za-z0-9_-]{22}$/),
  created: z.iso.datetime(),
  imported: z.iso.datetime(),
  expirationModel: ExpirationModelSchema,
  validTo: z.iso.datetime().optional(),
  /** The material was destroyed; the version is usable again once the same material is imported. */
  gone: z.enum(['Deleted', 'Expired']).optional(),
  goneAt: z.iso.datetime().optional(),
});
export type ImportedVersion = z.infer<typeof ImportedVersionSchema>;

export const ImportBookkeepingSchema = z.strictObject({
  f: z.literal(1),
  versions: z.record(z.string().regex(/^[1-9][0-9]{0,8}$/), ImportedVersionSchema),
});
export type ImportBookkeeping = z.infer<typeof ImportBookkeepingSchema>;

/** The bookkeeping of a record: empty when nothing was imported; a damaged one refuses the key rather than guess. */
export function readImport(record: KeyRecord | undefined): ImportBookkeeping {
  if (!record?.import) return { f: 1, versions: {} };
  const parsed = ImportBookkeepingSchema.safeParse(record.import);
  if (!parsed.success) throw new KeyError('KMSInvalidStateException', 'the import bookkeeping in the key record cannot be read; see xks keys describe');
  return parsed.data;
}

/** Parsed bookkeeping per record object: the XKS path asks on every request, and cached keys keep their record. */
const parsedOf = new WeakMap<object, ImportBookkeeping | null>();

/** Like readImport, for pure checks on the XKS path: undefined when absent or damaged. */
export function tryReadImport(record: KeyRecord | undefined): ImportBookkeeping | undefined {
  if (!record?.import) return undefined;
  const cached = parsedOf.get(record.import);
  if (cached !== undefined) return cached ?? undefined;
  const parsed = ImportBookkeepingSchema.safeParse(record.import);
  parsedOf.set(record.import, parsed.success ? parsed.data : null);
  return parsed.success ? parsed.data : undefined;
}

export function withImport(record: KeyRecord, bk: ImportBookkeeping): KeyRecord {
  return { ...record, import: bk as unknown as Record<string, unknown> };
}

export function importedVersions(bk: ImportBookkeeping): number[] {
  return Object.keys(bk.versions).map(Number).sort((a, b) => a - b);
}

/** The newest imported version: the one a key with imported material encrypts with. */
export function latestImported(bk: ImportBookkeeping): number | undefined {
  const all = importedVersions(bk);
  return all.length ? all[all.length - 1] : undefined;
}

/**
 * True when imported material may not be used at `now`: that of `version`, or by default of the key's newest imported
 * version (the one it encrypts with). Material is unusable once its ValidTo has passed, even before the import's sweep
 * destroys it, and after it was deleted. False for a key without imported material; true for damaged bookkeeping
 * (fail closed).
 */
export function materialExpired(record: KeyRecord | undefined, now: Date | number, version?: number): boolean {
  if (!record?.import) return false;
  const bk = tryReadImport(record);
  if (!bk) return true;
  const v = version ?? latestImported(bk);
  if (v === undefined) return false;
  const entry = bk.versions[String(v)];
  // A version the bookkeeping does not know (made before any import: not this key's case) is not its business.
  if (!entry) return false;
  return entry.gone !== undefined || (entry.validTo !== undefined && Date.parse(entry.validTo) <= +now);
}
