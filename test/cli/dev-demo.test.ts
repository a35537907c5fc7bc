// The demo as scripts/dev.sh makes it (its steps after setup, on a directory and ports of the test's own, for the token
// kind under test): scripts/dev-config.sh writes the state and a config with everything on, the demo's keys are made,
// `xks serve` runs, and every "Try" line scripts/dev-info.sh prints is run as printed (a signed health call, an
// encrypt | decrypt, a metrics scrape, a signed admin call, an audit verify, a config check). Then the user's settings:
// an `audit:` change in local.yaml is reloaded with a warning that it waits for a restart, and survives the next run
// of dev-config.sh.
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadFile } from '../../src/config/load.js';
import { ensureBuilt, MAIN, ROOT, runProcess, startXks, type CliProcess } from '../helpers/built-cli.js';
import { freePort } from '../helpers/serve-process.js';
import { TOKEN_KIND } from '../helpers/test-token.js';

let dir: string;
let ports: Record<string, string>;
let env: NodeJS.ProcessEnv;
let serve: CliProcess;
const out = () => serve.output();

const sh = (script: string, extraEnv: Record<string, string> = {}) => runProcess('bash', ['-c', script], { cwd: tmpdir(), env: { ...env, ...extraEnv } });

const devConfig = () => sh(`bash ${ROOT}/scripts/dev-config.sh ${dir} ${TOKEN_KIND}`);

async function waitFor(pred: () => boolean, what: string, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}:\n${out().slice(-3000)}`);
    if (serve.child.exitCode !== null) throw new Error(`xks serve exited while waiting for ${what}:\n${out().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The "Try" lines dev-info.sh prints: the env and function lines first, then one command each. */
function tryLines(info: string): string[] {
  const block = info.split('\nTry, in another shell, from any directory:\n')[1]!.split('\nStop with Ctrl-C.')[0]!;
  return block.split('\n').map((l) => l.trim()).filter(Boolean);
}

beforeAll(async () => {
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), `xks-dev-${TOKEN_KIND}-`));
  ports = {
    XKS_HTTP_PORT: String(await freePort()),
    XKS_HTTPS_PORT: String(await freePort()),
    XKS_OPS_PORT: String(await freePort()),
    XKS_ADMIN_PORT: String(await freePort()),
  };
  env = { ...process.env, ...ports, XKS_CONFIG: join(dir, 'config.yaml'), XKS_HSM_SO_PIN: undefined };
  if (TOKEN_KIND !== 'nss') env.SOFTHSM2_CONF = join(dir, 'softhsm2.conf');
  const made = await devConfig();
  expect(made.code, made.stderr).toBe(0);
  const xks = `node ${MAIN}`;
  const setUp = await sh(
    [
      TOKEN_KIND === 'nss' ? 'true' : `XKS_HSM_SO_PIN=$(cat ${dir}/so-pin) ${xks} hsm init-token`,
      `${xks} keys create foo --usage encrypt,decrypt --if-missing`,
    ].join(' && '),
  );
  expect(setUp.code, setUp.stderr).toBe(0);
  serve = startXks(['serve', '--workers', '1'], { env });
  await waitFor(() => out().includes('xks proxy listening') && out().includes('operations listener'), 'the demo to listen');
}, 120_000);

afterAll(async () => {
  if (serve && serve.child.exitCode === null) {
    serve.child.kill('SIGTERM');
    await serve.exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('scripts/dev-config.sh', () => {
  it('keeps every secret in a file only this user can read, and turns on ops, admin and audit', () => {
    for (const f of ['user-pin', 'so-pin', 'sigv4-secret', 'admin-secret']) {
      expect((statSync(join(dir, f)).mode & 0o777).toString(8), f).toBe('600');
    }
    const { config } = loadFile(join(dir, 'config.yaml'), { pin: false });
    expect(config.listeners.ops).toEqual({ host: '127.0.0.1', port: Number(ports.XKS_OPS_PORT) });
    expect(config.admin?.listener).toEqual({ host: '127.0.0.1', port: Number(ports.XKS_ADMIN_PORT) });
    expect(config.audit?.dir).toBe(join(dir, 'audit'));
    expect(config.overrides).toBe('local.yaml');
  });
});

describe('every "Try" line of the demo, as printed', () => {
  let lines: string[];
  let prelude: string;

  beforeAll(async () => {
    const info = await sh(`bash ${ROOT}/scripts/dev-info.sh ${dir} ${TOKEN_KIND}`);
    expect(info.code, info.stderr).toBe(0);
    lines = tryLines(info.stdout);
    expect(lines[0]).toMatch(/^export XKS_CONFIG=\//);
    expect(lines[1]).toMatch(/^xks\(\) \{ node \//);
    prelude = `${lines[0]}\n${lines[1]}\n`;
    // A clean environment: the printed export line must be enough.
    env = { ...env, XKS_CONFIG: undefined, SOFTHSM2_CONF: undefined };
  });

  const run = (start: string) => {
    const line = lines.find((l) => l.startsWith(start));
    expect(line, start).toBeDefined();
    return sh(prelude + line);
  };

  it('xks call health: a signed GetHealthStatus', async () => {
    const r = await run('xks call health');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
  });

  it('xks call encrypt | xks call decrypt', async () => {
    const r = await run('xks call encrypt foo');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('hello\n');
  });

  it('xks keys list', async () => {
    const r = await run('xks keys list');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\nfoo\s+Enabled\s+ENCRYPT,DECRYPT/);
  });

  it('a metrics scrape of the operations listener', async () => {
    const r = await run('curl -s http://127.0.0.1:');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^xks_requests_total\{operation="GetHealthStatus",outcome="ok",error="",prefix="example\/uri\/path\/prefix"\} [1-9]/m);
  });

  it('a signed admin call (curl --aws-sigv4 with X-Amz-Target)', async () => {
    const r = await run('curl -s --aws-sigv4');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).KeyMetadata).toMatchObject({ KeyId: 'foo', KeyState: 'Enabled' });
  });

  it('xks audit verify: the trail of the calls above, sealed in the HSM', async () => {
    // The demo seals 5 s after a line: wait for the server's checkpoint.
    await waitFor(() => out().includes('"msg":"audit checkpoint"'), 'an audit checkpoint', 20_000);
    const r = await run('xks audit verify');
    expect([0, 2], r.stdout + r.stderr).toContain(r.code);
    expect(r.stdout).toMatch(/^OK .*audit-.*-w1\.jsonl: seq 1\.\.\d+, \d+ lines, [1-9]\d* checkpoints verified in the HSM/m);
    expect(r.stdout).toMatch(/^OK .*audit-.*-cli\.jsonl: /m);
    expect(r.stdout).not.toMatch(/^FAILED/m);
  });

  it('xks config check', async () => {
    const r = await run('xks config check');
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/^0 problem\(s\), /m);
  });
});

describe('local.yaml: the user settings the demo keeps', () => {
  it('an audit change is reloaded with a warning that it waits for a restart', async () => {
    const mark = out().length;
    appendFileSync(join(dir, 'local.yaml'), 'audit:\n  checkpointSeconds: 30\n');
    await waitFor(() => out().slice(mark).includes('"msg":"configuration reloaded"'), 'the reload', 20_000);
    const warning = out()
      .slice(mark)
      .split('\n')
      .filter((l) => l.includes('configuration change ignored until a restart'))
      .map((l) => JSON.parse(l));
    expect(warning).toEqual([expect.objectContaining({ section: 'audit', fields: ['audit.checkpointSeconds'] })]);
  });

  it('survives the next run of dev-config.sh, which rewrites config.yaml', async () => {
    const before = readFileSync(join(dir, 'local.yaml'), 'utf8');
    writeFileSync(join(dir, 'config.yaml'), '# edited by hand\n', { flag: 'a' });
    const again = await devConfig();
    expect(again.code, again.stderr).toBe(0);
    expect(readFileSync(join(dir, 'local.yaml'), 'utf8')).toBe(before);
    expect(readFileSync(join(dir, 'config.yaml'), 'utf8')).not.toContain('# edited by hand');
    expect(loadFile(join(dir, 'config.yaml'), { pin: false }).config.audit?.checkpointSeconds).toBe(30);
  });

  it('a config.yaml of an earlier checkout (no overrides file) is kept aside for the user, not dropped', async () => {
    writeFileSync(join(dir, 'config.yaml'), 'hsm: {}\naudit: { dir: mine }\n');
    const r = await devConfig();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/kept your previous .*config\.yaml as config\.yaml\.old/);
    expect(readFileSync(join(dir, 'config.yaml.old'), 'utf8')).toContain('audit: { dir: mine }');
    expect(existsSync(join(dir, 'config.yaml'))).toBe(true);
  });
});
