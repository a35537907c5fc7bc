// The compliance report: for every key and version, where the material came from and the PKCS#11 evidence that it
// cannot leave the HSM in the clear, and the encryptions reserved under it; anything that breaks that promise is
// flagged, and so is a current version due for rotation by NIST SP 800-38D's bound (encryption-blocks.ts).
import type { ExternalKey, KeyVersion } from './catalogue.js';
import { encryptionFinding } from './encryption-blocks.js';
import type { EncryptionLimits } from './encryption-limits.js';
import { exposure, exposureAllowed } from './exposure.js';
import { describeKey, type EncryptionCounts } from './key-description.js';

export type Severity = 'violation' | 'notice';

export interface Finding {
  severity: Severity;
  message: string;
}

function versionFindings(key: ExternalKey, v: KeyVersion): Finding[] {
  const a = v.attrs;
  const out: Finding[] = exposure(a).map((message) => ({ severity: 'violation' as const, message }));
  if (out.length > 0) {
    out.push(
      exposureAllowed(key, v.version)
        ? { severity: 'notice', message: `served anyway: the operator allowed it (xks keys allow-exposed ${key.id}, on the audit trail)` }
        : { severity: 'notice', message: `refused: XKS calls on this version answer InvalidStateException until xks keys allow-exposed ${key.id}` },
    );
  }
  if (a.sensitive === undefined) out.push({ severity: 'notice', message: 'the token does not report CKA_SENSITIVE' });
  if (a.extractable && a.wrapWithTrusted) {
    out.push({ severity: 'notice', message: 'exportable: can be wrapped out under a KEK the security officer marked trusted (backup)' });
  }
  if (!a.alwaysSensitive && a.sensitive) out.push({ severity: 'notice', message: 'CKA_ALWAYS_SENSITIVE is false: the value was readable at some point before' });
  // Absent: the token does not report CKA_LOCAL / CKA_NEVER_EXTRACTABLE faithfully (HSM profile), so they prove nothing.
  if (a.local === undefined) {
    out.push({ severity: 'notice', message: 'origin unknown: this token does not report CKA_LOCAL faithfully (HSM profile attributes.localIsEvidence)' });
  }
  if (key.origin === 'HSM' && a.local === false) out.push({ severity: 'violation', message: 'recorded as generated in the HSM, but CKA_LOCAL is false' });
  if (key.origin === 'HSM' && a.neverExtractable === false && !a.extractable) {
    out.push({ severity: 'violation', message: 'recorded as generated in the HSM, but CKA_NEVER_EXTRACTABLE is false' });
  }
  if (key.origin === 'ADOPTED' && a.local === false) out.push({ severity: 'notice', message: 'adopted key not generated in this HSM (CKA_LOCAL false): imported by other means' });
  return out;
}

/** What the report needs to judge encryptions: the reserved counts of every key (one search), and the limits. */
export interface ReportEncryptions {
  reservedOf(keyId: string): ReadonlyMap<number, number>;
  limits: EncryptionLimits;
}

export function reportKey(key: ExternalKey, encryptions?: ReportEncryptions) {
  const counts: EncryptionCounts | undefined = encryptions ? { reserved: encryptions.reservedOf(key.id), limits: encryptions.limits } : undefined;
  const d = describeKey(key, counts);
  const keyFindings: Finding[] = key.problems.map((message) => ({ severity: 'violation' as const, message }));
  // The version Encrypt uses, at or past its rotation threshold: flagged until the key is rotated (older versions only decrypt).
  const worn = key.current && counts ? encryptionFinding(counts.reserved.get(key.current.version) ?? 0, counts.limits) : undefined;
  if (worn) keyFindings.push({ severity: 'violation', message: `current version ${key.current!.version}: ${worn}` });
  if (key.duplicateVersions.size > 0) keyFindings.push({ severity: 'notice', message: `versions ${[...key.duplicateVersions].join(', ')} have more than one object (refused until resolved)` });
  const versions = [...key.versions.values()]
    .sort((a, b) => a.version - b.version)
    .map((v) => ({
      Version: v.version,
      ...(v.createdAt ? { CreationDate: v.createdAt.toISOString() } : {}),
      // CKA_LOCAL: generated in the HSM; otherwise unwrapped or created (imported material); unknown where the token
      // does not report it faithfully.
      Origin: v.attrs.local === undefined ? 'UNKNOWN' : v.attrs.local ? 'GENERATED_IN_HSM' : 'IMPORTED',
      Sensitive: v.attrs.sensitive === true,
      Extractable: v.attrs.extractable === true,
      WrapWithTrusted: v.attrs.wrapWithTrusted === true,
      NeverExtractable: v.attrs.neverExtractable ?? ('unknown' as const),
      AlwaysSensitive: v.attrs.alwaysSensitive === true,
      Local: v.attrs.local ?? ('unknown' as const),
      // An upper bound of the encryptions made under this version by every proxy on the token.
      ...(counts ? { EncryptionsReserved: counts.reserved.get(v.version) ?? 0 } : {}),
      Findings: versionFindings(key, v),
    }));
  const all = [...keyFindings, ...versions.flatMap((v) => v.Findings)];
  return {
    KeyId: d.KeyId,
    KeyState: d.KeyState,
    Origin: d.Origin,
    ...(d.CreationDate ? { CreationDate: d.CreationDate } : {}),
    ...(d.RotationPeriodInDays !== undefined ? { RotationPeriodInDays: d.RotationPeriodInDays } : {}),
    ...(d.LastRotationDate ? { LastRotationDate: d.LastRotationDate } : {}),
    ...(d.NextRotationDate ? { NextRotationDate: d.NextRotationDate } : {}),
    ...(d.DeletionDate ? { DeletionDate: d.DeletionDate } : {}),
    CurrentVersion: d.CurrentVersion,
    Findings: keyFindings,
    Versions: versions,
    /** True when nothing breaks "key material never leaves the HSM in the clear" and no current version is worn out. */
    Compliant: !all.some((f) => f.severity === 'violation'),
  };
}
export type KeyReport = ReturnType<typeof reportKey>;

export function report(
  keys: ExternalKey[],
  token: { label: string; serial: string; manufacturer: string; model: string },
  now: Date,
  encryptions?: ReportEncryptions,
) {
  const rows = keys.map((k) => reportKey(k, encryptions));
  return {
    GeneratedAt: now.toISOString(),
    Token: token,
    Keys: rows,
    Summary: {
      Keys: rows.length,
      Versions: rows.reduce((n, r) => n + r.Versions.length, 0),
      NonCompliantKeys: rows.filter((r) => !r.Compliant).map((r) => r.KeyId),
    },
  };
}
