// `xks hsm check` on NSS softoken, whatever XKS_TEST_TOKEN says: a database made by hand with certutil, as an operator
// would, and the built CLI in a child process (this process never loads NSS). NSS is where a token departs from
// SoftHSM in the ways the check exists to find: a second key with the same CKA_CLASS and CKA_ID is the same object,
// overwritten; CKA_LOCAL is false for generated keys; RFC 5649 is 0x210B; token keys refuse CKA_ALLOWED_MECHANISMS.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckReport, CheckRow } from '../../src/hsm/check.js';
import { loadProfile, resolveModulePath } from '../../src/hsm/profile.js';
import { ensureBuilt, ROOT, runXks } from '../helpers/built-cli.js';
import { ACCESS_KEY_ID, PREFIX, REGION, SECRET } from '../helpers/proxy.js';

let dir: string;
let pin: string;
let configFile: string;
let params: string;

const xks = (args: string[]) => runXks(args, { env: { XKS_TEST_SECRET: SECRET } });

function row(r: CheckReport, name: string): CheckRow {
  const found = r.rows.find((x) => x.name === name);
  if (!found) throw new Error(`no row ${name}`);
  return found;
}

beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), 'xks-check-nss-'));
  const db = join(dir, 'db');
  mkdirSync(db);
  pin = randomBytes(8).toString('hex');
  writeFileSync(join(dir, '.pin'), pin, { mode: 0o600 });
  // mkdir -p DIR && printf '%s' PIN > DIR/.pin && certutil -N -d sql:DIR -f DIR/.pin
  execFileSync('certutil', ['-N', '-d', `sql:${db}`, '-f', join(dir, '.pin')], { stdio: 'pipe' });
  configFile = join(dir, 'config.yaml');
  params = `configdir='sql:${db}' certPrefix='' keyPrefix='' secmod='secmod.db' flags= dbTokenDescription='xks-test'`;
  writeFileSync(
    configFile,
    stringify({
      hsm: {
        profile: 'nss',
        tokenLabel: 'xks-test',
        libraryParameters: params,
        pin: { file: '.pin' },
      },
      listeners: { http: { host: '127.0.0.1', port: 0 } },
      prefixes: [{ path: PREFIX, region: REGION, credentials: [{ accessKeyId: ACCESS_KEY_ID, secret: { env: 'XKS_TEST_SECRET' } }] }],
    }),
  );
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('xks hsm check on NSS softoken', () => {
  it('exits 0 and reports what NSS does differently', async () => {
    const r = await xks(['hsm', 'check', '--config', configFile, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as CheckReport;
    expect(report.canServe).toBe(true);
    expect(report.token).toMatchObject({ label: 'xks-test', manufacturer: 'Mozilla Foundation' });
    for (const x of report.rows.filter((x) => x.needed === 'required')) expect(x.status, `${x.name}: ${x.result}`).toBe('ok');

    const dup = row(report, 'duplicate-id');
    expect(dup.status).toBe('warn');
    expect(dup.result).toMatch(/^the same object is returned and overwritten: one handle for both, 1 found by that CKA_ID, the first's label became/);

    const local = row(report, 'cka-local');
    expect(local.result).toBe('CKA_LOCAL false on a generated key');
    // The nss profile already says CKA_LOCAL is no evidence there: noted, not warned.
    expect(local.status).toBe('info');

    expect(row(report, 'aes-kwp').result).toMatch(/0x210A: not RFC 5649 \(48 bytes .*PKCS#7.*\); 0x210B: RFC 5649/);
    expect(row(report, 'allowed-mechanisms').result).toMatch(/a token key with it is refused \(CKR_GENERAL_ERROR\); a session key takes it/);
    expect(row(report, 'aes-gcm-bad-tag').result).toBe('refused with CKR_ENCRYPTED_DATA_INVALID (a standard code)');
    expect(row(report, 'rsa-oaep-sha256').status).toBe('ok');
    expect(r.stdout).not.toContain(pin);
  }, 60_000);

  it('prints the table with the verdict', async () => {
    const r = await xks(['hsm', 'check', '--config', configFile]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^duplicate-id +WARN +optional +the same object is returned and overwritten/m);
    expect(r.stdout).toMatch(/^cka-local +info +optional +CKA_LOCAL false on a generated key/m);
    expect(r.stdout).toContain('verdict: the proxy can serve on this token');
  }, 60_000);

  it('leaves no token object in the database', () => {
    // Counted in a child process: this one never loads NSS.
    const script = `
const P = require('pkcs11js');
const mod = new P.PKCS11();
mod.load(process.env.XKS_NSS_MODULE);
mod.C_Initialize({ flags: 2, libraryParameters: process.env.XKS_NSS_PARAMS });
const slot = mod.C_GetSlotList(true).find((s) => mod.C_GetTokenInfo(s).label.trim() === 'xks-test');
const s = mod.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
mod.C_Login(s, P.CKU_USER, process.env.XKS_NSS_PIN);
mod.C_FindObjectsInit(s, [{ type: P.CKA_TOKEN, value: true }]);
process.stdout.write(String(mod.C_FindObjects(s, 1000).length));
mod.C_FindObjectsFinal(s);
mod.C_Finalize();`;
    const out = execFileSync(process.execPath, ['-e', script], {
      cwd: ROOT,
      env: { ...process.env, XKS_NSS_MODULE: resolveModulePath(loadProfile('nss')), XKS_NSS_PARAMS: params, XKS_NSS_PIN: pin },
      stdio: 'pipe',
    }).toString();
    expect(out).toBe('0');
  });
});
