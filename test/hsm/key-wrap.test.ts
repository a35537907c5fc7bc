// RFC 5649 key wrap under the number this token gives it (src/hsm/key-wrap.ts): SoftHSM 2.6 implements it under 0x210A
// (its mis-numbering), NSS under the standard 0x210B (where 0x210A is PKCS#7 padding + RFC 3394). The connection's
// choice must wrap a key of known value exactly as RFC 5649 does (node:crypto's id-aes256-wrap-pad), or backups and
// RSA_AES_KEY_WRAP imports would mean different bytes on different tokens.
import { createCipheriv, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { P } from '../../src/hsm/module.js';
import { createKnownAesKey, createTokenObject, openTestHsm } from '../helpers/test-hsm.js';
import { createTestToken, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';

let token: TestToken;
let hsm: HsmConnection;

beforeAll(async () => {
  token = createTestToken('key-wrap');
  hsm = await openTestHsm(token);
});
afterAll(() => {
  hsm?.close();
  token?.cleanup();
});

it('is chosen by the token and confirmed by a known-answer test', () => {
  const kw = hsm.capabilities.keyWrap;
  expect(kw?.confirmed).toBe(true);
  expect(kw?.name).toBe(TOKEN_KIND === 'nss' ? 'CKM_AES_KEY_WRAP_KWP' : 'CKM_AES_KEY_WRAP_PAD');
});

it('wraps a key of known value exactly as RFC 5649 does', async () => {
  const kekValue = randomBytes(32);
  const keyValue = randomBytes(32);
  const kek = await createTokenObject(hsm, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_VALUE, value: kekValue },
    { type: P.CKA_TOKEN, value: false },
    { type: P.CKA_WRAP, value: true },
  ]);
  const key = await createKnownAesKey(hsm, keyValue);
  const wrapped = await hsm.wrapKey(hsm.keyWrap(), kek, key);
  const c = createCipheriv('id-aes256-wrap-pad', kekValue, Buffer.from('A65959A6', 'hex'));
  expect(wrapped.toString('hex')).toBe(Buffer.concat([c.update(keyValue), c.final()]).toString('hex'));
  expect(wrapped).toHaveLength(40);
});
