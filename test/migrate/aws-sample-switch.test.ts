// The switch itself, on a real token holding keys made as the sample's operators make them (pkcs11-tool): the sample's
// SoftHSM example settings (test/fixtures/aws-sample/settings_softhsmv2.toml, only its PIN set to the test token's)
// become a config that starts a proxy, which serves signed requests on both of the sample's key stores with their
// allow-lists, and decrypts what the sample encrypted under a key of known material; `--check` lists the keys the
// sample served and flags what would break here (a label on two objects, a key that is not AES-256, a key without
// encrypt or decrypt, material that can leave the HSM), and a flagged key passes once the operator fixed it (with a
// warning: the record that fix wrote carries the key's label, which the sample may now find instead of the key).
import { readFileSync, rmSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/obs/logger.js';
import { startProxy, type RunningProxy } from '../../src/proxy.js';
import { SAMPLE_AAD, SAMPLE_CIPHERTEXT, SAMPLE_IV, SAMPLE_KEY, SAMPLE_PLAINTEXT, SAMPLE_SETTINGS_DIR, SAMPLE_TAGS, makeSampleKey, sampleEncrypt } from '../helpers/aws-sample.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { createTestToken, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';

// The example names SoftHSM's library (through pkcs11-logger): it runs on the softhsm kind only.
const softhsm = TOKEN_KIND === 'softhsm';

let token: TestToken;
let dir: string;

beforeAll(() => {
  if (!softhsm) return;
  ensureBuilt();
  token = createTestToken('aws-sample-switch');
  dir = mkdtempSync(join(tmpdir(), 'xks-switch-'));
}, 120_000);
afterAll(() => {
  token?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The SoftHSM example with the test token's PIN (the sample's is "1234") and, when given, other key ids. */
function settings(name: string, keyIds?: string[]): string {
  let text = readFileSync(new URL('settings_softhsmv2.toml', SAMPLE_SETTINGS_DIR), 'utf8').replace('user_pin = "1234"', `user_pin = "${token.userPin}"`);
  if (keyIds) text = text.replace('xks_key_id_set = ["foo", "cat", "dog"]', `xks_key_id_set = [${keyIds.map((k) => `"${k}"`).join(', ')}]`);
  const file = join(dir, `${name}.toml`);
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

describe.skipIf(!softhsm)('the converted SoftHSM example serves', () => {
  let proxy: RunningProxy;
  let out: string;
  let result: any;
  const logs: string[] = [];

  beforeAll(async () => {
    // The sample's keys: foo holds known material (pkcs11-tool --write-object), the others were generated in the token.
    makeSampleKey(token, 'foo', { value: SAMPLE_KEY });
    for (const id of ['cat', 'dog', 'bar']) makeSampleKey(token, id);
    out = join(dir, 'config.yaml');
    const r = await runXks(['migrate', 'aws-sample', settings('switch'), '--out', out, '--token-label', token.label, '--port', '0', '--check', '--json'], { token });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain(token.userPin);
    result = JSON.parse(r.stdout);
    const sink = new Writable({
      write(chunk, _enc, cb) {
        logs.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        cb();
      },
    });
    proxy = await startProxy(loadConfig(out), createLogger('info', sink));
  }, 120_000);
  afterAll(async () => proxy?.stop());

  it('--check found every key the sample served, each as this proxy will serve it', () => {
    expect(result.keys.map((k: any) => [k.keyId, k.objects, k.findings])).toEqual([
      ['foo', 1, []],
      ['cat', 1, []],
      ['dog', 1, []],
      ['bar', 1, []],
    ]);
    expect(result.keys[0].keyStores).toEqual(['', '/example/uri/path/prefix']);
  });

  it('answers signed requests on both key stores with their new credentials, within their allow-lists', async () => {
    const url = `http://127.0.0.1:${proxy.listening.http!.port}`;
    for (const ks of result.keyStores) {
      const client = xksClient(url, { accessKeyId: ks.accessKeyId, secret: readFileSync(ks.secretFile, 'utf8'), prefix: ks.path });
      const health = await client.health();
      expect(health.status, health.text).toBe(200);
      expect(health.json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
      const md = await client.metadata('foo');
      expect(md.json).toEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' });
      const enc = await client.encrypt('foo', Buffer.from('after the switch'), { additionalAuthenticatedData: SAMPLE_AAD.toString('base64') });
      expect(enc.status, enc.text).toBe(200);
      const dec = await client.decrypt('foo', decryptFields(enc.json, SAMPLE_AAD));
      expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe('after the switch');
      // What the sample encrypted: the issue's vector, and a ciphertext with its static metadata.
      const legacy = await client.decrypt('foo', {
        ciphertext: SAMPLE_CIPHERTEXT,
        initializationVector: SAMPLE_IV.toString('base64'),
        authenticationTag: SAMPLE_TAGS.aad,
        additionalAuthenticatedData: SAMPLE_AAD.toString('base64'),
      });
      expect(Buffer.from(legacy.json.plaintext, 'base64')).toEqual(SAMPLE_PLAINTEXT);
      const withMd = sampleEncrypt(SAMPLE_KEY, Buffer.from('old data'), Buffer.alloc(0), Buffer.from('v0.0.1'));
      expect(Buffer.from((await client.decrypt('foo', withMd)).json.plaintext, 'base64').toString()).toBe('old data');
    }
    // The allow-lists: cat is in the first key store only, bar in the second only; another store's secret does not sign.
    const [first, second] = result.keyStores;
    const c1 = xksClient(url, { accessKeyId: first.accessKeyId, secret: readFileSync(first.secretFile, 'utf8'), prefix: first.path });
    const c2 = xksClient(url, { accessKeyId: second.accessKeyId, secret: readFileSync(second.secretFile, 'utf8'), prefix: second.path });
    expect((await c1.metadata('cat')).status).toBe(200);
    expect((await c1.metadata('bar')).json.errorName).toBe('KeyNotFoundException');
    expect((await c2.metadata('bar')).status).toBe(200);
    expect((await c2.metadata('cat')).json.errorName).toBe('KeyNotFoundException');
    expect((await c1.health({ prefix: second.path })).json.errorName).toBe('AuthenticationFailedException');
  });

  it('logs no secret', () => {
    const text = logs.join('\n');
    for (const ks of result.keyStores) expect(text).not.toContain(readFileSync(ks.secretFile, 'utf8'));
    expect(text).not.toContain(token.userPin);
  });
});

describe.skipIf(!softhsm)('--check flags what would break', () => {
  const IDS = ['good', 'twice', 'short', 'generic', 'encrypt-only', 'decrypt-only', 'readable', 'missing'];
  let out: string;

  beforeAll(() => {
    makeSampleKey(token, 'good');
    makeSampleKey(token, 'twice');
    makeSampleKey(token, 'twice'); // pkcs11-tool --keygen run twice with one label
    makeSampleKey(token, 'short', { bytes: 16 });
    makeSampleKey(token, 'generic', { keyType: 'generic-secret' });
    makeSampleKey(token, 'encrypt-only', { decrypt: false });
    makeSampleKey(token, 'decrypt-only', { encrypt: false });
    makeSampleKey(token, 'readable', { sensitive: false }); // pkcs11-tool --keygen without --sensitive
    out = join(dir, 'check.yaml');
  });

  async function check(force: boolean) {
    return runXks(['migrate', 'aws-sample', settings('check', IDS), '--out', out, '--token-label', token.label, '--check', '--json', ...(force ? ['--force'] : [])], { token });
  }

  it('names each key that would break, with what to do, and exits 1', async () => {
    const r = await check(false);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/7 of the sample's keys would not work here as they stand: twice, short, generic, encrypt-only, decrypt-only, readable, missing/);
    const rows = new Map<string, any>(JSON.parse(r.stdout).keys.map((k: any) => [k.keyId, k]));
    const problems = (id: string) => rows.get(id).findings.map((f: any) => f.problem);
    expect(problems('good')).toEqual([]);
    expect(problems('twice')).toEqual(['SeveralObjects']);
    expect(rows.get('twice').objects).toBe(2);
    expect(problems('short')).toEqual(['NotAes256']);
    expect(problems('generic')).toEqual(['NotAes']);
    expect(problems('encrypt-only')).toEqual(['NoDecrypt']);
    expect(problems('decrypt-only')).toEqual(['NoEncrypt']);
    expect(problems('readable')).toEqual(['Exposed']);
    expect(rows.get('readable').findings[0].fix).toBe('xks keys allow-exposed readable (recorded in the token and on the audit trail; docs/key-model.md, Adopted keys)');
    expect(problems('missing')).toEqual(['Missing']);
    // The config is written all the same: the check is about the token, not the conversion.
    expect(loadConfig(out).prefixes[0]!.keys).toEqual(new Set(IDS));
  });

  it('passes a key once the operator fixed it', async () => {
    const allowed = await runXks(['keys', 'allow-exposed', 'readable', '--config', out], { token });
    expect(allowed.code, allowed.stderr).toBe(0);
    const r = await check(true);
    const rows = new Map<string, any>(JSON.parse(r.stdout).keys.map((k: any) => [k.keyId, k]));
    expect(rows.get('readable').findings.map((f: any) => [f.problem, f.severity])).toEqual([['SharedLabel', 'warn']]);
    expect(r.stderr).not.toMatch(/readable/);
  });

  it('prints a table for people', async () => {
    const r = await runXks(['migrate', 'aws-sample', settings('check', IDS), '--out', out, '--token-label', token.label, '--check', '--force'], { token });
    expect(r.stdout).toMatch(/^ {2}twice: WOULD BREAK \(2 objects; key stores ""\)\n {6}FAIL SeveralObjects: 2 secret keys carry this label: the sample used whichever/m);
    expect(r.stdout).toMatch(/^ {2}good: ok \(1 object; key stores ""\)$/m);
  });
});
