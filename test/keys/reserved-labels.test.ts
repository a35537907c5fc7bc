// The labels the proxy uses for its own keys are never external key ids, and its own keys are found by more than
// their label: `xks keys create xks-audit-hmac` made the audit key ambiguous (a record object with the audit key's
// label), and an operator's key under the health check's label would be served to KMS.
import { expect, it } from 'vitest';
import { ANCHOR_LABEL } from '../../src/audit/audit-anchor.js';
import { auditSigner, DEFAULT_AUDIT_KEY_LABEL, findAuditKeys } from '../../src/audit/audit-key.js';
import { GENERIC_SECRET_KEY_GEN } from '../../src/hsm/mechanisms.js';
import { hmacKeyTemplate } from '../../src/hsm/templates.js';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';

const t = useProxyOnToken();

it.each([DEFAULT_AUDIT_KEY_LABEL, ANCHOR_LABEL, 'xks-proxy-health-check'])('refuses %s as an external key id, making nothing', async (label) => {
  const before = (await t.proxy.hsm.findSecretKeys({ label })).length;
  await expect(t.proxy.lifecycle.create(label, { usage: { encrypt: true, decrypt: true } })).rejects.toMatchObject({
    code: 'ValidationException',
    message: expect.stringMatching(/reserved for the proxy's own keys/),
  });
  expect((await t.proxy.hsm.findSecretKeys({ label })).length).toBe(before);
});

it('finds its audit key by label and CKA_ID: another object with the label is not taken for it', async () => {
  const signer = await auditSigner(t.proxy.hsm);
  const [key] = await findAuditKeys(t.proxy.hsm, DEFAULT_AUDIT_KEY_LABEL);
  expect(key).toBeDefined();
  // A generic secret with the audit label made by something else (an earlier release's key record, another tool).
  await t.proxy.hsm.generateKey(hmacKeyTemplate(DEFAULT_AUDIT_KEY_LABEL, Buffer.from('not-the-audit-key')), GENERIC_SECRET_KEY_GEN);
  expect(await findAuditKeys(t.proxy.hsm, DEFAULT_AUDIT_KEY_LABEL)).toEqual([key]);
  const mac = await signer.mac(Buffer.from('checkpoint'));
  expect(await t.proxy.hsm.verifyHmacSha256(key!, Buffer.from('checkpoint'), mac)).toBe(true);
});
