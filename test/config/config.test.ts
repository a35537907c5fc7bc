// The configuration: the committed sample is valid, and a bad file gets an error naming the field.
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load.js';

const sample = readFileSync(new URL('../../config.sample.yaml', import.meta.url), 'utf8');

describe('configuration', () => {
  it('accepts the committed sample', () => {
    const c = parseConfig(sample, 'config.sample.yaml');
    expect(c.hsm.tokenLabel).toBe('xks-demo');
    expect(c.prefixes[0]!.credentials).toHaveLength(1);
  });

  it.each([
    ['accessKeyId: BETWEEN2TENAND3TENCHARACTERS', 'accessKeyId: lowercase-key-id-here-xx', 'prefixes.0.credentials.0.accessKeyId'],
    ['region: us-east-1', 'region: US EAST', 'prefixes.0.region'],
    ['pin: { env: XKS_HSM_PIN }', 'pin: "1234"', 'hsm.pin'],
    ['sessionPoolSize: 8', 'sessionPoolSize: 0', 'hsm.sessionPoolSize'],
    ['path: example/uri/path/prefix ', 'path: /leading/slash ', 'prefixes.0.path'],
    ['  level: info', '  level: loud', 'log.level'],
  ])('names the field when %s becomes %s', (from, to, field) => {
    expect(sample).toContain(from);
    expect(() => parseConfig(sample.replace(from, to), 'c.yaml')).toThrow(new RegExp(field.replace(/\./g, '\\.')));
  });

  it('refuses a PIN written in clear and unknown fields', () => {
    expect(() => parseConfig(sample.replace('tokenLabel: xks-demo', 'tokenLabel: xks-demo\n  userPin: "1234"'), 'c.yaml')).toThrow(/hsm/);
  });

  it('reads secrets from the environment and files, and says which one is missing without printing it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xks-config-'));
    const file = join(dir, 'c.yaml');
    writeFileSync(join(dir, 'secret'), 'PleaseReplaceThisWithSomeSecretOfLength43To64\n', { mode: 0o600 });
    writeFileSync(file, sample.replace('secret: { env: XKS_SIGV4_SECRET }', 'secret: { file: secret }'));
    delete process.env.XKS_HSM_PIN;
    expect(() => loadConfig(file)).toThrow(/hsm.pin: environment variable XKS_HSM_PIN is not set/);
    process.env.XKS_HSM_PIN = 'pin-value-1234';
    const loaded = loadConfig(file);
    expect(loaded.pin).toBe('pin-value-1234');
    expect(loaded.prefixes[0]!.credentials.get('BETWEEN2TENAND3TENCHARACTERS')).toBe('PleaseReplaceThisWithSomeSecretOfLength43To64');
    writeFileSync(join(dir, 'secret'), 'too-short', { mode: 0o600 });
    try {
      loadConfig(file);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as Error).message).toContain('prefixes.0.credentials.0.secret');
      expect((e as Error).message).not.toContain('too-short');
    }
  });
});
