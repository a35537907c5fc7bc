// Secret files (the PIN, SigV4 and admin secrets, the TLS key) open to other users are refused at load with a named
// error (issue 14, finding 17), unless `secretFilePermissions: warn` relaxes it to a warning; group access is accepted
// only for this process's own group (a service group, Kubernetes' fsGroup), and symlinks are followed (a Kubernetes
// Secret volume is symlinks to files with the volume's defaultMode).
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/load.js';

const sample = readFileSync(new URL('../../config.sample.yaml', import.meta.url), 'utf8');
const PIN = 'pin-value-1234';
const SIGV4 = 'PleaseReplaceThisWithSomeSecretOfLength43To64';
const ADMIN = 'an-admin-secret-of-more-than-32-characters!';

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A config whose PIN, SigV4 secret, admin secret and TLS key are files of `mode`, with secretFilePermissions `policy`. */
function setup(mode: number, policy: 'refuse' | 'warn' = 'refuse') {
  const dir = mkdtempSync(join(tmpdir(), 'xks-secret-files-'));
  dirs.push(dir);
  const files = { pin: PIN, sigv4: SIGV4, admin: ADMIN, 'tls.key': '-----BEGIN PRIVATE KEY-----\n' };
  for (const [name, content] of Object.entries(files)) {
    writeFileSync(join(dir, name), content);
    chmodSync(join(dir, name), mode);
  }
  const text =
    sample
      .replace('pin: { env: XKS_HSM_PIN }', 'pin: { file: pin }')
      .replace('secret: { env: XKS_SIGV4_SECRET }', 'secret: { file: sigv4 }')
      .replace('keyFile: tls/key.pem', 'keyFile: tls.key')
      .replace('secretFilePermissions: refuse', `secretFilePermissions: ${policy}`) +
    `\nadmin:\n  listener: { host: 127.0.0.1, port: 9090 }\n  credentials:\n    - accessKeyId: AKIAXKSADMIN00000001\n      secret: { file: admin }\n`;
  const file = join(dir, 'config.yaml');
  writeFileSync(file, text);
  return { dir, file };
}

function refusal(file: string): ConfigError {
  try {
    loadConfig(file);
  } catch (e) {
    return e as ConfigError;
  }
  throw new Error('the configuration loaded');
}

describe('secret files', () => {
  it('loads secret files readable by their owner only (0600, 0400)', () => {
    for (const mode of [0o600, 0o400]) {
      const { file } = setup(mode);
      const loaded = loadConfig(file);
      expect(loaded.pin).toBe(PIN);
      expect(loaded.warnings).toEqual([]);
    }
  });

  it('refuses a secret file readable by others, naming the setting, the file and its mode, never its content', () => {
    const { dir, file } = setup(0o600);
    chmodSync(join(dir, 'pin'), 0o644);
    const e = refusal(file);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.code).toBe('SecretFileExposed');
    expect(e.message).toContain(`hsm.pin: ${join(dir, 'pin')}`);
    expect(e.message).toContain('0644');
    expect(e.message).toContain('secretFilePermissions');
    expect(e.message).not.toContain(PIN);
  });

  it.each([
    ['sigv4', 'prefixes.0.credentials.0.secret'],
    ['admin', 'admin.credentials.0.secret'],
    ['tls.key', 'listeners.https.keyFile'],
  ])('refuses %s readable by others (%s)', (name, field) => {
    const { dir, file } = setup(0o600);
    chmodSync(join(dir, name), 0o604);
    const e = refusal(file);
    expect(e.code).toBe('SecretFileExposed');
    expect(e.message).toContain(field);
    for (const secret of [PIN, SIGV4, ADMIN]) expect(e.message).not.toContain(secret);
  });

  it('refuses group access unless the group is this process\'s own', () => {
    const { dir, file } = setup(0o600);
    chmodSync(join(dir, 'pin'), 0o640);
    // Files made by this process belong to its group: a 0440 / 0640 file of the service's own group is its to read.
    expect(loadConfig(file).pin).toBe(PIN);
    // The same mode for another group is refused: as root, the file is given to another group; otherwise a link to
    // /etc/shadow (group shadow, group-readable on Debian: only its mode is read, never its content).
    if (process.getuid!() === 0) {
      chownSync(join(dir, 'pin'), 0, process.getegid!() + 4242);
    } else {
      const shadow = statSync('/etc/shadow', { throwIfNoEntry: false });
      if (!shadow || shadow.gid === process.getegid!() || (shadow.mode & 0o040) === 0) return;
      rmSync(join(dir, 'pin'));
      symlinkSync('/etc/shadow', join(dir, 'pin'));
    }
    const e = refusal(file);
    expect(e.code).toBe('SecretFileExposed');
    expect(e.message).toMatch(/group/);
    expect(e.message).not.toContain(PIN);
  });

  it('follows symlinks: a link to an exposed file is refused, a link to a private one loads', () => {
    const { dir, file } = setup(0o600);
    writeFileSync(join(dir, 'real-pin'), PIN);
    chmodSync(join(dir, 'real-pin'), 0o644);
    rmSync(join(dir, 'pin'));
    symlinkSync(join(dir, 'real-pin'), join(dir, 'pin'));
    expect(refusal(file).code).toBe('SecretFileExposed');
    chmodSync(join(dir, 'real-pin'), 0o400);
    expect(loadConfig(file).pin).toBe(PIN);
  });

  it('secretFilePermissions: warn loads the file and says why in a warning', () => {
    const { dir, file } = setup(0o600, 'warn');
    chmodSync(join(dir, 'sigv4'), 0o644);
    const loaded = loadConfig(file);
    expect(loaded.prefixes[0]!.credentials.get('BETWEEN2TENAND3TENCHARACTERS')).toBe(SIGV4);
    expect(loaded.warnings).toHaveLength(1);
    expect(loaded.warnings[0]).toContain('prefixes.0.credentials.0.secret');
    expect(loaded.warnings[0]).toContain('0644');
    expect(loaded.warnings[0]).not.toContain(SIGV4);
  });
});
