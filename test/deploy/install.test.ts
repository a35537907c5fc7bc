// scripts/install.sh, the production install, staged into a directory (--destdir, --skip-build: the dist/ this test run
// built): the proxy with its production dependencies only and its SBOM, the CLI wrapper, /etc/xks and /var/lib/xks
// with their modes, the systemd units with the vendor's drop-in for each service; nothing of SoftHSM or the test
// tools; and the installed CLI, with only those dependencies, works against a real token.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureBuilt, ROOT, runProcess } from '../helpers/built-cli.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';

let dest: string;
let out: string;
const PREFIX = '/opt/xks-proxy';

beforeAll(() => {
  ensureBuilt();
  dest = mkdtempSync(join(tmpdir(), 'xks-install-'));
  out = execFileSync('bash', ['scripts/install.sh', '--destdir', dest, '--skip-build', '--vendor', 'cloudhsm'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
});

afterAll(() => rmSync(dest, { recursive: true, force: true }));

const mode = (p: string) => (statSync(join(dest, p)).mode & 0o777).toString(8);

it('installs the built proxy, its SBOM and a CLI wrapper that defaults to /etc/xks/config.yaml', () => {
  expect(out).toMatch(/installed in .*\/opt\/xks-proxy \(production dependencies only\)/);
  for (const f of ['dist/cli/main.js', 'hsm/cloudhsm.yaml', 'package.json', 'config.sample.yaml', 'sbom.cdx.json']) {
    expect(existsSync(join(dest, PREFIX, f)), f).toBe(true);
  }
  const wrapper = readFileSync(join(dest, 'usr/local/bin/xks'), 'utf8');
  expect(wrapper).toContain(`exec node ${PREFIX}/dist/cli/main.js "$@"`);
  expect(wrapper).toContain('XKS_CONFIG="${XKS_CONFIG:-/etc/xks/config.yaml}"');
  expect(mode('usr/local/bin/xks')).toBe('755');
});

it('brings the production dependencies only: what the SBOM lists, no dev tool, pkcs11js built', () => {
  const sbom = JSON.parse(readFileSync(join(dest, PREFIX, 'sbom.cdx.json'), 'utf8')) as { components: { name: string }[] };
  const installed = (dir: string): string[] =>
    readdirSync(dir).flatMap((n) => (n.startsWith('@') ? readdirSync(join(dir, n)).map((m) => `${n}/${m}`) : n.startsWith('.') ? [] : [n]));
  const top = installed(join(dest, PREFIX, 'node_modules')).sort();
  const listed = [...new Set(sbom.components.map((c) => c.name))].sort();
  expect(top).toEqual(listed);
  for (const dev of ['typescript', 'vitest', '@smithy/signature-v4', 'autocannon', '@types/node']) expect(top).not.toContain(dev);
  expect(existsSync(join(dest, PREFIX, 'node_modules/pkcs11js/build/Release/pkcs11.node'))).toBe(true);
});

it('creates /etc/xks (0750) and /var/lib/xks (0700, with audit/), which a fresh host lacks', () => {
  expect(mode('etc/xks')).toBe('750');
  expect(mode('var/lib/xks')).toBe('700');
  expect(mode('var/lib/xks/audit')).toBe('700');
});

it('installs the units, and the vendor drop-in for each of the three services', () => {
  const units = join(dest, 'etc/systemd/system');
  for (const u of ['xks-proxy.service', 'xks-keys-maintenance.service', 'xks-keys-maintenance.timer', 'xks-import-sweep.service', 'xks-import-sweep.timer']) {
    expect(existsSync(join(units, u)), u).toBe(true);
  }
  for (const svc of ['xks-proxy', 'xks-keys-maintenance', 'xks-import-sweep']) {
    expect(readdirSync(join(units, `${svc}.service.d`))).toEqual(['50-cloudhsm.conf']);
    expect(readFileSync(join(units, `${svc}.service.d/50-cloudhsm.conf`), 'utf8')).toMatch(/^ReadWritePaths=\/opt\/cloudhsm\/run$/m);
  }
  // Every unit runs what the install put in place.
  for (const u of readdirSync(units).filter((f) => f.endsWith('.service'))) {
    for (const m of readFileSync(join(units, u), 'utf8').matchAll(/^ExecStart=\/usr\/bin\/env node (\S+)/gm)) expect(m[1]).toBe(`${PREFIX}/dist/cli/main.js`);
  }
});

it('a second run with another vendor replaces the drop-ins, and installs nothing of SoftHSM or the test tools', () => {
  execFileSync('bash', ['scripts/install.sh', '--destdir', dest, '--skip-build', '--vendor', 'nshield'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  expect(readdirSync(join(dest, 'etc/systemd/system/xks-proxy.service.d'))).toEqual(['50-nshield.conf']);
  const script = readFileSync(join(ROOT, 'scripts/install.sh'), 'utf8');
  const apt = [...script.matchAll(/need_apt\+=\((\S+)\)/g)].map((m) => m[1]).sort();
  expect(apt).toEqual(['g++', 'make', 'python3']);
  expect(script).not.toMatch(/softhsm2|libnss3-tools|opensc|prometheus|build-emulator/);
  expect(existsSync(join(dest, PREFIX, 'softhsm-config'))).toBe(false);
  expect(existsSync(join(dest, PREFIX, 'test'))).toBe(false);
});

it('refuses an unknown vendor', () => {
  const bad = spawnSync('bash', ['scripts/install.sh', '--destdir', dest, '--vendor', 'thales'], { cwd: ROOT, encoding: 'utf8' });
  expect(bad.status).toBe(2);
  expect(bad.stderr).toMatch(/--vendor must be luna, cloudhsm or nshield/);
});

it('the installed CLI, with only the production dependencies, works against a real token', async () => {
  const token: TestToken = createTestToken('install');
  try {
    const config = writeTestConfig(token);
    const r = await runProcess('node', [join(dest, PREFIX, 'dist/cli/main.js'), 'keys', 'list', '--json'], { cwd: dest, token, configFile: config, env: { NODE_PATH: '' } });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(expect.anything());
  } finally {
    token.cleanup();
  }
});
