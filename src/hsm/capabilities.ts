// What the token can do, read once at start-up and merged with the HSM profile.
import { chooseKeyWrap, CKM_AES_KEY_WRAP_KWP, type KeyWrap } from './key-wrap.js';
import { V3_MECHANISM_NAMES } from './mechanism-names.js';
import { P, type Handle, type Pkcs11 } from './module.js';
import type { CallMode, HsmProfile, IvMode } from './profile.js';

export interface Capabilities {
  mechanisms: string[];
  aesGcm: boolean;
  aesKeyGen: boolean;
  /** RFC 5649 key wrap under the number this token gives it (key-wrap.ts); undefined when it has none. */
  keyWrap: KeyWrap | undefined;
  rsaOaep: boolean;
  rsaX509: boolean;
  hmacSha256: boolean;
  ivMode: IvMode;
  callMode: CallMode;
  sessionKeyCopies: boolean;
  /** Import of key material (src/import): RSA wrapping key pairs, OAEP unwrap, AES-CMAC and HMAC key checks. */
  rsaKeyPairGen: boolean;
  rsaOaepUnwrap: boolean;
  aesCmac: boolean;
  genericSecretKeyGen: boolean;
}

const NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(P)) {
  if (name.startsWith('CKM_') && typeof value === 'number' && !NAMES.has(value)) NAMES.set(value, name);
}
// PKCS#11 v3.0 mechanisms (pkcs11js has v2.40's): CKM_AES_KEY_WRAP_KWP, CKM_RSA_AES_KEY_WRAP, CKM_EDDSA ...
for (const [value, name] of V3_MECHANISM_NAMES) if (!NAMES.has(value)) NAMES.set(value, name);
NAMES.set(CKM_AES_KEY_WRAP_KWP, 'CKM_AES_KEY_WRAP_KWP');
const CKM_VENDOR_DEFINED = 0x80000000;

/** The mechanism's PKCS#11 name; a vendor's own number as CKM_VENDOR_DEFINED+0x..., which only its vendor can name. */
export function mechanismName(m: number): string {
  const name = NAMES.get(m);
  if (name) return name;
  return m >= CKM_VENDOR_DEFINED ? `CKM_VENDOR_DEFINED+0x${(m - CKM_VENDOR_DEFINED).toString(16)}` : `0x${m.toString(16)}`;
}

export function readCapabilities(
  mod: Pkcs11,
  slot: Handle,
  /** A logged-in session for the key wrap's known-answer test (session objects, destroyed). */
  session: Handle,
  profile: HsmProfile,
  overrides: { ivMode?: IvMode | undefined; callMode?: CallMode | undefined },
): Capabilities {
  const list = new Set(mod.C_GetMechanismList(slot));
  const can = (m: number, flag: number): boolean => {
    if (!list.has(m)) return false;
    try {
      return (mod.C_GetMechanismInfo(slot, m).flags & flag) !== 0;
    } catch {
      return false;
    }
  };
  return {
    mechanisms: [...list].map(mechanismName).sort(),
    aesGcm: can(P.CKM_AES_GCM, P.CKF_ENCRYPT) && can(P.CKM_AES_GCM, P.CKF_DECRYPT),
    aesKeyGen: can(P.CKM_AES_KEY_GEN, P.CKF_GENERATE),
    keyWrap: chooseKeyWrap(mod, session, new Set([...list].filter((m) => can(m, P.CKF_WRAP) && can(m, P.CKF_UNWRAP)))),
    rsaOaep: can(P.CKM_RSA_PKCS_OAEP, P.CKF_UNWRAP) || can(P.CKM_RSA_PKCS_OAEP, P.CKF_DECRYPT),
    rsaX509: can(P.CKM_RSA_X_509, P.CKF_DECRYPT),
    hmacSha256: can(P.CKM_SHA256_HMAC, P.CKF_SIGN),
    ivMode: overrides.ivMode ?? profile.ivMode,
    callMode: overrides.callMode ?? profile.callMode,
    sessionKeyCopies: profile.sessionKeyCopies,
    rsaKeyPairGen: can(P.CKM_RSA_PKCS_KEY_PAIR_GEN, P.CKF_GENERATE_KEY_PAIR),
    rsaOaepUnwrap: can(P.CKM_RSA_PKCS_OAEP, P.CKF_UNWRAP),
    aesCmac: can(P.CKM_AES_CMAC, P.CKF_SIGN),
    genericSecretKeyGen: can(P.CKM_GENERIC_SECRET_KEY_GEN, P.CKF_GENERATE),
  };
}
