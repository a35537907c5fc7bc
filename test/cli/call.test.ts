// `xks call health|metadata|encrypt|decrypt` (the built CLI) against a real proxy on a real token, over HTTP and HTTPS:
// signed with a credential of the config (its signer is checked against AWS's in sigv4-sign.test.ts; here the proxy's
// verifier accepts it), reading that credential's secret only (no PIN, no other secret), printing the proxy's answer.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runXks, type CliRun } from '../helpers/built-cli.js';
import { createTestPki, type TestPki } from '../helpers/pki.js';
import { SECOND_ACCESS_KEY_ID, SECOND_SECRET, SECRET, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { tokenSecrets } from '../helpers/test-token.js';

let t: TestProxy;
let pki: TestPki;
/** The config the CLI reads: the proxy's, with its real ports, a PIN nobody set and an admin secret nobody set. */
let cliConfig: string;

const xks = (args: string[], env: Record<string, string | undefined> = {}, input = '') =>
  runXks(args, { configFile: cliConfig, env: { XKS_TEST_SECOND_SECRET: undefined, ...env }, input });

function expectNoSecrets(r: CliRun): void {
  for (const s of [...tokenSecrets(t.token), SECRET, SECOND_SECRET]) {
    expect(r.stdout).not.toContain(s);
    expect(r.stderr).not.toContain(s);
  }
}

beforeAll(async () => {
  ensureBuilt();
  pki = createTestPki();
  t = await startProxyOnToken({
    config: {
      listeners: {
        http: { host: '127.0.0.1', port: 0 },
        https: { host: '127.0.0.1', port: 0, certFile: pki.server.cert, keyFile: pki.server.key },
      },
    },
    keys: { foo: { encrypt: true, decrypt: true }, enc_only: { encrypt: true, decrypt: false } },
  });
  const c = parse(readFileSync(t.configFile, 'utf8'));
  c.listeners.http.port = t.proxy.listening.http!.port;
  c.listeners.https.port = t.proxy.listening.https!.port;
  // Neither is needed to call: the command must not read them.
  c.hsm.pin = { env: 'XKS_TEST_PIN_NOBODY_SET' };
  c.admin = { listener: { host: '127.0.0.1', port: 0 }, credentials: [{ accessKeyId: 'XKSTESTADMIN00000001', secret: { env: 'XKS_TEST_ADMIN_NOBODY_SET' } }] };
  cliConfig = join(t.token.dir, 'conf', 'call.yaml');
  writeFileSync(cliConfig, stringify(c));
}, 120_000);

afterAll(async () => {
  await t?.stop();
  pki?.cleanup();
});

describe('xks call', () => {
  it('health: GetHealthStatus over the config http listener, with no PIN or admin secret available', async () => {
    const r = await xks(['call', 'health']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ xksProxyFleetSize: 1, ekmFleetDetails: [{ healthStatus: 'ACTIVE' }] });
    expectNoSecrets(r);
    // The proxy logged it as a signed request of the first credential.
    expect(t.logs.some((l) => l.includes('"operation":"GetHealthStatus"') && l.includes('"accessKeyId":"BETWEEN2TENAND3TENCHARACTERS"'))).toBe(true);
  });

  it('metadata: the key as KMS sees it; an unknown key exits 1 with the errorName', async () => {
    const ok = await xks(['call', 'metadata', 'foo']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' });
    const missing = await xks(['call', 'metadata', 'nope']);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toBe('');
    expect(missing.stderr).toMatch(/HTTP 404 KeyNotFoundException: external key nope does not exist/);
  });

  it('encrypt | decrypt: a round trip through the HSM, with AAD; the wrong AAD is InvalidCiphertextException', async () => {
    const enc = await xks(['call', 'encrypt', 'foo', '--plaintext', 'hello from xks call', '--aad', 'context']);
    expect(enc.code, enc.stderr).toBe(0);
    const body = JSON.parse(enc.stdout);
    expect(Object.keys(body).sort()).toEqual(['authenticationTag', 'ciphertext', 'ciphertextMetadata', 'initializationVector']);
    const dec = await xks(['call', 'decrypt', 'foo', '--aad', 'context', '--text'], {}, enc.stdout);
    expect(dec.code, dec.stderr).toBe(0);
    expect(dec.stdout).toBe('hello from xks call\n');
    const file = join(t.token.dir, 'conf', 'enc.json');
    writeFileSync(file, enc.stdout);
    const json = await xks(['call', 'decrypt', 'foo', '--aad', 'context', '--in', file]);
    expect(JSON.parse(json.stdout)).toEqual({ plaintext: Buffer.from('hello from xks call').toString('base64') });
    const wrong = await xks(['call', 'decrypt', 'foo', '--aad', 'other', '--in', file]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/HTTP 400 InvalidCiphertextException/);
  });

  it('--cdiv asks for the ciphertextDataIntegrityValue; an encrypt-only key refuses to decrypt', async () => {
    const enc = await xks(['call', 'encrypt', 'foo', '--plaintext-base64', Buffer.from([1, 2, 3]).toString('base64'), '--cdiv']);
    expect(enc.code, enc.stderr).toBe(0);
    expect(JSON.parse(enc.stdout).ciphertextDataIntegrityValue).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    const e = await xks(['call', 'encrypt', 'enc_only', '--plaintext', 'x']);
    const d = await xks(['call', 'decrypt', 'enc_only'], {}, e.stdout);
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/InvalidKeyUsageException/);
  });

  it('over HTTPS: --url, trusting the CA given with --ca', async () => {
    const url = `https://127.0.0.1:${t.proxy.listening.https!.port}`;
    const r = await xks(['call', 'health', '--url', url, '--ca', pki.caCert]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
    // Without the CA the certificate is not trusted: said, not ignored.
    const untrusted = await xks(['call', 'health', '--url', url]);
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/certificate/i);
  });

  it("--url to another server does not read this config's certificate; a file that cannot be read is named", async () => {
    const config = parse(readFileSync(cliConfig, 'utf8'));
    config.listeners.https.certFile = join(t.token.dir, 'no-such-cert.pem');
    // Next to the CLI's config: its secret files are named relative to it.
    const elsewhere = join(dirname(cliConfig), 'cert-elsewhere.yaml');
    writeFileSync(elsewhere, stringify(config));
    const url = `https://127.0.0.1:${t.proxy.listening.https!.port}`;
    const r = await runXks(['call', 'health', '--url', url, '--ca', pki.caCert], { configFile: elsewhere });
    expect(r.code, r.stderr).toBe(0);
    const missing = await runXks(['call', 'health', '--url', url, '--ca', join(t.token.dir, 'no-such-ca.pem')], { configFile: elsewhere });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/--ca: cannot read .*no-such-ca\.pem \(ENOENT\)/);
  });

  it('--access-key-id signs with another credential of the key store (its secret read then); an unknown one is named', async () => {
    const unset = await xks(['call', 'health', '--access-key-id', SECOND_ACCESS_KEY_ID]);
    expect(unset.code).toBe(1);
    expect(unset.stderr).toMatch(/prefixes\.0\.credentials\.1\.secret: environment variable XKS_TEST_SECOND_SECRET is not set/);
    const r = await xks(['call', 'health', '--access-key-id', SECOND_ACCESS_KEY_ID], { XKS_TEST_SECOND_SECRET: SECOND_SECRET });
    expect(r.code, r.stderr).toBe(0);
    expectNoSecrets(r);
    const unknown = await xks(['call', 'health', '--access-key-id', 'NOSUCHCREDENTIAL234567ABCD']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/has no credential NOSUCHCREDENTIAL234567ABCD/);
    const prefix = await xks(['call', 'health', '--prefix', 'no/such/prefix']);
    expect(prefix.code).toBe(1);
    expect(prefix.stderr).toMatch(/no key store with prefix "no\/such\/prefix"/);
  });

  it('a proxy that is not running is named', async () => {
    const r = await xks(['call', 'health', '--url', 'http://127.0.0.1:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/connection refused \(is the proxy running\?\)/);
  });
});
