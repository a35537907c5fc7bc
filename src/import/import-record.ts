// Import bookkeeping inside the key record, as the import changes it. Its shape, and reading it on the XKS path, are
// key-record logic in keys/imported-material.ts; here, the strict read that refuses damaged bookkeeping, and writing
// it back into a record.
import { KeyError } from '../keys/errors.js';
import { ImportBookkeepingSchema, type ImportBookkeeping } from '../keys/imported-material.js';
import type { KeyRecord } from '../keys/key-record.js';

/** The bookkeeping of a record: empty when nothing was imported; a damaged one refuses the key rather than guess. */
export function readImport(record: KeyRecord | undefined): ImportBookkeeping {
  if (!record?.import) return { f: 1, versions: {} };
  const parsed = ImportBookkeepingSchema.safeParse(record.import);
  if (!parsed.success) throw new KeyError('KMSInvalidStateException', 'the import bookkeeping in the key record cannot be read; see xks keys describe');
  return parsed.data;
}

export function withImport(record: KeyRecord, bk: ImportBookkeeping): KeyRecord {
  return { ...record, import: bk as unknown as Record<string, unknown> };
}
