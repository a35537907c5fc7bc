// "Key material never leaves the HSM": a key whose token object says otherwise (CKA_SENSITIVE false, as
// `pkcs11-tool --keygen` makes it without --sensitive; or CKA_EXTRACTABLE without CKA_WRAP_WITH_TRUSTED) was served at
// once while `xks report` flagged it. It is refused (GetKeyMetadata DISABLED, Encrypt and Decrypt
// InvalidStateException) until the operator allows that key with `xks keys allow-exposed`, a change written to the
// key's record in the token and to the audit trail; the report says which it is. Real token, real server, real CLI.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trailFileName } from '../../src/audit/audit-trail.js';
import { exposure } from '../../src/keys/exposure.js';
import { reportKey } from '../../src/keys/report.js';
import { buildGcmAad } from '../../src/xks/aad.js';
import { encodeCiphertextMetadata } from '../../src/xks/ciphertext-metadata.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, makeForeignAesKey, TOKEN_FACTS } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';
import { pollUntil } from '../helpers/poll.js';

let t: TestProxy;
let xks: ReturnType<typeof xksClient>;
let auditDir: string;

beforeAll(async () => {
  ensureBuilt();
  const token = createTestToken('exposed');
  auditDir = join(token.dir, 'audit');
  t = await startProxyOnToken({ token, config: { audit: { dir: auditDir } }, keys: { good: { encrypt: true, decrypt: true } } });
  xks = xksClient(t.httpUrl);
}, 60_000);
afterAll(async () => t?.stop());

/** A version-1 ciphertext of an adopted key, made in the HSM directly (the proxy refuses to make one). */
async function ciphertextUnder(label: string) {
  const [object] = await t.proxy.hsm.findSecretKeys({ label });
  const metadata = encodeCiphertextMetadata(1);
  const out = await t.proxy.hsm.encryptGcm(object!.handle, Buffer.from(`made under ${label}`), buildGcmAad(undefined, metadata));
  return {
    ciphertext: out.ciphertext.toString('base64'),
    initializationVector: out.iv.toString('base64'),
    authenticationTag: out.tag.toString('base64'),
    ciphertextMetadata: metadata.toString('base64'),
  };
}

async function expectRefused(label: string, reason: RegExp, ciphertext: Record<string, unknown>) {
  const m = await xks.metadata(label);
  expect(m.status, m.text).toBe(200);
  expect(m.json).toEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'DISABLED' });
  const e = await xks.encrypt(label, Buffer.from('x'));
  expect(e.status, e.text).toBe(400);
  expect(e.json).toMatchObject({ errorName: 'InvalidStateException', errorMessage: expect.stringMatching(reason) });
  const d = await xks.decrypt(label, ciphertext);
  expect(d.status, d.text).toBe(400);
  expect(d.json).toMatchObject({ errorName: 'InvalidStateException', errorMessage: expect.stringMatching(reason) });
}

const cliTrail = () =>
  readFileSync(join(auditDir, trailFileName('cli')), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((l) => l.type === 'event');

// NSS makes every private token key CKA_SENSITIVE whatever the template asks: no readable key can be made there.
describe.skipIf(!TOKEN_FACTS.nonSensitiveKeys)('a key any logged-in user can read (CKA_SENSITIVE false)', () => {
  let ct: Record<string, unknown>;
  beforeAll(async () => {
    makeForeignAesKey(t.token, 'readable'); // what `pkcs11-tool --keygen --key-type aes:32` makes without --sensitive
    ct = await ciphertextUnder('readable');
  });

  it('is refused: GetKeyMetadata DISABLED, Encrypt and Decrypt InvalidStateException naming why; the report says so', async () => {
    await expectRefused('readable', /CKA_SENSITIVE is false/, ct);
    const r = reportKey(await t.proxy.lifecycle.get('readable'));
    expect(r.Compliant).toBe(false);
    expect(r.Versions[0]!.Findings).toContainEqual({ severity: 'violation', message: expect.stringMatching(/CKA_SENSITIVE is false/) });
    expect(r.Versions[0]!.Findings).toContainEqual({ severity: 'notice', message: expect.stringMatching(/refused.*xks keys allow-exposed/) });
    // The AES-256 key beside it is served as before.
    expect((await xks.encrypt('good', Buffer.from('x'))).status).toBe(200);
  });

  it('is served once the operator allows it (audited, kept in the token), and refused again when that is withdrawn', async () => {
    const allow = await runXks(['keys', 'allow-exposed', 'readable', '--json'], { token: t.token, configFile: t.configFile });
    expect(allow.code, allow.stderr).toBe(0);
    expect(JSON.parse(allow.stdout)).toMatchObject({ KeyId: 'readable', AllowExposedVersions: [1] });
    expect(cliTrail()).toContainEqual(expect.objectContaining({ source: 'cli', operation: 'keys allow-exposed', keyId: 'readable', keyVersion: 1, outcome: 'ok' }));
    // Another process changed the key's record: this server sees it within 2 x keyCacheTtlMs.
    await pollUntil('the allowed key encrypts', 10_000, async () => (await xks.encrypt('readable', Buffer.from('x'))).status === 200);
    const d = await xks.decrypt('readable', ct);
    expect(d.status, d.text).toBe(200);
    expect(Buffer.from(d.json.plaintext, 'base64').toString()).toBe('made under readable');
    expect((await xks.metadata('readable')).json.keyStatus).toBe('ENABLED');
    // Still a violation in the report, which says it is served by the operator's choice.
    const r = reportKey(await t.proxy.lifecycle.get('readable'));
    expect(r.Compliant).toBe(false);
    expect(r.Versions[0]!.Findings).toContainEqual({ severity: 'notice', message: expect.stringMatching(/served.*allow-exposed/) });

    const refuse = await runXks(['keys', 'refuse-exposed', 'readable'], { token: t.token, configFile: t.configFile });
    expect(refuse.code, refuse.stderr).toBe(0);
    expect(cliTrail()).toContainEqual(expect.objectContaining({ operation: 'keys refuse-exposed', keyId: 'readable', outcome: 'ok' }));
    await pollUntil('the key is refused again', 10_000, async () => (await xks.encrypt('readable', Buffer.from('x'))).status === 400);
    await expectRefused('readable', /CKA_SENSITIVE is false/, ct);
  });

  it('a version rotated in is generated sensitive and served; the exposed version still needs the opt-in to decrypt', async () => {
    expect((await t.proxy.lifecycle.rotate('readable')).Version).toBe(2);
    const e = await xks.encrypt('readable', Buffer.from('under version 2'));
    expect(e.status, e.text).toBe(200);
    const d = await xks.decrypt('readable', ct);
    expect(d.json).toMatchObject({ errorName: 'InvalidStateException', errorMessage: expect.stringMatching(/version 1.*CKA_SENSITIVE is false/) });
  });
});

describe('a key any key of the user can wrap out (CKA_EXTRACTABLE without CKA_WRAP_WITH_TRUSTED)', () => {
  let ct: Record<string, unknown>;
  beforeAll(async () => {
    makeForeignAesKey(t.token, 'wrappable', { sensitive: true, extractable: true });
    ct = await ciphertextUnder('wrappable');
  });

  it('is refused until allowed', async () => {
    await expectRefused('wrappable', /CKA_EXTRACTABLE/, ct);
    const allow = await runXks(['keys', 'allow-exposed', 'wrappable'], { token: t.token, configFile: t.configFile });
    expect(allow.code, allow.stderr).toBe(0);
    await pollUntil('the allowed key encrypts', 10_000, async () => (await xks.encrypt('wrappable', Buffer.from('x'))).status === 200);
  });

  it.skipIf(!TOKEN_FACTS.wrapWithTrusted)('while an exportable key the proxy made (wrapped out only under a trusted KEK) is served', async () => {
    await t.proxy.lifecycle.create('backed-up', { usage: { encrypt: true, decrypt: true }, exportable: true });
    expect((await xks.encrypt('backed-up', Buffer.from('x'))).status).toBe(200);
    expect((await xks.metadata('backed-up')).json.keyStatus).toBe('ENABLED');
  });
});

it('allow-exposed refuses a key with nothing exposed', async () => {
  const r = await runXks(['keys', 'allow-exposed', 'good'], { token: t.token, configFile: t.configFile });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/no version whose material can leave the HSM/);
});

it('an attribute the token does not report is never read as exposure', () => {
  expect(exposure({})).toEqual([]);
  expect(exposure({ sensitive: true, extractable: false })).toEqual([]);
  expect(exposure({ sensitive: true, extractable: true, wrapWithTrusted: true })).toEqual([]);
  expect(exposure({ sensitive: false })).toHaveLength(1);
  expect(exposure({ extractable: true })).toHaveLength(1);
});
