// Every CKA_ID the proxy writes is unique and never rewritten (docs/key-model.md). NSS takes a new key with an existing
// CKA_CLASS and CKA_ID for the same object and overwrites its value: under the earlier layout, keys created in the same
// second shared version ids and lost their material. Runs on every token kind; on NSS it is the regression test.
import { randomBytes } from 'node:crypto';
import { expect, it } from 'vitest';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';

const t = useProxyOnToken();
const IDS = ['same-second-a', 'same-second-b', 'same-second-c', 'same-second-d', 'same-second-e', 'same-second-f'];

it('keys created and rotated in the same second each keep their own material', async () => {
  await Promise.all(IDS.map((id) => t.proxy.lifecycle.create(id, { usage: { encrypt: true, decrypt: true } })));
  const xks = xksClient(t.httpUrl);
  const made: Record<string, { pt: Buffer; enc: any }> = {};
  for (const id of IDS) {
    const pt = randomBytes(32);
    const enc = await xks.encrypt(id, pt);
    expect(enc.status, enc.text).toBe(200);
    made[id] = { pt, enc: enc.json };
  }
  await Promise.all(IDS.map((id) => t.proxy.lifecycle.rotate(id)));
  await Promise.all(IDS.map((id) => t.proxy.lifecycle.disable(id).then(() => t.proxy.lifecycle.enable(id))));
  for (const id of IDS) t.proxy.catalogue.invalidate(id);
  for (const id of IDS) {
    // Its own ciphertext decrypts under it, and under no other key.
    const dec = await xks.decrypt(id, decryptFields(made[id]!.enc));
    expect(dec.status, `${id}: ${dec.text}`).toBe(200);
    expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(made[id]!.pt);
    const other = IDS[(IDS.indexOf(id) + 1) % IDS.length]!;
    expect((await xks.decrypt(other, decryptFields(made[id]!.enc))).json.errorName).toBe('InvalidCiphertextException');
    const key = await t.proxy.lifecycle.get(id);
    expect([...key.versions.keys()].sort()).toEqual([1, 2]);
    expect(key.state).toBe('Enabled');
  }
});

it('no two objects in the token carry the same CKA_ID of the proxy', async () => {
  const ours = (await t.proxy.hsm.findSecretKeys({})).map((o) => o.id.toString('latin1')).filter((id) => id.startsWith('xks:'));
  expect(ours.length).toBeGreaterThanOrEqual(IDS.length * 5); // per key: 2 versions, 2 markers, a record
  expect(new Set(ours).size).toBe(ours.length);
});
