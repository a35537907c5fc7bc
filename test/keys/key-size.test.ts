// Only AES-256 keys are served (XKS keySpec AES_256): an AES-128 key under an external key id
// (`pkcs11-tool --keygen --key-type aes:16 --label X`) was served as AES_256. It is refused by name on every XKS call
// and flagged by the compliance report.
import { beforeAll, expect, it } from 'vitest';
import { P } from '../../src/hsm/module.js';
import { reportKey } from '../../src/keys/report.js';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { tokenLibrary } from '../helpers/token-library.js';
import { xksClient } from '../helpers/xks-client.js';

const t = useProxyOnToken({ keys: { good: { encrypt: true, decrypt: true } } });
beforeAll(() => {
  // What pkcs11-tool --keygen --key-type aes:16 --sensitive makes: a token AES key of 16 bytes, no CKA_ID (made here,
  // on a session of the test's own, as pkcs11-tool would beside the server).
  const { mod, withSession } = tokenLibrary(t.token);
  withSession((s) => mod.C_GenerateKey(s, { mechanism: P.CKM_AES_KEY_GEN }, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_VALUE_LEN, value: 16 },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_ENCRYPT, value: true },
    { type: P.CKA_DECRYPT, value: true },
    { type: P.CKA_LABEL, value: 'short' },
  ]));
});

it('refuses an AES-128 key by name on GetKeyMetadata and Encrypt', async () => {
  const xks = xksClient(t.httpUrl);
  const m = await xks.metadata('short');
  expect(m.status, m.text).toBe(400);
  expect(m.json).toMatchObject({ errorName: 'InvalidStateException', errorMessage: expect.stringMatching(/AES-128.*only AES-256/) });
  const e = await xks.encrypt('short', Buffer.from('x'));
  expect(e.status).toBe(400);
  expect(e.json).toMatchObject({ errorName: 'InvalidStateException', errorMessage: expect.stringMatching(/AES-128/) });
  // An AES-256 key beside it is served as before.
  expect((await xks.metadata('good')).json.keySpec).toBe('AES_256');
});

it('flags it in the compliance report', async () => {
  const r = reportKey(await t.proxy.lifecycle.get('short'));
  expect(r.Compliant).toBe(false);
  expect(r.Findings).toContainEqual({ severity: 'violation', message: expect.stringMatching(/AES-128/) });
});
