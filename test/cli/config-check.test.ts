// `xks config check` (the built CLI) on real files: a good configuration, one with a problem of every kind (each named
// on its own FAIL line, exit 1, no secret printed), a CLI-only host's, `--hsm` on a real token's keys; and `xks serve`
// refusing at start-up what the check calls a problem.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runXks, type CliRun } from '../helpers/built-cli.js';
import { createTestPki, type TestPki } from '../helpers/pki.js';
import { SECRET } from '../helpers/proxy.js';
import { createTestToken, tokenSecrets, type TestToken } from '../helpers/test-token.js';

let token: TestToken;
let pki: TestPki;
let dir: string;
const ADMIN_SECRET = 'admin-secret/only+for+tests=0123456789abcdefXYZ';

const xks = (args: string[], config: string, env: Record<string, string | undefined> = {}) => runXks(args, { token, configFile: config, env });

function expectNoSecrets(r: CliRun): void {
  for (const s of [...tokenSecrets(token), SECRET, ADMIN_SECRET]) {
    expect(r.stdout).not.toContain(s);
    expect(r.stderr).not.toContain(s);
  }
}

/** A configuration for the test token, with `change` applied, written to `name`. */
function config(name: string, change: (c: any) => void = () => {}): string {
  const c: any = {
    hsm: { ...token.hsmConfig(), pin: { file: 'pin' } },
    listeners: {
      http: { host: '127.0.0.1', port: 0 },
      https: { host: '127.0.0.1', port: 0, certFile: pki.server.cert, keyFile: pki.server.key },
      ops: { host: '127.0.0.1', port: 0 },
    },
    prefixes: [{ path: 'p', region: 'us-east-1', credentials: [{ accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS', secret: { file: 'sigv4' } }] }],
    admin: { listener: { host: '127.0.0.1', port: 0 }, credentials: [{ accessKeyId: 'XKSTESTADMIN00000001', secret: { file: 'admin' } }] },
  };
  change(c);
  const file = join(dir, name);
  writeFileSync(file, stringify(c));
  return file;
}

const lines = (r: CliRun, mark: string) => r.stdout.split('\n').filter((l) => l.startsWith(mark));

beforeAll(() => {
  ensureBuilt();
  token = createTestToken('config-check');
  pki = createTestPki();
  dir = join(token.dir, 'conf');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'pin'), token.userPin, { mode: 0o600 });
  writeFileSync(join(dir, 'sigv4'), SECRET, { mode: 0o600 });
  writeFileSync(join(dir, 'admin'), ADMIN_SECRET, { mode: 0o600 });
  writeFileSync(join(dir, 'admin-open'), ADMIN_SECRET, { mode: 0o600 });
  chmodSync(join(dir, 'admin-open'), 0o644);
}, 120_000);

afterAll(() => {
  token?.cleanup();
  pki?.cleanup();
});

describe('xks config check', () => {
  it('passes a good configuration: every secret, the certificate and its key; warns about what KMS would refuse', async () => {
    const r = await xks(['config', 'check'], config('good.yaml'));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(lines(r, 'FAIL')).toEqual([]);
    for (const what of ['hsm.pin', 'prefixes.0.credentials.0.secret', 'admin.credentials.0.secret']) {
      expect(r.stdout).toMatch(new RegExp(`^ok    ${what.replace(/\./g, '\\.')}: .* is readable by this process only$`, 'm'));
    }
    // The test CA is not a public one, and its certificates live two days.
    expect(r.stdout).toMatch(/^WARN  listeners\.https\.certFile: does not chain to a public CA Node knows .*TestRootCA/m);
    expect(r.stdout).toMatch(/^WARN  listeners\.https\.certFile: expires on \d{4}-\d\d-\d\d, in [01] days$/m);
    expect(r.stdout).toMatch(/^ok    listeners\.https\.certFile: IP Address:127\.0\.0\.1, DNS:localhost, valid until /m);
    expect(r.stdout).toMatch(/^0 problem\(s\), 2 warning\(s\) in /m);
    expectNoSecrets(r);
  });

  it('names every problem on a line of its own and exits 1, printing no secret', async () => {
    const busy: Server = await new Promise((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => resolve(s));
    });
    const busyPort = (busy.address() as { port: number }).port;
    try {
      const file = config('bad.yaml', (c) => {
        c.hsm.pin = { env: 'XKS_TEST_PIN_NOT_SET' };
        c.prefixes[0].credentials[0].secret = { file: 'no-such-secret' };
        c.admin.credentials[0].secret = { file: 'admin-open' };
        c.listeners.https.keyFile = pki.client.key; // not the certificate's key
        c.listeners.https.mtls = { clientCaFile: pki.client.cert, allowedSubjects: ['cks.kms.us-east-1.amazonaws.com'] }; // not a CA
        c.listeners.http.port = 18765;
        c.listeners.ops.port = 18765; // the same port as http
        c.admin.listener.port = busyPort; // in use: a warning (the running proxy's?)
      });
      const r = await xks(['config', 'check'], file, { XKS_TEST_PIN_NOT_SET: undefined });
      expect(r.code).toBe(1);
      const fails = lines(r, 'FAIL');
      expect(fails).toEqual([
        'FAIL  hsm.pin: environment variable XKS_TEST_PIN_NOT_SET is not set',
        `FAIL  prefixes.0.credentials.0.secret: cannot read ${join(dir, 'no-such-secret')} (ENOENT)`,
        expect.stringMatching(/^FAIL  admin\.credentials\.0\.secret: .*admin-open is open to other users \(mode 0644\)/),
        `FAIL  listeners.https.keyFile: ${pki.client.key} is not the key of the certificate in ${pki.server.cert}`,
        expect.stringMatching(/^FAIL  listeners\.https\.mtls\.clientCaFile: CN=cks\.kms\.us-east-1\.amazonaws\.com is not a CA certificate/),
        'FAIL  listeners.ops.port: 127.0.0.1:18765 is also listeners.http (127.0.0.1:18765): give each listener its own port',
      ]);
      expect(r.stdout).toContain(`WARN  admin.listener.port: 127.0.0.1:${busyPort} is in use`);
      expect(r.stdout).toMatch(/^6 problem\(s\), \d+ warning\(s\)/m);
      expectNoSecrets(r);
    } finally {
      busy.close();
    }
  });

  it('reports an expired certificate and a file that does not parse as problems', async () => {
    const expired = await xks(['config', 'check'], config('expired.yaml', (c) => {
      c.listeners.https.certFile = pki.expired.cert;
      c.listeners.https.keyFile = pki.expired.key;
    }));
    expect(expired.code).toBe(1);
    expect(lines(expired, 'FAIL')).toEqual(['FAIL  listeners.https.certFile: expired on 2020-01-02']);
    const invalid = await xks(['config', 'check'], config('invalid.yaml', (c) => {
      c.hsm.sessionPoolSize = 0;
      c.prefixes[0].region = 'US EAST';
    }));
    expect(invalid.code).toBe(1);
    expect(lines(invalid, 'FAIL')).toEqual([
      expect.stringMatching(/^FAIL  hsm\.sessionPoolSize: /),
      expect.stringMatching(/^FAIL  prefixes\.0\.region: must be an AWS region/),
    ]);
  });

  it('accepts a CLI-only host: no listener, no key store (noted: serve would refuse it)', async () => {
    const file = config('cli-only.yaml', (c) => {
      delete c.listeners;
      delete c.prefixes;
      delete c.admin;
    });
    const r = await xks(['config', 'check'], file);
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toContain('note  listeners: needs an http or https listener to serve; `xks serve` refuses this file, other commands use it');
    expect(r.stdout).toContain('note  prefixes: needs at least one key store prefix to serve');
    const serve = await xks(['serve'], file);
    expect(serve.code).toBe(1);
    expect(serve.stderr).toMatch(/cannot serve:\n  listeners: needs an http or https listener to serve\n  prefixes: needs at least one key store prefix to serve/);
  });

  it('--hsm logs in and checks every allow-listed key: present and servable, or named', async () => {
    for (const args of [['keys', 'create', 'good'], ['keys', 'create', 'off'], ['keys', 'disable', 'off'], ['keys', 'create', 'half', '--usage', 'encrypt']]) {
      const r = await xks(args, config('hsm.yaml'));
      expect(r.code, r.stderr).toBe(0);
    }
    const file = config('hsm.yaml', (c) => (c.prefixes[0].keys = ['good', 'off', 'half', 'missing']));
    const r = await xks(['config', 'check', '--hsm'], file);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`^ok    hsm: logged in to token ${token.label} `, 'm'));
    expect(r.stdout).toContain('ok    prefixes.0.keys: good: Enabled, AES_256, ENCRYPT,DECRYPT, version 1');
    expect(r.stdout).toContain('WARN  prefixes.0.keys: off: Disabled (KMS sees it DISABLED; xks keys enable off)');
    expect(r.stdout).toContain('WARN  prefixes.0.keys: half: usage ENCRYPT: KMS creates keys only over ENCRYPT and DECRYPT');
    expect(lines(r, 'FAIL')).toEqual(['FAIL  prefixes.0.keys: missing: no such key in the token']);
    expectNoSecrets(r);
  });
});

describe('xks serve at start-up', () => {
  it('refuses what config check calls a problem (an expired certificate), naming it', async () => {
    const file = config('serve-expired.yaml', (c) => {
      c.listeners.https.certFile = pki.expired.cert;
      c.listeners.https.keyFile = pki.expired.key;
    });
    const r = await xks(['serve', '--workers', '1'], file);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot serve \(`xks config check` says the same\):\n  listeners\.https\.certFile: expired on 2020-01-02/);
    expectNoSecrets(r);
  });
});
