// The admin section of the configuration: off when absent, loopback and us-east-1 by default, errors that name the
// field, secrets read like the key stores' and never shared with them.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load.js';

const sample = readFileSync(new URL('../../config.sample.yaml', import.meta.url), 'utf8');
const XKS_SECRET = 'PleaseReplaceThisWithSomeSecretOfLength43To64';
const ADMIN_SECRET = 'an-admin-secret-of-more-than-32-characters!';

/** The sample with its commented admin block switched on. */
function withAdmin(): string {
  const lines = sample.split('\n');
  const at = lines.indexOf('# admin:');
  expect(at).toBeGreaterThan(0);
  for (let i = at; i < at + 6; i++) lines[i] = lines[i]!.slice(2);
  return lines.join('\n');
}

function write(text: string, files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'xks-admin-config-'));
  // Secret files readable by their owner only: others are refused (secretFilePermissions).
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content, { mode: 0o600 });
  const file = join(dir, 'config.yaml');
  writeFileSync(file, text);
  return file;
}

describe('admin configuration', () => {
  it('is off in the sample as committed', () => {
    expect(parseConfig(sample, 'config.sample.yaml').admin).toBeUndefined();
    process.env.XKS_HSM_PIN = 'pin-value-1234';
    process.env.XKS_SIGV4_SECRET = XKS_SECRET;
    expect(loadConfig(write(sample)).admin).toBeUndefined();
  });

  it('accepts the sample with the admin block uncommented, and defaults host and region', () => {
    const c = parseConfig(withAdmin(), 'c.yaml');
    expect(c.admin).toEqual({
      listener: { host: '127.0.0.1', port: 9090 },
      region: 'us-east-1',
      credentials: [{ accessKeyId: 'AKIAXKSADMIN00000001', secret: { env: 'XKS_ADMIN_SECRET' } }],
    });
    const minimal = parseConfig(withAdmin().replace('listener: { host: 127.0.0.1, port: 9090 }', 'listener: { port: 9090 }').replace(/^ {2}region: us-east-1.*$/m, ''), 'c.yaml');
    expect(minimal.admin!.listener.host).toBe('127.0.0.1');
    expect(minimal.admin!.region).toBe('us-east-1');
  });

  it.each([
    ['port: 9090', 'port: 70000', 'admin.listener.port'],
    ['listener: { host: 127.0.0.1, port: 9090 }', 'listener: { host: 127.0.0.1 }', 'admin.listener.port'],
    ['region: us-east-1                              #', 'region: US EAST #', 'admin.region'],
    ['accessKeyId: AKIAXKSADMIN00000001', 'accessKeyId: short', 'admin.credentials.0.accessKeyId'],
    ['accessKeyId: AKIAXKSADMIN00000001', 'accessKeyId: BETWEEN2TENAND3TENCHARACTERS', 'admin.credentials.0.accessKeyId'],
    ['secret: { env: XKS_ADMIN_SECRET }', 'secret: "an-admin-secret-written-in-clear-0123456789"', 'admin.credentials.0.secret'],
    ['  region: us-east-1                              #', '  regoin: us-east-1 #', 'admin'],
  ])('names the field when %s becomes %s', (from, to, field) => {
    const text = withAdmin();
    expect(text).toContain(from);
    expect(() => parseConfig(text.replace(from, to), 'c.yaml')).toThrow(new RegExp(`${field.replace(/\./g, '\\.')}:`));
  });

  it('refuses an admin section without credentials, or with one listed twice', () => {
    const lines = withAdmin().split('\n');
    const at = lines.findIndex((l) => l.startsWith('  credentials:'));
    const none = [...lines.slice(0, at), '  credentials: []', ...lines.slice(at + 3)].join('\n');
    expect(() => parseConfig(none, 'c.yaml')).toThrow(/admin\.credentials: needs at least one credential/);
    const twice = [...lines.slice(0, at + 3), ...lines.slice(at + 1, at + 3), ...lines.slice(at + 3)].join('\n');
    expect(() => parseConfig(twice, 'c.yaml')).toThrow(/admin\.credentials: lists the same accessKeyId twice/);
  });

  it('reads the admin secret like the key stores do, and says what is wrong without printing it', () => {
    process.env.XKS_HSM_PIN = 'pin-value-1234';
    process.env.XKS_SIGV4_SECRET = XKS_SECRET;
    const fromFile = withAdmin().replace('secret: { env: XKS_ADMIN_SECRET }', 'secret: { file: admin-secret }');

    expect(loadConfig(write(fromFile, { 'admin-secret': `${ADMIN_SECRET}\n` })).admin).toEqual({
      listener: { host: '127.0.0.1', port: 9090 },
      region: 'us-east-1',
      credentials: new Map([['AKIAXKSADMIN00000001', ADMIN_SECRET]]),
    });

    delete process.env.XKS_ADMIN_SECRET;
    expect(() => loadConfig(write(withAdmin()))).toThrow(/admin\.credentials\.0\.secret: environment variable XKS_ADMIN_SECRET is not set/);

    for (const [bad, why] of [
      ['too-short-admin-secret', /admin\.credentials\.0\.secret: must be 32 to 128 printable characters/],
      ['a secret with spaces in it that is long enough', /admin\.credentials\.0\.secret: must be 32 to 128 printable characters/],
      [XKS_SECRET, /admin\.credentials\.0\.secret: is also a key store secret/],
    ] as const) {
      try {
        loadConfig(write(fromFile, { 'admin-secret': bad }));
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        expect((e as Error).message).toMatch(why);
        expect((e as Error).message).not.toContain(bad);
      }
    }
  });
});
