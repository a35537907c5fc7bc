// The `xks` command line (node dist/cli/main.js) on a real token: creating, listing and describing keys, the HSM
// status, configuration errors; then a key made outside the proxy (pkcs11-tool) and keys made by the CLI, served over XKS.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SECRET, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, useCliOnToken } from '../helpers/proxy-on-token.js';
import { type CliRun } from '../helpers/built-cli.js';
import { makeForeignAesKey, tokenSecrets, evidence } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';

const cli = useCliOnToken('cli-token');
const xks = cli.xks;

/** Neither stream of a run may contain a PIN or a secret. */
function expectNoSecrets(r: CliRun): void {
  for (const s of [...tokenSecrets(cli.token), SECRET]) {
    expect(r.stdout).not.toContain(s);
    expect(r.stderr).not.toContain(s);
  }
}

describe('xks keys', () => {
  it('creates a key', async () => {
    const r = await xks(['keys', 'create', 'k1']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('created k1: Enabled, AES_256, ENCRYPT,DECRYPT, version 1');
    expectNoSecrets(r);
  });

  it('refuses to create the same key again, with a clear message and exit 1', async () => {
    const r = await xks(['keys', 'create', 'k1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/k1.*already exists/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(r.stdout).toBe('');
  });

  it('--if-missing succeeds without change on an existing key', async () => {
    const r = await xks(['keys', 'create', '--if-missing', 'k1']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/k1 exists/);
  });

  it('creates an encrypt-only key with --usage encrypt', async () => {
    const r = await xks(['keys', 'create', '--usage', 'encrypt', 'e1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('created e1: Enabled, AES_256, ENCRYPT, version 1');
  });

  it.each([
    [['keys', 'create', 'bad id!'], /not a valid external key id/],
    [['keys', 'create', '--usage', 'sign', 'k2'], /--usage/],
    [['keys', 'create', 'xks-proxy-health-check'], /reserved/],
    [['keys', 'describe', 'nope'], /no key "nope"/],
  ])('xks %j fails with exit 1 and says why', async (args, message) => {
    const r = await xks(args);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
  });

  it('lists the keys as JSON', async () => {
    const r = await xks(['keys', 'list', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const list = JSON.parse(r.stdout) as { KeyId: string; KeyUsage: string[]; KeySpec: string; CurrentVersion: number }[];
    const byId = Object.fromEntries(list.map((k) => [k.KeyId, k]));
    expect(Object.keys(byId).sort()).toEqual(['e1', 'k1']);
    expect(byId.k1).toMatchObject({ KeySpec: 'AES_256', KeyUsage: ['ENCRYPT', 'DECRYPT'], CurrentVersion: 1 });
    expect(byId.e1).toMatchObject({ KeySpec: 'AES_256', KeyUsage: ['ENCRYPT'], CurrentVersion: 1 });
  });

  it('describes k1 as generated in the HSM, sensitive and never extractable', async () => {
    const r = await xks(['keys', 'describe', 'k1']);
    expect(r.code, r.stderr).toBe(0);
    const d = JSON.parse(r.stdout);
    expect(d).toMatchObject({ KeyId: 'k1', KeySpec: 'AES_256', KeyUsage: ['ENCRYPT', 'DECRYPT'], KeyState: 'Enabled', Origin: 'HSM', CurrentVersion: 1 });
    expect(d.Versions).toEqual([
      {
        Version: 1,
        CreationDate: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        Encrypt: true,
        Decrypt: true,
        Local: evidence(true),
        NeverExtractable: evidence(true),
        AlwaysSensitive: true,
        Sensitive: true,
        Extractable: false,
      },
    ]);
  });
});

describe('xks hsm status', () => {
  it('shows the token, a working login and the AES-GCM capabilities as JSON', async () => {
    const r = await xks(['hsm', 'status', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.token).toMatchObject({ label: 'cli-token', serial: cli.token.serial });
    expect(s.loggedIn).toBe(true);
    expect(s.capabilities).toMatchObject({ aesGcm: true, ivMode: 'caller-random', callMode: 'thread', sessionKeyCopies: true });
    expect(s.capabilities.mechanisms).toContain('CKM_AES_GCM');
    expectNoSecrets(r);
  });

  it('prints a readable summary without --json', async () => {
    const r = await xks(['hsm', 'status']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/token\s+cli-token/);
    expect(r.stdout).toMatch(/aes-gcm\s+yes; iv mode caller-random/);
    expectNoSecrets(r);
  });
});

describe('configuration errors', () => {
  /** A config like the good one with one change, written next to it (so its relative pin file still resolves). */
  function variant(name: string, change: (c: any) => void): string {
    const c: any = {
      hsm: { ...cli.token.hsmConfig(), pin: { file: 'pin' } },
      listeners: { http: { host: '127.0.0.1', port: 0 } },
      prefixes: [{ path: 'p', region: 'us-east-1', credentials: [{ accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS', secret: { file: 'secret1' } }] }],
    };
    change(c);
    const file = join(cli.token.dir, 'conf', name);
    writeFileSync(file, stringify(c));
    return file;
  }

  it('names the field of a lower-case access key id, exits 1, prints no PIN', async () => {
    const file = variant('lower.yaml', (c) => (c.prefixes[0].credentials[0].accessKeyId = 'between2tenand3tencharacters'));
    const r = await xks(['hsm', 'status'], { XKS_CONFIG: file });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('prefixes.0.credentials.0.accessKeyId');
    expect(r.stderr).toMatch(/A-Z and 2-7/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expectNoSecrets(r);
  });

  it('names the PIN environment variable that is not set, exits 1', async () => {
    const file = variant('nopin.yaml', (c) => (c.hsm.pin = { env: 'XKS_TEST_PIN_NOT_SET' }));
    const r = await xks(['keys', 'list'], { XKS_CONFIG: file, XKS_TEST_PIN_NOT_SET: undefined });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('hsm.pin');
    expect(r.stderr).toContain('XKS_TEST_PIN_NOT_SET');
    expectNoSecrets(r);
  });

  it('refuses a PIN written into the config itself', async () => {
    const file = variant('inline.yaml', (c) => (c.hsm.pin = cli.token.userPin));
    const r = await xks(['hsm', 'status'], { XKS_CONFIG: file });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('hsm.pin');
    expectNoSecrets(r);
  });

  it('says the HSM refused a wrong PIN, without printing either PIN', async () => {
    const wrongPin = `${cli.token.userPin}00`;
    writeFileSync(join(cli.token.dir, 'conf', 'wrongpin'), wrongPin, { mode: 0o600 });
    const file = variant('wrongpin.yaml', (c) => (c.hsm.pin = { file: 'wrongpin' }));
    const r = await xks(['hsm', 'status'], { XKS_CONFIG: file });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refused the user PIN/);
    expect(r.stderr).not.toContain(wrongPin);
    expectNoSecrets(r);
  });

  it('says how to give a config when there is none', async () => {
    const r = await xks(['keys', 'list'], { XKS_CONFIG: undefined });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--config FILE or set XKS_CONFIG/);
  });
});

describe('keys made outside the proxy, and by the CLI, served over XKS', () => {
  let t: TestProxy;

  beforeAll(async () => {
    // An AES-256 key as pkcs11-tool --keygen --sensitive makes it (the README's example), with none of the proxy's
    // templates or CKA_ID version tags. Without --sensitive it is refused (test/keys/exposed-keys.test.ts).
    makeForeignAesKey(cli.token, 'adopted1', { sensitive: true });
    // (pkcs11-tool 0.23 sets both CKA_ENCRYPT and CKA_DECRYPT for secret keys whatever --usage-* says: no restricted variant.)
    t = await startProxyOnToken({ token: cli.token, cleanupToken: false });
  }, 60_000);
  afterAll(async () => t?.stop());

  it('the CLI describes the adopted key as version 1, generated in the HSM', async () => {
    const r = await xks(['keys', 'describe', 'adopted1']);
    expect(r.code, r.stderr).toBe(0);
    const d = JSON.parse(r.stdout);
    expect(d).toMatchObject({ KeyId: 'adopted1', KeyUsage: ['ENCRYPT', 'DECRYPT'], Origin: 'ADOPTED', KeyState: 'Enabled', CurrentVersion: 1 });
    expect(d.Versions[0]).toMatchObject({ Version: 1, Local: evidence(true), NeverExtractable: evidence(true), Extractable: false });
  });

  it('describes two objects claiming one version as a duplicate, and refuses to use either', async () => {
    for (let i = 0; i < 2; i++) {
      makeForeignAesKey(cli.token, 'twice', { sensitive: true });
    }
    const r = await xks(['keys', 'describe', 'twice']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ KeyId: 'twice', CurrentVersion: 1, DuplicateVersions: [1] });
    const once = JSON.parse((await xks(['keys', 'describe', 'adopted1'])).stdout);
    expect(once.DuplicateVersions).toBeUndefined();
    // Which object a process finds first differs between processes: using either could split replicas.
    const c = xksClient(t.httpUrl);
    const enc = await c.encrypt('twice', Buffer.from('either object'));
    expect(enc.status, enc.text).toBe(400);
    expect(enc.json.errorName).toBe('InvalidStateException');
  });

  it('serves GetKeyMetadata and an encrypt/decrypt round trip on the adopted key', async () => {
    const c = xksClient(t.httpUrl);
    const md = await c.metadata('adopted1');
    expect(md.status, md.text).toBe(200);
    expect(md.json).toEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' });
    const pt = randomBytes(100);
    const aad = Buffer.from('adopted');
    const enc = await c.encrypt('adopted1', pt, { additionalAuthenticatedData: aad.toString('base64') });
    expect(enc.status, enc.text).toBe(200);
    const dec = await c.decrypt('adopted1', decryptFields(enc.json, aad));
    expect(dec.status, dec.text).toBe(200);
    expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(pt);
  });

  it('serves the keys the CLI created, with their usage', async () => {
    const c = xksClient(t.httpUrl);
    expect((await c.metadata('e1')).json.keyUsage).toEqual(['ENCRYPT']);
    const enc = await c.encrypt('k1', Buffer.from('made by the CLI'));
    expect(enc.status).toBe(200);
    expect(Buffer.from((await c.decrypt('k1', decryptFields(enc.json))).json.plaintext, 'base64').toString()).toBe('made by the CLI');
    expect((await c.decrypt('e1', decryptFields((await c.encrypt('e1', Buffer.from('x'))).json))).json.errorName).toBe('InvalidKeyUsageException');
  });

  it('serves a key that `xks keys create` makes while the server runs', async () => {
    const c = xksClient(t.httpUrl);
    expect((await c.metadata('live1')).json.errorName).toBe('KeyNotFoundException');
    const r = await xks(['keys', 'create', 'live1']);
    expect(r.code, r.stderr).toBe(0);
    // "No such key" is remembered for at most a second; then the token is read again.
    let md = await c.metadata('live1');
    for (let i = 0; i < 30 && md.status !== 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      md = await c.metadata('live1');
    }
    expect(md.status, md.text).toBe(200);
    const enc = await c.encrypt('live1', Buffer.from('live'));
    expect((await c.decrypt('live1', decryptFields(enc.json))).json.plaintext).toBe(Buffer.from('live').toString('base64'));
  });

  it('lists the health-check key the server created, marked as such', async () => {
    const r = await xks(['keys', 'list']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/xks-proxy-health-check\s+Enabled\s+ENCRYPT,DECRYPT\s+1\s+ADOPTED\s+off\s+no\s+health check/);
    expect(r.stdout).toMatch(/adopted1/);
  });
});
