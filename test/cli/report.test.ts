// `xks report` on a real token: generated, exportable and adopted (pkcs11-tool, not sensitive) keys; the evidence per
// version, and the flag and exit code 2 for what breaks "key material never leaves the HSM in the clear".
import { expect, it } from 'vitest';
import { useCliOnToken } from '../helpers/proxy-on-token.js';
import { makeForeignAesKey, TOKEN_FACTS, evidence } from '../helpers/test-token.js';

const cli = useCliOnToken('report-token');
const xks = cli.xks;

it('reports generated keys as compliant, with their evidence, and exits 0', async () => {
  expect((await xks(['keys', 'create', 'gen1', '--rotation-period-days', '90'])).code).toBe(0);
  expect((await xks(['keys', 'rotate', 'gen1'])).code).toBe(0);
  const exportable = await xks(['keys', 'create', 'exp1', '--exportable']);
  // A token without CKA_WRAP_WITH_TRUSTED (NSS) would let any user key wrap an exportable key out: none is made.
  if (TOKEN_FACTS.wrapWithTrusted) expect(exportable.code, exportable.stderr).toBe(0);
  else expect(exportable.stderr).toMatch(/cannot restrict wrapping to a trusted KEK.*CKA_WRAP_WITH_TRUSTED/);
  const r = await xks(['report', '--json']);
  expect(r.code, r.stderr).toBe(0);
  const rep = JSON.parse(r.stdout);
  expect(rep.Token).toMatchObject({ label: 'report-token', serial: cli.token.serial });
  const gen = rep.Keys.find((k: { KeyId: string }) => k.KeyId === 'gen1');
  expect(gen).toMatchObject({ KeyState: 'Enabled', Origin: 'HSM', RotationPeriodInDays: 90, CurrentVersion: 2, Compliant: true });
  expect(gen.LastRotationDate).toMatch(/^\d{4}-/);
  expect(gen.Versions).toHaveLength(2);
  for (const v of gen.Versions) {
    expect(v).toMatchObject({ Sensitive: true, Extractable: false, NeverExtractable: evidence(true), Local: evidence(true) });
    // A token that does not report CKA_LOCAL faithfully cannot prove the origin: said as a notice, not a violation.
    expect(v.Origin).toBe(TOKEN_FACTS.localIsEvidence ? 'GENERATED_IN_HSM' : 'UNKNOWN');
    expect(v.Findings.map((f: { severity: string }) => f.severity)).toEqual(TOKEN_FACTS.localIsEvidence ? [] : ['notice']);
  }
  const exp = rep.Keys.find((k: { KeyId: string }) => k.KeyId === 'exp1');
  if (TOKEN_FACTS.wrapWithTrusted) {
    expect(exp.Compliant).toBe(true);
    expect(exp.Versions[0]).toMatchObject({ Extractable: true, WrapWithTrusted: true });
    expect(exp.Versions[0].Findings).toEqual([expect.objectContaining({ severity: 'notice', message: expect.stringMatching(/trusted/) })]);
  } else {
    expect(exp).toBeUndefined();
  }
  expect(rep.Summary).toMatchObject({ NonCompliantKeys: [] });
});

// NSS makes every private token key CKA_SENSITIVE whatever the template asks: no readable key can be made there.
it.skipIf(!TOKEN_FACTS.nonSensitiveKeys)('flags a key whose value any logged-in user can read, names it, and exits 2', async () => {
  // pkcs11-tool makes keys that are not CKA_SENSITIVE (makeForeignAesKey makes the same object).
  makeForeignAesKey(cli.token, 'readable1');
  const json = await xks(['report', '--json']);
  expect(json.code).toBe(2);
  const rep = JSON.parse(json.stdout);
  const bad = rep.Keys.find((k: { KeyId: string }) => k.KeyId === 'readable1');
  expect(bad).toMatchObject({ Origin: 'ADOPTED', Compliant: false });
  expect(bad.Versions[0].Findings).toContainEqual({ severity: 'violation', message: expect.stringMatching(/CKA_SENSITIVE is false/) });
  expect(rep.Summary.NonCompliantKeys).toEqual(['readable1']);

  const text = await xks(['report']);
  expect(text.code).toBe(2);
  expect(text.stdout).toMatch(/FLAG readable1/);
  expect(text.stdout).toMatch(/OK {3}gen1/);
  expect(text.stdout).toMatch(/flagged: readable1/);
  expect(text.stdout).not.toContain(cli.token.userPin);
});
