// `xks hsm check` on a real token of the kind under test (XKS_TEST_TOKEN; SoftHSM by default): the probe function
// in this process, then the built CLI (table, --json, exit codes) and `xks serve`'s start-up summary in child processes.
// Expectations that differ between tokens are the facts the check exists to find (SoftHSM: RFC 5649 under 0x210A, a
// second object for a second CKA_ID; NSS: 0x210B, one object overwritten). hsm-check-nss.test.ts runs NSS always.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkHsm, type CheckReport, type CheckRow } from '../../src/hsm/check.js';
import { findSlot, loadModule, P } from '../../src/hsm/module.js';
import { loadProfile } from '../../src/hsm/profile.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { buildEmulator, EMULATOR } from '../helpers/emulator.js';
import { spawnServe } from '../helpers/serve-process.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND, tokenSecrets, type TestToken } from '../helpers/test-token.js';

let token: TestToken;
let configFile: string;
let report: CheckReport;

function row(r: CheckReport, name: string): CheckRow {
  const found = r.rows.find((x) => x.name === name);
  if (!found) throw new Error(`no row ${name} in ${r.rows.map((x) => x.name).join(', ')}`);
  return found;
}

/** Token objects in the token, counted in this process (the library loaded and finalised again). */
function tokenObjectCount(): number {
  const mod = loadModule(token.library);
  try {
    const slot = findSlot(mod, { tokenLabel: token.label });
    const s = mod.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
    mod.C_Login(s, P.CKU_USER, token.userPin);
    mod.C_FindObjectsInit(s, [{ type: P.CKA_TOKEN, value: true }]);
    const n = mod.C_FindObjects(s, 1000).length;
    mod.C_FindObjectsFinal(s);
    return n;
  } finally {
    mod.C_Finalize();
  }
}

beforeAll(async () => {
  ensureBuilt();
  token = createTestToken('check-token');
  configFile = writeTestConfig(token);
  const before = tokenObjectCount();
  report = await checkHsm({ library: token.library, profile: loadProfile(token.profile), tokenLabel: token.label, pin: token.userPin });
  expect(tokenObjectCount()).toBe(before);
}, 120_000);

afterAll(() => token?.cleanup());

describe('checkHsm', () => {
  it('says the proxy can serve, with every required probe ok', () => {
    expect(report.reason).toBeUndefined();
    expect(report.canServe).toBe(true);
    expect(report.token?.label).toBe(token.label);
    for (const r of report.rows.filter((x) => x.needed === 'required')) expect(r.status, `${r.name}: ${r.result}`).toBe('ok');
    expect(report.rows.map((r) => r.name)).toEqual(
      expect.arrayContaining(['login', 'aes-keygen', 'cka-local', 'aes-gcm', 'aes-gcm-bad-tag', 'objects', 'attribute-change', 'duplicate-id', 'allowed-mechanisms', 'aes-kwp', 'rsa-oaep-sha1', 'rsa-oaep-sha256', 'rsa-x509', 'hmac-sha256', 'session-copy', 'random']),
    );
  });

  it('finds generated keys sensitive and non-extractable, AES-GCM standard, a tampered tag refused', () => {
    expect(row(report, 'aes-keygen').result).toMatch(/sensitive, not extractable/);
    expect(row(report, 'aes-gcm-kat').status).toBe('ok');
    expect(row(report, 'aes-gcm-bad-tag').result).toMatch(/^refused with CKR_/);
  });

  it.runIf(TOKEN_KIND === 'softhsm')('on SoftHSM: 0x210A is RFC 5649, a second CKA_ID makes a second object, CKA_LOCAL is true', () => {
    const kwp = row(report, 'aes-kwp');
    expect(kwp.status).toBe('ok');
    expect(kwp.result).toMatch(/0x210A: RFC 5649/);
    const dup = row(report, 'duplicate-id');
    expect(dup.status).toBe('ok');
    expect(dup.result).toMatch(/^a second object: two handles, 2 found/);
    expect(row(report, 'cka-local').result).toBe('CKA_LOCAL true on a generated key');
    expect(row(report, 'allowed-mechanisms').status).toBe('ok');
    // SoftHSM's OAEP has SHA-1 only.
    expect(row(report, 'rsa-oaep-sha1').status).toBe('ok');
    expect(row(report, 'rsa-oaep-sha256').result).toMatch(/CKR_ARGUMENTS_BAD/);
    expect(row(report, 'rsa-x509').status).toBe('ok');
  });

  it.runIf(TOKEN_KIND === 'nss')('on NSS: 0x210B is RFC 5649, a second CKA_ID overwrites the first, CKA_LOCAL is false', () => {
    expect(row(report, 'aes-kwp').result).toMatch(/0x210A: not RFC 5649.*0x210B: RFC 5649/);
    expect(row(report, 'duplicate-id').result).toMatch(/same object is returned and overwritten/);
    expect(row(report, 'cka-local').result).toBe('CKA_LOCAL false on a generated key');
  });
});

describe('xks hsm check', () => {
  it('prints the table and exits 0', async () => {
    const r = await runXks(['hsm', 'check'], { token, configFile });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^PROBE +STATUS +NEEDED +FOUND/);
    expect(r.stdout).toMatch(/^aes-gcm +ok +required +encrypt \+ decrypt round trip/m);
    expect(r.stdout).toMatch(/^duplicate-id /m);
    expect(r.stdout).toMatch(/^aes-kwp /m);
    expect(r.stdout).toContain('verdict: the proxy can serve on this token');
    for (const secret of tokenSecrets(token)) expect(r.stdout).not.toContain(secret);
  }, 60_000);

  it('--json prints the rows', async () => {
    const r = await runXks(['hsm', 'check', '--json'], { token, configFile });
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as CheckReport;
    expect(json.canServe).toBe(true);
    expect(json.rows.find((x) => x.name === 'aes-gcm')).toMatchObject({ status: 'ok', needed: 'required' });
  }, 60_000);

  it('exits 1 with one sentence when the token cannot serve as configured (an ivMode it does not use)', async () => {
    const file = writeTestConfig(token, { hsm: { ivMode: 'hsm-appends' } }, 'appends.yaml');
    const r = await runXks(['hsm', 'check'], { token, configFile: file });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^aes-gcm +FAIL +required/m);
    expect(r.stderr.trim()).toBe('xks: the token cannot serve: AES-GCM does not behave as ivMode hsm-appends says (the output is 16 bytes longer than the plaintext, expected 28)');
  }, 60_000);

  it('exits 1 on a wrong PIN, without printing it, and runs no other probe', async () => {
    const wrong = `${token.userPin}00`;
    writeFileSync(join(token.dir, 'conf', 'wrongpin'), wrong, { mode: 0o600 });
    const file = writeTestConfig(token, { hsm: { pin: { file: 'wrongpin' } } }, 'wrongpin.yaml');
    const r = await runXks(['hsm', 'check', '--json'], { token, configFile: file });
    expect(r.code).toBe(1);
    const json = JSON.parse(r.stdout) as CheckReport;
    expect(json.rows.map((x) => x.name)).toEqual(['library', 'token', 'login']);
    expect(r.stderr.trim()).toBe('xks: the token cannot serve: it refused the configured user PIN (CKR_PIN_INCORRECT)');
    expect(r.stdout + r.stderr).not.toContain(wrong);
  }, 60_000);

  // openCryptoki's soft token has no CKM_AES_GCM: here the same token seen through our emulator with the mechanism
  // hidden (not listed, C_EncryptInit refused), which forwards to SoftHSM.
  it.runIf(TOKEN_KIND === 'softhsm')('on a token without CKM_AES_GCM: exit 1, says so, and goes on with the other probes', async () => {
    buildEmulator();
    const file = writeTestConfig(token, { hsm: { module: EMULATOR, libraryParameters: `vendor=none hide=${P.CKM_AES_GCM}` } }, 'no-gcm.yaml');
    const r = await runXks(['hsm', 'check', '--json'], { token, configFile: file });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('xks: the token cannot serve: it does not offer CKM_AES_GCM');
    const json = JSON.parse(r.stdout) as CheckReport;
    expect(json.canServe).toBe(false);
    expect(json.rows.find((x) => x.name === 'aes-gcm')).toMatchObject({ status: 'fail', needed: 'required' });
    for (const name of ['aes-keygen', 'objects', 'hmac-sha256', 'rsa-oaep-sha1']) expect(json.rows.find((x) => x.name === name)?.status).toBe('ok');
    // And the proxy refuses to start on it, naming the mechanism.
    const serve = await runXks(['keys', 'list'], { token, configFile: file });
    expect(serve.code).not.toBe(0);
    expect(serve.stderr).toMatch(/CKM_AES_GCM/);
  }, 60_000);
});

describe('xks serve', () => {
  it('logs the check once at start-up, before serving', async () => {
    const file = writeTestConfig(token, {}, 'serve.yaml');
    const serve = spawnServe(token, file, ['--workers', '1']);
    try {
      await serve.waitFor((out) => out.includes('xks proxy listening'), 30_000, 'the proxy to listen');
      const lines = serve.logLines();
      const checks = lines.filter((l) => l.msg === 'hsm check');
      expect(checks).toHaveLength(1);
      expect(checks[0]).toMatchObject({ token: token.label, canServe: true, probes: expect.objectContaining({ 'aes-gcm': 'ok', login: 'ok' }) });
      const findings = lines.filter((l) => l.msg === 'hsm check finding');
      const notOk = Object.entries(checks[0]!.probes as Record<string, string>).filter(([, s]) => s === 'warn' || s === 'fail');
      expect(findings.map((f) => f.probe).sort()).toEqual(notOk.map(([n]) => n).sort());
      // The check finalised the library; the HsmConnection initialised it again and works.
      expect(lines.find((l) => l.msg === 'health check')).toMatchObject({ status: 'ACTIVE' });
      expect(lines.findIndex((l) => l.msg === 'hsm check')).toBeLessThan(lines.findIndex((l) => l.msg === 'health check'));
    } finally {
      serve.child.kill('SIGTERM');
      await serve.exited;
    }
  }, 60_000);
});
