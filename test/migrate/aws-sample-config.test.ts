// `xks migrate aws-sample` on the sample's own example settings files (test/fixtures/aws-sample, copied unchanged):
// each becomes a config this proxy's loader accepts, with the sample's listeners, TLS and mTLS, key stores and their
// allow-lists, module, IV mode and limits; the PIN and SigV4 secrets land in 0600 files and are never printed; what
// cannot be carried over is listed with what to do instead; nothing is written when the result would not load.
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { SAMPLE_SETTINGS_DIR, SAMPLE_SETTINGS_EXAMPLES } from '../helpers/aws-sample.js';
import { ensureBuilt, runXks, type CliRun } from '../helpers/built-cli.js';
import { createTestPki, type TestPki } from '../helpers/pki.js';

let dir: string;
let pki: TestPki;
beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), 'xks-migrate-'));
  pki = createTestPki();
}, 120_000);
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  pki?.cleanup();
});

const fixture = (name: string) => new URL(`${name}.toml`, SAMPLE_SETTINGS_DIR).pathname;
const mode = (file: string) => statSync(file).mode & 0o777;

/** The PINs of the example files that are long enough not to turn up by chance in a path or a date. */
const EXAMPLE_PINS = ['xks_proxy:1234567', '1q@W3e$R', 'replaceme'];

function expectNothingSecret(r: CliRun, secrets: string[]): void {
  for (const s of secrets) {
    expect(r.stdout).not.toContain(s);
    expect(r.stderr).not.toContain(s);
  }
}

describe("the sample's example settings files", () => {
  for (const name of SAMPLE_SETTINGS_EXAMPLES) {
    it(`${name}.toml converts into a config that loads`, async () => {
      const out = join(dir, `${name}.yaml`);
      const r = await runXks(['migrate', 'aws-sample', fixture(name), '--out', out, '--token-label', 'xks', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const result = JSON.parse(r.stdout);
      const loaded = loadConfig(out);
      // Every key store, with its allow-list and a credential the loader accepted.
      const sample = readFileSync(fixture(name), 'utf8');
      const prefixes = [...sample.matchAll(/^uri_path_prefix = "(.*)"$/gm)].map((m) => m[1]!.replace(/^\//, ''));
      expect(loaded.prefixes.map((p) => p.path)).toEqual(prefixes);
      expect(loaded.config.hsm.tokenLabel).toBe('xks');
      expect(loaded.config.xks.awsSampleAadFallback).toBe(true);
      // Secrets in 0600 files next to the config; none of them on stdout or stderr.
      const secretFiles = result.files.filter((f: string) => f !== out);
      expect(secretFiles.length).toBe(1 + prefixes.length);
      for (const f of secretFiles) expect(mode(f), f).toBe(0o600);
      expectNothingSecret(r, [...EXAMPLE_PINS, ...secretFiles.map((f: string) => readFileSync(f, 'utf8'))]);
      // What cannot be carried over is named, with what to do instead.
      const notes = result.notes.map((n: { setting: string }) => n.setting);
      expect(notes).toContain('server.tcp_keepalive');
      if (/^is_file_writer_enabled = true/m.test(sample)) expect(notes).toContain('tracing (file writer, rotation)');
    });
  }

  it('carries over listeners, the profile, the IV mode and the module as each example has them', async () => {
    const config = (name: string) => loadConfig(join(dir, `${name}.yaml`)).config;
    const softhsm = config('settings_softhsmv2');
    expect(softhsm.hsm).toMatchObject({ profile: 'softhsm2', ivMode: 'caller-random', sessionPoolSize: 30 });
    expect(softhsm.hsm.module).toBeUndefined(); // the sample's paths are not on this host: the profile finds the library
    expect(softhsm.listeners.http).toEqual({ host: '0.0.0.0', port: 80 });
    expect(softhsm.listeners.ops).toBeUndefined(); // /ping was on the XKS port, and is here too
    expect(softhsm.log.level).toBe('debug');
    const cloudhsm = config('settings_cloudhsm');
    expect(cloudhsm.hsm).toMatchObject({ profile: 'cloudhsm', ivMode: 'hsm-writes-param' });
    expect(cloudhsm.listeners.https).toMatchObject({ host: '0.0.0.0', port: 443, certFile: expect.stringMatching(/tls\/server_cert\.pem$/) });
    expect(cloudhsm.listeners.https!.mtls).toBeUndefined();
    expect(cloudhsm.listeners.ops).toEqual({ host: '0.0.0.0', port: 80 }); // the sample's separate /ping port
    expect(cloudhsm.prefixes[0]!.region).toBe('us-east-2');
    expect(config('settings_luna').hsm).toMatchObject({ profile: 'luna', ivMode: 'hsm-appends' });
    expect(config('settings_nshield').hsm).toMatchObject({ profile: 'nshield', ivMode: 'hsm-writes-param' });
    // settings_docker names the library where Debian has it: it is on this host, so the config names it.
    expect(config('settings_docker').hsm.module).toBe('/usr/lib/softhsm/libsofthsm2.so');
    expect(config('settings').prefixes.map((p) => p.keys)).toEqual([['foo', 'cat', 'dog'], ['foo', 'bar']]);
  });

  it('keeps a credential KMS accepts, makes a new one for an empty one, and says which', async () => {
    const out = join(dir, 'nshield-creds.yaml');
    const r = await runXks(['migrate', 'aws-sample', fixture('settings_nshield'), '--out', out, '--token-serial', '1234abcd', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const ks = JSON.parse(r.stdout).keyStores;
    expect(ks[0]).toMatchObject({ samplePrefix: '', path: '', newCredential: true, accessKeyId: expect.stringMatching(/^[A-Z2-7]{20}$/) });
    expect(ks[1]).toMatchObject({ samplePrefix: '/example/uri/path/prefix', path: 'example/uri/path/prefix', newCredential: false, accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS' });
    expect(readFileSync(ks[1].secretFile, 'utf8')).toBe('PleaseReplaceThisWithSomeSecretOfLength43To64');
    expect(readFileSync(ks[0].secretFile, 'utf8')).toMatch(/^[A-Za-z0-9+/]{44}$/);
    const notes = JSON.parse(r.stdout).notes as { setting: string; note: string }[];
    expect(notes.find((n) => n.setting.startsWith('external_key_stores[0]'))?.note).toMatch(/new one was made.*update-custom-key-store/);
    expect(notes.find((n) => n.setting.startsWith('external_key_stores[1]'))?.note).toMatch(/placeholder published/);
    expect(loadConfig(out).config.hsm.tokenSerial).toBe('1234abcd');
  });

  it('lists the Oso policies with what to write instead', async () => {
    const r = await runXks(['migrate', 'aws-sample', fixture('settings'), '--out', join(dir, 'oso.yaml'), '--token-label', 'xks']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/security\.secondary_auth: Oso policies \(configuration\/oso\.polar\) are not carried over: write them as prefixes\[\]\.policy/);
    expect(r.stdout).toMatch(/server\.tcp_keepalive: not carried over/);
    expect(r.stdout).toMatch(/tracing \(file writer, rotation\): not carried over/);
  });
});

describe('TLS and mTLS', () => {
  it('carries over the certificate, the client CA and the subject; a key file others can read is copied to 0600', async () => {
    chmodSync(pki.server.key, 0o644);
    const text = readFileSync(fixture('settings_luna'), 'utf8')
      .replace('is_mtls_enabled = false', 'is_mtls_enabled = true')
      .replace('tls_cert_pem = "tls/server_cert.pem"', `tls_cert_pem = "${pki.server.cert}"`)
      .replace('tls_key_pem = "tls/server_key.pem"', `tls_key_pem = "${pki.server.key}"`)
      .replace('mtls_client_ca_pem = "tls/client_ca.pem"', `mtls_client_ca_pem = "${pki.caCert}"`);
    const settings = join(dir, 'mtls.toml');
    writeFileSync(settings, text);
    const out = join(dir, 'mtls.yaml');
    const r = await runXks(['migrate', 'aws-sample', settings, '--out', out, '--token-label', 'xks']);
    expect(r.code, r.stderr).toBe(0);
    const https = loadConfig(out).config.listeners.https!;
    expect(https).toMatchObject({ port: 443, certFile: pki.server.cert, keyFile: join(dir, 'mtls.tls-key.pem') });
    expect(https.mtls).toEqual({ clientCaFile: pki.caCert, allowedSubjects: ['us-east-1.alpha.cks.kms.aws.internal.amazonaws.com'] });
    expect(mode(join(dir, 'mtls.tls-key.pem'))).toBe(0o600);
    expect(readFileSync(join(dir, 'mtls.tls-key.pem'), 'utf8')).toBe(readFileSync(pki.server.key, 'utf8'));
    expect(r.stdout).toMatch(/tls\.tls_key_pem: .* is open to other users .*copied to mtls\.tls-key\.pem/);
    expect(r.stdout).not.toContain('PRIVATE KEY');
  });
});

describe('refusals', () => {
  it('writes nothing when the result would not load, and names the setting, not its value', async () => {
    const sub = mkdtempSync(join(dir, 'bad-'));
    const settings = join(sub, 'bad.toml');
    writeFileSync(settings, readFileSync(fixture('settings_docker'), 'utf8').replace('xks_key_id_set = ["foo"]', 'xks_key_id_set = ["foo", "has space"]'));
    const r = await runXks(['migrate', 'aws-sample', settings, '--out', join(sub, 'out.yaml'), '--token-label', 'xks']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/prefixes\.0\.keys\.1: must be 1 to 128 characters/);
    expect(readdirSync(sub)).toEqual(['bad.toml']);
  });

  it('does not quote the line of a TOML error (it may be the PIN)', async () => {
    const settings = join(dir, 'broken.toml');
    writeFileSync(settings, readFileSync(fixture('settings_docker'), 'utf8').replace('user_pin = "1234"', 'user_pin = "PIN-NEVER-SHOWN-7f3c'));
    const r = await runXks(['migrate', 'aws-sample', settings, '--out', join(dir, 'broken.yaml'), '--token-label', 'xks']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not valid TOML|Invalid TOML document.*line \d+, column \d+/);
    expect(r.stderr).not.toContain('PIN-NEVER-SHOWN');
    expect(existsSync(join(dir, 'broken.yaml'))).toBe(false);
  });

  it('names the setting and the file when the TLS key to copy cannot be read, and writes nothing', async () => {
    const sub = mkdtempSync(join(dir, 'unreadable-'));
    chmodSync(sub, 0o755);
    const settings = join(sub, 'unreadable.toml');
    // A directory where the key should be: open to others (0755), so it is copied, and no read of it works.
    const text = readFileSync(fixture('settings_luna'), 'utf8')
      .replace('tls_cert_pem = "tls/server_cert.pem"', `tls_cert_pem = "${pki.server.cert}"`)
      .replace('tls_key_pem = "tls/server_key.pem"', `tls_key_pem = "${sub}"`);
    writeFileSync(settings, text);
    const r = await runXks(['migrate', 'aws-sample', settings, '--out', join(sub, 'out.yaml'), '--token-label', 'xks']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`tls\\.tls_key_pem: cannot read ${sub} to copy it .*\\(EISDIR\\)`));
    expect(readdirSync(sub)).toEqual(['unreadable.toml']);
  });

  it('needs the token named, and never replaces files without --force', async () => {
    const out = join(dir, 'twice.yaml');
    const none = await runXks(['migrate', 'aws-sample', fixture('settings_docker'), '--out', out]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/exactly one of --token-label or --token-serial/);
    expect((await runXks(['migrate', 'aws-sample', fixture('settings_docker'), '--out', out, '--token-label', 'a'])).code).toBe(0);
    const again = await runXks(['migrate', 'aws-sample', fixture('settings_docker'), '--out', out, '--token-label', 'b']);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/exist: choose another --out, or pass --force/);
    expect(loadConfig(out).config.hsm.tokenLabel).toBe('a');
    const forced = await runXks(['migrate', 'aws-sample', fixture('settings_docker'), '--out', out, '--token-label', 'b', '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(loadConfig(out).config.hsm.tokenLabel).toBe('b');
    expect(mode(join(dir, 'twice.pin'))).toBe(0o600);
  });
});
