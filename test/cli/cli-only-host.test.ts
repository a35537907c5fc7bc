// A host that only runs commands (a backup site, cron): its config has no listener and no key store, or it has them
// without their secrets (the same file as the proxy's, with only the PIN provisioned). Every command that does not
// serve works on it, reading the PIN only: key management with its audit trail, `xks audit verify`, reports.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';

let token: TestToken;
let bare: string;
let unprovisioned: string;
let auditDir: string;

function xks(config: string, args: string[]) {
  // None of the secrets the configs name are in the environment: only the PIN file exists.
  return runXks(args, { token, configFile: config, env: { XKS_TEST_SIGV4_UNSET: undefined, XKS_TEST_ADMIN_UNSET: undefined } });
}

beforeAll(() => {
  ensureBuilt();
  token = createTestToken('cli-only');
  const dir = join(token.dir, 'conf');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'pin'), token.userPin, { mode: 0o600 });
  auditDir = join(token.dir, 'audit');
  const hsm = { ...token.hsmConfig(), pin: { file: 'pin' } };
  bare = join(dir, 'bare.yaml');
  writeFileSync(bare, stringify({ hsm, audit: { dir: auditDir } }));
  unprovisioned = join(dir, 'unprovisioned.yaml');
  writeFileSync(
    unprovisioned,
    stringify({
      hsm,
      audit: { dir: auditDir },
      listeners: { http: { host: '127.0.0.1', port: 0 } },
      prefixes: [{ path: 'p', region: 'us-east-1', credentials: [{ accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS', secret: { env: 'XKS_TEST_SIGV4_UNSET' } }] }],
      admin: { listener: { host: '127.0.0.1', port: 0 }, credentials: [{ accessKeyId: 'XKSTESTADMIN00000001', secret: { env: 'XKS_TEST_ADMIN_UNSET' } }] },
    }),
  );
}, 120_000);

afterAll(() => token?.cleanup());

describe('a config without listeners or key stores', () => {
  it('manages keys, on the audit trail', async () => {
    const r = await xks(bare, ['keys', 'create', 'backup-site-key']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^created backup-site-key: Enabled/);
    const list = await xks(bare, ['keys', 'list']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/backup-site-key\s+Enabled/);
  });

  it('reports and shows the token', async () => {
    expect((await xks(bare, ['hsm', 'status'])).code).toBe(0);
    expect((await xks(bare, ['report'])).code).toBe(0);
  });
});

describe('the proxy config with only the PIN provisioned (no SigV4 or admin secret on this host)', () => {
  it('runs key commands and their audit trail', async () => {
    const r = await xks(unprovisioned, ['keys', 'rotate', 'backup-site-key']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^rotated backup-site-key: version 2 is current/);
  });

  it('verifies the audit trail without the admin secret', async () => {
    const files = readdirSync(auditDir).filter((f) => f.endsWith('.jsonl')).map((f) => join(auditDir, f));
    expect(files.length).toBeGreaterThan(0);
    const r = await xks(unprovisioned, ['audit', 'verify', ...files]);
    expect(r.stderr).toBe('');
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/^OK .*-cli\.jsonl: seq 1\.\.\d+/m);
  });

  it('does not serve: serving needs every secret, and says which one is missing', async () => {
    const r = await xks(unprovisioned, ['serve', '--workers', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/prefixes\.0\.credentials\.0\.secret: environment variable XKS_TEST_SIGV4_UNSET is not set/);
  });
});
