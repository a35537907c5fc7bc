// Every key template spelled out: SoftHSM's defaults are permissive (a key made without explicit attributes is readable).
import { P, type Template } from './module.js';

export interface AesKeySpec {
  label: string;
  /** CKA_ID bytes: the proxy's version tag, see keys/key-labels.ts. */
  id?: Buffer | undefined;
  encrypt: boolean;
  decrypt: boolean;
  /** A token object survives the process; a session object (health checks in tests) does not. */
  token?: boolean;
}

export function aes256KeyTemplate(spec: AesKeySpec): Template {
  const t: Template = [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_VALUE_LEN, value: 32 },
    { type: P.CKA_TOKEN, value: spec.token ?? true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_MODIFIABLE, value: true },
    { type: P.CKA_ENCRYPT, value: spec.encrypt },
    { type: P.CKA_DECRYPT, value: spec.decrypt },
    { type: P.CKA_WRAP, value: false },
    { type: P.CKA_UNWRAP, value: false },
    { type: P.CKA_SIGN, value: false },
    { type: P.CKA_VERIFY, value: false },
    { type: P.CKA_DERIVE, value: false },
    { type: P.CKA_LABEL, value: spec.label },
  ];
  if (spec.id) t.push({ type: P.CKA_ID, value: spec.id });
  return t;
}
