// Expiry of imported key material, as pure functions of the key record and a clock. Material whose ValidTo has passed
// is unusable at once, before any sweep destroys it (the XKS path asks keys/imported-material.ts's materialExpired);
// the sweep (ImportService.sweep, `xks import sweep`, safe from cron on any number of hosts) then destroys it and
// records that it is gone.
import { latestImported, tryReadImport, withImport, type ImportBookkeeping } from '../keys/imported-material.js';
import type { KeyRecord } from '../keys/key-record.js';

/** Versions whose ValidTo has passed at `now` and whose material is not yet recorded as gone. */
export function expiredVersions(record: KeyRecord | undefined, now: Date): number[] {
  const bk = tryReadImport(record);
  if (!bk) return [];
  return Object.entries(bk.versions)
    .filter(([, e]) => e.gone === undefined && e.validTo !== undefined && Date.parse(e.validTo) <= now.getTime())
    .map(([v]) => Number(v))
    .sort((a, b) => a - b);
}

/**
 * The record once the material of `versions` is gone (deleted or expired): each is marked, keeping the date its version
 * was made (`createdOf`, from its CKA_ID) so that the same material comes back as the very same version; and when the
 * newest imported version is among them, the key waits in PendingImport (a key pending deletion stays so).
 */
export function markMaterialGone(
  record: KeyRecord,
  bk: ImportBookkeeping,
  versions: number[],
  reason: 'Deleted' | 'Expired',
  now: Date,
  createdOf: (version: number) => Date | undefined = () => undefined,
): KeyRecord {
  const next: ImportBookkeeping = { f: 1, versions: { ...bk.versions } };
  for (const v of versions) {
    const e = next.versions[String(v)];
    if (!e || e.gone !== undefined) continue;
    next.versions[String(v)] = { ...e, created: createdOf(v)?.toISOString() ?? e.created, gone: reason, goneAt: now.toISOString() };
  }
  const latest = latestImported(next);
  const latestGone = latest !== undefined && next.versions[String(latest)]?.gone !== undefined;
  const state = latestGone && record.state !== 'PendingDeletion' ? 'PendingImport' : record.state;
  return withImport({ ...record, state }, next);
}
