// The mechanisms the proxy uses, by name, so that no code outside src/hsm spells a CKM_* number. AES-GCM and RFC 5649
// key wrap are chosen per token inside src/hsm (hsm-connection.ts, key-wrap.ts).
import type pkcs11js from 'pkcs11js';
import { P, type Mechanism } from './module.js';

export type { Mechanism } from './module.js';

export const AES_KEY_GEN: Mechanism = { mechanism: P.CKM_AES_KEY_GEN };
/** Records, commit markers, HMAC keys: generated in the token so that no value passes through the process. */
export const GENERIC_SECRET_KEY_GEN: Mechanism = { mechanism: P.CKM_GENERIC_SECRET_KEY_GEN };
export const RSA_KEY_PAIR_GEN: Mechanism = { mechanism: P.CKM_RSA_PKCS_KEY_PAIR_GEN };
export const HMAC_SHA256: Mechanism = { mechanism: P.CKM_SHA256_HMAC };
export const AES_CMAC: Mechanism = { mechanism: P.CKM_AES_CMAC };
/** Raw RSA (CKM_RSA_X_509): imports whose OAEP the token cannot do with SHA-256; the proxy decodes the output. */
export const RSA_RAW: Mechanism = { mechanism: P.CKM_RSA_X_509 };

/** RSA-OAEP by itself, as CKA_ALLOWED_MECHANISMS names it; a call takes rsaOaepMechanism(hash). */
export const RSA_OAEP: Mechanism = { mechanism: P.CKM_RSA_PKCS_OAEP };

/** CKM_RSA_PKCS_OAEP with MGF1 over the same hash and an empty label (what openssl and node:crypto make). */
export function rsaOaepMechanism(hash: 'sha1' | 'sha256'): Mechanism {
  const parameter: pkcs11js.RsaOAEP = {
    type: P.CK_PARAMS_RSA_OAEP,
    hashAlg: hash === 'sha1' ? P.CKM_SHA_1 : P.CKM_SHA256,
    mgf: hash === 'sha1' ? P.CKG_MGF1_SHA1 : P.CKG_MGF1_SHA256,
    source: 1, // CKZ_DATA_SPECIFIED (pkcs11js does not export it), with no data: the empty label
  };
  return { mechanism: P.CKM_RSA_PKCS_OAEP, parameter };
}

/** RSA-OAEP as SoftHSM 2.6.1 has it: SHA-1 and MGF1-SHA1 only (any other hash answers CKR_ARGUMENTS_BAD). KEK transfers. */
export const RSA_OAEP_SHA1: Mechanism = rsaOaepMechanism('sha1');

/** A mechanism given by number (tests, src/hsm) or by name. */
export function asMechanism(m: number | Mechanism): Mechanism {
  return typeof m === 'number' ? { mechanism: m } : m;
}
