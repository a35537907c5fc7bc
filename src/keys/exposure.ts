// "Key material never leaves the HSM in the clear", read from a version's token object. A version is exposed when
// CKA_SENSITIVE is false (any logged-in user reads CKA_VALUE: `pkcs11-tool --keygen` without --sensitive) or when it is
// CKA_EXTRACTABLE without CKA_WRAP_WITH_TRUSTED (any key of the user can wrap it out). The proxy does not serve an
// exposed version unless the operator allowed it for that key (`xks keys allow-exposed`: the versions go into the
// key's record in the token, and the command onto the audit trail). An attribute the token does not report proves
// nothing either way, so it never refuses a key. Pure functions.
import type { ExternalKey, KeyVersion } from './catalogue.js';

/** Why this object's material can leave the HSM; empty when nothing says so. */
export function exposure(attrs: Record<string, boolean>): string[] {
  const out: string[] = [];
  if (attrs.sensitive === false) out.push('CKA_SENSITIVE is false: any logged-in user can read the key value');
  if (attrs.extractable === true && attrs.wrapWithTrusted !== true) {
    out.push('CKA_EXTRACTABLE without CKA_WRAP_WITH_TRUSTED: any key of the user can wrap it out');
  }
  return out;
}

/** exposure(attrs).length > 0 without allocating: this runs on every Encrypt and Decrypt. */
function isExposed(attrs: Record<string, boolean>): boolean {
  return attrs.sensitive === false || (attrs.extractable === true && attrs.wrapWithTrusted !== true);
}

/** The versions with an exposed object (alternates included), lowest first. */
export function exposedVersions(key: ExternalKey): number[] {
  return [...key.versions.values()]
    .filter((v) => [v, ...v.alternates].some((o) => isExposed(o.attrs)))
    .map((v) => v.version)
    .sort((a, b) => a - b);
}

/** Whether the operator allowed this version to be served although it is exposed. */
export function exposureAllowed(key: ExternalKey, version: number): boolean {
  return key.record?.allowExposed?.includes(version) === true;
}

/** Why the proxy refuses to serve this version (exposed and not allowed); undefined when it may. */
export function refusedExposure(key: ExternalKey, v: KeyVersion): string | undefined {
  if (!isExposed(v.attrs) && !v.alternates.some((o) => isExposed(o.attrs))) return undefined;
  if (exposureAllowed(key, v.version)) return undefined;
  const reasons = [v, ...v.alternates].flatMap((o) => exposure(o.attrs));
  return `version ${v.version} of external key ${key.id} is not served: its material can leave the HSM (${[...new Set(reasons)].join('; ')})`;
}
