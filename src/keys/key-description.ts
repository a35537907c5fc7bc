// A key as operators see it (CLI `xks keys describe`, admin API DescribeKey): KMS's field names, plus per version
// the PKCS#11 evidence that its material never left the HSM.
import { usageOf, type ExternalKey } from './catalogue.js';
import { encryptionFinding } from './encryption-blocks.js';
import type { EncryptionLimits } from './encryption-limits.js';

const DAY_MS = 86_400_000;

/** Encryptions reserved per version (encryption-blocks.ts), where the caller read them from the token. */
export interface EncryptionCounts {
  reserved: ReadonlyMap<number, number>;
  limits: EncryptionLimits;
}

export function describeKey(k: ExternalKey, encryptions?: EncryptionCounts) {
  const usage = usageOf(k);
  const r = k.record;
  const current = k.current;
  const lastRotation = current && current.version > 1 ? current.createdAt : undefined;
  const rotatedFrom = current?.createdAt ?? (r ? new Date(r.created) : undefined);
  // The current version near or at NIST SP 800-38D's bound for random IVs: due for rotation, or refused.
  const worn = current && encryptions ? encryptionFinding(encryptions.reserved.get(current.version) ?? 0, encryptions.limits) : undefined;
  return {
    KeyId: k.id,
    KeySpec: 'AES_256',
    KeyUsage: [usage.encrypt && 'ENCRYPT', usage.decrypt && 'DECRYPT'].filter((u): u is string => Boolean(u)),
    KeyState: k.state,
    Origin: k.origin,
    ...(r ? { CreationDate: r.created } : {}),
    Exportable: r?.exportable === true,
    ...(r?.deletionDate ? { DeletionDate: r.deletionDate } : {}),
    ...(r?.rotationDays !== undefined ? { RotationPeriodInDays: r.rotationDays } : {}),
    ...(r?.rotationDays !== undefined && rotatedFrom
      ? { NextRotationDate: new Date(rotatedFrom.getTime() + r.rotationDays * DAY_MS).toISOString() }
      : {}),
    ...(lastRotation ? { LastRotationDate: lastRotation.toISOString() } : {}),
    ...(current ? { CurrentVersion: current.version } : {}),
    // More than one token object for one version: the proxy refuses that version until the extra objects are removed.
    ...(k.duplicateVersions.size > 0 ? { DuplicateVersions: [...k.duplicateVersions] } : {}),
    ...(k.candidates.length > 0 ? { RotationsInProgress: k.candidates.map((c) => c.version) } : {}),
    ...(k.problems.length > 0 ? { Problems: [...k.problems] } : {}),
    // Versions whose material can leave the HSM that the operator chose to serve anyway (xks keys allow-exposed).
    ...(r?.allowExposed?.length ? { AllowExposedVersions: [...r.allowExposed] } : {}),
    ...(worn ? { EncryptionLimit: `version ${current!.version}: ${worn}` } : {}),
    Versions: [...k.versions.values()]
      .sort((a, b) => a.version - b.version)
      .map((v) => ({
        Version: v.version,
        // Objects committed as this version by writers that could not see each other: all kept, all decrypt.
        ...(v.alternates.length > 0 ? { Objects: 1 + v.alternates.length } : {}),
        ...(v.createdAt ? { CreationDate: v.createdAt.toISOString() } : {}),
        Encrypt: v.encrypt,
        Decrypt: v.decrypt,
        // CKA_LOCAL and CKA_NEVER_EXTRACTABLE true: generated in the HSM and never readable outside it. "unknown" on a
        // token that does not report them faithfully (its HSM profile's attributes.localIsEvidence).
        Local: v.attrs.local ?? ('unknown' as const),
        NeverExtractable: v.attrs.neverExtractable ?? ('unknown' as const),
        AlwaysSensitive: v.attrs.alwaysSensitive === true,
        Sensitive: v.attrs.sensitive === true,
        Extractable: v.attrs.extractable === true,
        // An upper bound of the encryptions made under this version by every proxy (absent: none).
        ...(encryptions?.reserved.get(v.version) ? { EncryptionsReserved: encryptions.reserved.get(v.version)! } : {}),
      })),
  };
}
export type KeyDescription = ReturnType<typeof describeKey>;
