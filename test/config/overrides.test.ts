// A config file's overrides file (`overrides: local.yaml`, what scripts/dev.sh keeps across its runs), a config for a
// CLI-only host (no listener, no key store), and which changes a reload leaves for a restart. Files only: no token.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, loadFile, mergeSettings, parseConfig, servingIssues } from '../../src/config/load.js';
import { changesNeedingRestart } from '../../src/config/reload-scope.js';

const dir = mkdtempSync(join(tmpdir(), 'xks-overrides-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SIGV4 = 'PleaseReplaceThisWithSomeSecretOfLength43To64';
writeFileSync(join(dir, 'pin'), 'not-a-real-pin-1234', { mode: 0o600 });
writeFileSync(join(dir, 'sigv4'), SIGV4, { mode: 0o600 });

const base = {
  hsm: { profile: 'softhsm2', tokenLabel: 'xks-demo', pin: { file: 'pin' } },
  listeners: { http: { host: '127.0.0.1', port: 8080 }, ops: { host: '127.0.0.1', port: 9091 } },
  prefixes: [{ path: 'p', region: 'us-east-1', credentials: [{ accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS', secret: { file: 'sigv4' } }] }],
  log: { level: 'info' },
};

function write(name: string, value: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof value === 'string' ? value : stringify(value));
  return file;
}

describe('an overrides file', () => {
  it('is merged over the config: mappings key by key, lists and values replaced, null removes', () => {
    write('local.yaml', {
      audit: { dir: 'audit', checkpointSeconds: 10 },
      log: { level: 'debug' },
      listeners: { ops: null },
      prefixes: [{ path: 'q', region: 'eu-west-1', credentials: [{ accessKeyId: 'ANOTHERCREDENTIAL234567ABC', secret: { file: 'sigv4' } }] }],
    });
    const file = write('config.yaml', { ...base, overrides: 'local.yaml' });
    const loaded = loadConfig(file);
    expect(loaded.files).toEqual([file, join(dir, 'local.yaml')]);
    expect(loaded.config.audit).toMatchObject({ dir: join(dir, 'audit'), checkpointSeconds: 10 });
    expect(loaded.config.log.level).toBe('debug');
    expect(loaded.config.listeners.http).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(loaded.config.listeners.ops).toBeUndefined();
    expect(loaded.prefixes.map((p) => p.path)).toEqual(['q']);
  });

  it('of comments only changes nothing', () => {
    write('empty.yaml', '# nothing yet\n');
    const loaded = loadFile(write('config-empty.yaml', { ...base, overrides: 'empty.yaml' }));
    expect(loaded.config.listeners.ops).toEqual({ host: '127.0.0.1', port: 9091 });
    expect(loaded.config.audit).toBeUndefined();
  });

  it('is validated with the config, and an error names both files', () => {
    write('bad-local.yaml', { log: { level: 'loud' } });
    const file = write('config-bad.yaml', { ...base, overrides: 'bad-local.yaml' });
    expect(() => loadFile(file)).toThrow(/config-bad\.yaml \(with its overrides .*bad-local\.yaml\) is not a valid configuration:\n  log\.level/);
  });

  it('must exist, and may not name another overrides file', () => {
    expect(() => loadFile(write('config-missing.yaml', { ...base, overrides: 'nowhere.yaml' }))).toThrow(/overrides: cannot read .*nowhere\.yaml \(ENOENT\)/);
    write('chained.yaml', { overrides: 'other.yaml' });
    expect(() => loadFile(write('config-chained.yaml', { ...base, overrides: 'chained.yaml' }))).toThrow(/chained\.yaml: overrides: is not allowed in an overrides file/);
  });

  it('mergeSettings leaves both inputs as they were', () => {
    const a = { x: { y: 1, z: 2 }, l: [1, 2] };
    const b = { x: { y: 3 }, l: [3] };
    expect(mergeSettings(a, b)).toEqual({ x: { y: 3, z: 2 }, l: [3] });
    expect(a).toEqual({ x: { y: 1, z: 2 }, l: [1, 2] });
  });
});

describe('a CLI-only host', () => {
  it('may have a config without listeners and key stores; serving it is refused by name', () => {
    const c = parseConfig(stringify({ hsm: base.hsm }), 'cli-only.yaml');
    expect(c.prefixes).toEqual([]);
    expect(c.listeners.http).toBeUndefined();
    expect(servingIssues(c)).toEqual([
      { path: 'listeners', message: 'needs an http or https listener to serve' },
      { path: 'prefixes', message: 'needs at least one key store prefix to serve' },
    ]);
    expect(servingIssues(parseConfig(stringify(base), 'full.yaml'))).toEqual([]);
  });

  it('loadFile reads the PIN only: no SigV4 or admin secret', () => {
    const file = write('cli-admin.yaml', {
      ...base,
      prefixes: [{ ...base.prefixes[0], credentials: [{ accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS', secret: { env: 'XKS_TEST_UNSET_SIGV4' } }] }],
      admin: { listener: { host: '127.0.0.1', port: 9090 }, credentials: [{ accessKeyId: 'XKSTESTADMIN00000001', secret: { env: 'XKS_TEST_UNSET_ADMIN' } }] },
    });
    delete process.env.XKS_TEST_UNSET_SIGV4;
    delete process.env.XKS_TEST_UNSET_ADMIN;
    expect(loadFile(file).pin).toBe('not-a-real-pin-1234');
    expect(loadFile(file, { pin: false }).pin).toBe('');
    // Serving needs them all.
    expect(() => loadConfig(file)).toThrow(/prefixes\.0\.credentials\.0\.secret: environment variable XKS_TEST_UNSET_SIGV4 is not set/);
  });
});

describe('a reload', () => {
  const running = parseConfig(stringify({ ...base, audit: { dir: 'a' } }), 'r.yaml');
  const next = (change: Record<string, unknown>) => parseConfig(stringify({ ...base, audit: { dir: 'a' }, ...change }), 'n.yaml');

  it('applies key stores without a word', () => {
    expect(changesNeedingRestart(running, next({ prefixes: [{ ...base.prefixes[0], keys: ['foo'] }] }))).toEqual([]);
  });

  it('names every section it leaves for a restart, with the fields that changed', () => {
    const changed = next({
      audit: { dir: 'a', checkpointSeconds: 10 },
      listeners: { http: { host: '127.0.0.1', port: 8081 } },
      hsm: { ...base.hsm, sessionPoolSize: 4 },
      log: { level: 'debug' },
    });
    expect(changesNeedingRestart(running, changed)).toEqual([
      { section: 'hsm', fields: ['hsm.sessionPoolSize'] },
      { section: 'listeners', fields: ['listeners.http', 'listeners.ops'] },
      { section: 'audit', fields: ['audit.checkpointSeconds'] },
      { section: 'log', fields: ['log.level'] },
    ]);
    const withoutAudit = parseConfig(stringify(base), 'x.yaml');
    expect(changesNeedingRestart(withoutAudit, running)).toEqual([{ section: 'audit', fields: ['audit'] }]);
  });
});
