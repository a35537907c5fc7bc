// RFC 5649 AES key wrap with padding, under whichever number the token gives it. PKCS#11 v3.0 numbers it
// CKM_AES_KEY_WRAP_KWP (0x210B) and gives 0x210A (CKM_AES_KEY_WRAP_PAD) to PKCS#7 padding + RFC 3394 (NSS, Luna);
// SoftHSM 2.6 implements RFC 5649 under 0x210A, its known mis-numbering. So the mechanism is chosen by what the token
// lists and confirmed by a known-answer test against node:crypto's id-aes256-wrap-pad: backups, the KEK check value and
// RSA_AES_KEY_WRAP imports then mean the same bytes on every token.
import { createCipheriv, randomBytes } from 'node:crypto';
import { P, type Handle, type Pkcs11 } from './module.js';

export const CKM_AES_KEY_WRAP_KWP = 0x210b;
export const CKM_AES_KEY_WRAP_PAD = 0x210a;
const RFC5649_AIV = Buffer.from('A65959A6', 'hex');

export interface KeyWrap {
  mechanism: number;
  name: 'CKM_AES_KEY_WRAP_KWP' | 'CKM_AES_KEY_WRAP_PAD';
  /** The known-answer test ran and matched; false: the token refused keys of known value, so the number is trusted. */
  confirmed: boolean;
}

const NAMES = { [CKM_AES_KEY_WRAP_KWP]: 'CKM_AES_KEY_WRAP_KWP', [CKM_AES_KEY_WRAP_PAD]: 'CKM_AES_KEY_WRAP_PAD' } as const;

/**
 * The token's RFC 5649 mechanism: of the two numbers it lists (0x210B first, the standard's), the first whose wrap of a
 * key of known value equals RFC 5649's, on session objects destroyed afterwards. A token that refuses keys of known value
 * (FIPS mode) gets 0x210B unconfirmed when it lists it; 0x210A is never taken on trust, since its meaning differs.
 */
export function chooseKeyWrap(mod: Pkcs11, session: Handle, listed: ReadonlySet<number>): KeyWrap | undefined {
  const candidates = [CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_PAD].filter((m) => listed.has(m));
  if (candidates.length === 0) return undefined;
  const kekValue = randomBytes(32);
  const keyValue = randomBytes(32);
  const made: Handle[] = [];
  try {
    let kek: Handle;
    let key: Handle;
    try {
      kek = mod.C_CreateObject(session, knownAes(kekValue, { wrap: true }));
      made.push(kek);
      key = mod.C_CreateObject(session, knownAes(keyValue, { wrap: false }));
      made.push(key);
    } catch {
      return listed.has(CKM_AES_KEY_WRAP_KWP) ? { mechanism: CKM_AES_KEY_WRAP_KWP, name: NAMES[CKM_AES_KEY_WRAP_KWP], confirmed: false } : undefined;
    }
    const cipher = createCipheriv('id-aes256-wrap-pad', kekValue, RFC5649_AIV);
    const expected = Buffer.concat([cipher.update(keyValue), cipher.final()]);
    for (const m of candidates) {
      try {
        const wrapped = mod.C_WrapKey(session, { mechanism: m }, kek, key, Buffer.alloc(64));
        if (Buffer.from(wrapped).equals(expected)) return { mechanism: m, name: NAMES[m as keyof typeof NAMES], confirmed: true };
      } catch {
        // not this one
      }
    }
    return undefined;
  } finally {
    for (const h of made) {
      try {
        mod.C_DestroyObject(session, h);
      } catch {
        // a session object: gone with the session anyway
      }
    }
    keyValue.fill(0);
    kekValue.fill(0);
  }
}

/**
 * A session AES-256 key of known value that can only wrap, or only be wrapped. Besides the import workaround, the only
 * CKA_VALUE the proxy ever sets: random, wiped after the test, never a customer's key; nothing reads a value back.
 */
function knownAes(value: Buffer, o: { wrap: boolean }) {
  return [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_TOKEN, value: false },
    // Public: a security officer's session (KEK ceremonies) can make only public objects.
    { type: P.CKA_PRIVATE, value: false },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: !o.wrap },
    { type: P.CKA_WRAP, value: o.wrap },
    { type: P.CKA_UNWRAP, value: false },
    { type: P.CKA_ENCRYPT, value: false },
    { type: P.CKA_DECRYPT, value: false },
    { type: P.CKA_VALUE, value },
  ];
}
