// The backup ceremony with the built CLI, end to end, on two tokens A and B that one process can use together: a KEK made
// on A moves to B (transport key, send, receive, checked by fingerprint and check value read "out of band" from the
// other side's output), an exportable key with two versions is exported from A and restored into B.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runXks, type CliRun } from '../helpers/built-cli.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestTokens, TOKEN_FACTS, tokenSecrets, type TestToken } from '../helpers/test-token.js';

// Every step from `xks kek create` on needs the security officer (a trusted KEK). NSS softoken has no SO:
// C_Login(CKU_SO) answers CKR_USER_TYPE_INVALID once the database has a password (checked on NSS 3.87).
const NO_SO = !TOKEN_FACTS.soLogin;

let A: TestToken;
let B: TestToken;
const config: Record<'A' | 'B', string> = { A: '', B: '' };
const file = (name: string) => join(A.dir, name);

function xks(side: 'A' | 'B', args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  const t = side === 'A' ? A : B;
  // Both tokens share A's env (one SoftHSM directory or one set of NSS parameters).
  return runXks(args, { token: A, configFile: config[side], env: { XKS_HSM_SO_PIN: t.soPin ?? '', XKS_PIN_A: A.userPin, XKS_PIN_B: B.userPin, ...env } });
}

function ok(r: CliRun): string {
  expect(r.stderr, r.stderr).toBe('');
  expect(r.code).toBe(0);
  for (const pin of [...tokenSecrets(A), ...tokenSecrets(B)]) expect(r.stdout).not.toContain(pin);
  return r.stdout.trim();
}

function failed(r: CliRun, message: RegExp): void {
  expect(r.code, r.stdout).toBe(1);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  for (const pin of [...tokenSecrets(A), ...tokenSecrets(B)]) expect(r.stderr).not.toContain(pin);
}

beforeAll(() => {
  ensureBuilt();
  if (NO_SO) return;
  [A, B] = createTestTokens(['cli-a', 'cli-b']) as [TestToken, TestToken];
  // One conf directory for both: each config names its own PIN variable.
  config.A = writeTestConfig(A, { hsm: { pin: { env: 'XKS_PIN_A' } } }, 'a.yaml');
  config.B = writeTestConfig(B, { hsm: { pin: { env: 'XKS_PIN_B' } } }, 'b.yaml');
}, 120_000);

afterAll(() => A?.cleanup());

describe.skipIf(NO_SO)('xks kek and xks keys export / import-wrapped', () => {
  let checkValue = '';
  let fingerprint = '';

  it('xks kek create needs the SO PIN', async () => {
    failed(await xks('A', ['kek', 'create', 'bk'], { XKS_HSM_SO_PIN: '' }), /XKS_HSM_SO_PIN/);
    failed(await xks('A', ['kek', 'create', 'bk'], { XKS_HSM_SO_PIN: 'wrong-pin' }), /security officer PIN/);
  });

  it('xks kek create makes a trusted KEK on A and prints its check value', async () => {
    const out = ok(await xks('A', ['kek', 'create', 'bk']));
    const m = /^created KEK bk: trusted, private; check value ([0-9a-f]{32})$/.exec(out);
    expect(m, out).not.toBeNull();
    checkValue = m![1]!;
    failed(await xks('A', ['kek', 'create', 'bk']), /KEK "bk" already exists/);
  });

  it('xks kek transport-key writes B\'s public key and prints its fingerprint', async () => {
    const out = ok(await xks('B', ['kek', 'transport-key', 'bk', '--out', file('b-transport.der')]));
    const m = /fingerprint ([0-9a-f]{64})$/.exec(out);
    expect(m, out).not.toBeNull();
    fingerprint = m![1]!;
    expect(existsSync(file('b-transport.der'))).toBe(true);
    const list = JSON.parse(ok(await xks('B', ['kek', 'list', '--json'])));
    expect(list).toEqual({ keks: [], transportKeys: [{ label: 'bk', fingerprint }] });
  });

  it('xks kek send refuses a fingerprint that is not the receiver\'s, then wraps the KEK for B', async () => {
    const refused = await xks('A', ['kek', 'send', 'bk', '--public-key', file('b-transport.der'), '--fingerprint', '00'.repeat(32), '--out', file('bk.wrapped')]);
    failed(refused, /fingerprint does not match/);
    // The refusal never tells the value to compare out of band: an operator could otherwise copy it from here.
    expect(refused.stdout + refused.stderr).not.toContain(fingerprint);
    expect(refused.stderr).not.toMatch(/[0-9a-f]{64}/);
    expect(existsSync(file('bk.wrapped'))).toBe(false);
    const out = ok(await xks('A', ['kek', 'send', 'bk', '--public-key', file('b-transport.der'), '--fingerprint', fingerprint, '--out', file('bk.wrapped')]));
    expect(out).toContain(`check value ${checkValue}`);
    failed(
      await xks('A', ['kek', 'send', 'bk', '--public-key', file('b-transport.der'), '--fingerprint', fingerprint, '--out', file('bk.wrapped')]),
      /already exists/,
    );
  });

  it('xks kek receive refuses a wrong check value, then takes the KEK in B', async () => {
    const refused = await xks('B', ['kek', 'receive', 'bk', '--in', file('bk.wrapped'), '--check-value', 'ff'.repeat(16)]);
    failed(refused, /check value does not match/);
    expect(refused.stdout + refused.stderr).not.toContain(checkValue);
    expect(refused.stderr).not.toMatch(/[0-9a-f]{32}/);
    const out = ok(await xks('B', ['kek', 'receive', 'bk', '--in', file('bk.wrapped'), '--check-value', checkValue]));
    expect(out).toBe(`received KEK bk: trusted, private; check value ${checkValue}`);
    for (const side of ['A', 'B'] as const) {
      const list = JSON.parse(ok(await xks(side, ['kek', 'list', '--json'])));
      expect(list).toEqual({ keks: [{ label: 'bk', trusted: true, private: true, wrap: true, unwrap: true, checkValue }], transportKeys: [] });
    }
    expect(ok(await xks('B', ['kek', 'list']))).toBe(`KEK bk: trusted, private; check value ${checkValue}`);
  });

  it('exports an exportable key with two versions from A and restores it into B', async () => {
    ok(await xks('A', ['keys', 'create', 'pay', '--exportable']));
    ok(await xks('A', ['keys', 'rotate', 'pay']));
    const out = ok(await xks('A', ['keys', 'export', 'pay', '--kek', 'bk', '--out', file('pay.backup')]));
    expect(out).toBe(`exported pay: versions 1, 2 wrapped under KEK bk (check value ${checkValue}) to ${file('pay.backup')}`);
    const doc = JSON.parse(readFileSync(file('pay.backup'), 'utf8'));
    expect(doc.format).toBe('xks-key-backup-v1');

    const restored = ok(await xks('B', ['keys', 'import-wrapped', file('pay.backup'), '--kek', 'bk']));
    expect(restored).toBe('restored pay: Enabled, versions 1, 2, current 2');
    const a = JSON.parse(ok(await xks('A', ['keys', 'describe', 'pay'])));
    const b = JSON.parse(ok(await xks('B', ['keys', 'describe', 'pay'])));
    expect(b).toMatchObject({ KeyId: 'pay', KeyState: 'Enabled', Origin: 'HSM', Exportable: true, CurrentVersion: 2, CreationDate: a.CreationDate });
    expect(b.Versions.map((v: any) => [v.Version, v.CreationDate, v.Sensitive, v.Local])).toEqual(
      a.Versions.map((v: any) => [v.Version, v.CreationDate, true, false]),
    );
    failed(await xks('B', ['keys', 'import-wrapped', file('pay.backup'), '--kek', 'bk']), /"pay" already exists/);
  });

  it('refuses to export a key that is not exportable, and an altered backup file', async () => {
    ok(await xks('A', ['keys', 'create', 'plain']));
    failed(await xks('A', ['keys', 'export', 'plain', '--kek', 'bk', '--out', file('plain.backup')]), /"plain" is not exportable/);
    expect(existsSync(file('plain.backup'))).toBe(false);

    const doc = JSON.parse(readFileSync(file('pay.backup'), 'utf8'));
    doc.keyId = 'pay2';
    writeFileSync(file('pay2.backup'), JSON.stringify(doc));
    failed(await xks('B', ['keys', 'import-wrapped', file('pay2.backup'), '--kek', 'bk']), /does not verify: it was altered or damaged/);
    failed(await xks('B', ['keys', 'describe', 'pay2']), /no key "pay2"/);
  });
});
