// docs/byok.md run as written: its shell blocks (marked <!-- test:NAME -->) run in bash with `xks` being the built CLI
// and the customer's steps being the real openssl commands. Each `xks` is a new process, so every step also proves that
// nothing of an import lives in a process (a restart between get-parameters and key-material changes nothing). After
// the import, XKS encrypts through the proxy decrypt in node:crypto with PlaintextKeyMaterial.bin.
import { statSync, chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, MAIN, ROOT, runProcess, type CliRun } from '../helpers/built-cli.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, writeTestConfig } from '../helpers/proxy-on-token.js';
import { TOKEN_FACTS, createTestToken, type TestToken } from '../helpers/test-token.js';
import { expectProxyUses, wrapMaterial } from '../helpers/byok-customer.js';

let token: TestToken;
let t: TestProxy;
let configFile: string;
let bin: string;
const DOC = readFileSync(join(ROOT, 'docs/byok.md'), 'utf8');

/** The shell block of docs/byok.md marked <!-- test:NAME -->. */
function block(name: string): string {
  const m = new RegExp(`<!-- test:${name} -->\\n\`\`\`sh\\n([\\s\\S]*?)\`\`\``).exec(DOC);
  if (!m) throw new Error(`docs/byok.md has no block marked test:${name}`);
  return m[1]!;
}

/** A script of the doc's blocks, run by bash with `xks` on the PATH (bin/xks runs the built CLI). */
const bash = (cwd: string, script: string) =>
  runProcess('bash', ['-euo', 'pipefail', '-c', script], { cwd, token, configFile, env: { PATH: `${bin}:${process.env.PATH}` } });

async function expectRuns(cwd: string, ...names: string[]): Promise<CliRun> {
  const r = await bash(cwd, names.map(block).join('\n'));
  expect(r.code, `${names.join(' + ')}: ${r.stderr}`).toBe(0);
  return r;
}

beforeAll(async () => {
  ensureBuilt();
  token = createTestToken('byok-cli');
  configFile = writeTestConfig(token, {}, 'cli.yaml');
  t = await startProxyOnToken({ token, cleanupToken: false });
  bin = mkdtempSync(join(token.dir, 'bin-'));
  writeFileSync(join(bin, 'xks'), `#!/bin/sh\nexec "${process.execPath}" "${MAIN}" "$@"\n`);
  chmodSync(join(bin, 'xks'), 0o755);
}, 180_000);

afterAll(async () => {
  await t?.stop();
  token?.cleanup();
});

function workDir(name: string): string {
  const d = join(token.dir, name);
  mkdirSync(d);
  return d;
}

describe('docs/byok.md, RSA_AES_KEY_WRAP_SHA_256', () => {
  let dir: string;

  it('create, get-parameters, the openssl recipe, import: the HSM holds exactly the customer key', async () => {
    dir = workDir('rsa-aes');
    const created = await expectRuns(dir, 'create');
    expect(created.stdout).toMatch(/payments-byok: PendingImport/);
    const params = await expectRuns(dir, 'get-parameters');
    expect(params.stdout).toMatch(/ParametersValidTo\s+\d{4}-\d{2}-\d{2}T/);
    // The import token is for its owner's eyes only.
    expect(statSync(join(dir, 'ImportToken.bin')).mode & 0o077).toBe(0);
    await expectRuns(dir, 'wrap-rsa-aes');
    expect(readFileSync(join(dir, 'EncryptedKeyMaterial.bin')).length).toBe(512 + 40);
    const imported = await expectRuns(dir, 'import');
    expect(imported.stdout).toMatch(/imported into payments-byok: version 1 \(NEW_KEY_MATERIAL\), valid to .*; key Enabled/);

    t.proxy.catalogue.invalidate('payments-byok');
    const material = readFileSync(join(dir, 'PlaintextKeyMaterial.bin'));
    await expectProxyUses(t.httpUrl, 'payments-byok', material);
    const [obj] = await t.proxy.hsm.findSecretKeys({ label: 'payments-byok', keyType: 'aes' });
    expect(obj!.attrs).toMatchObject({ sensitive: true, extractable: false });
    // Imported, not generated: CKA_LOCAL false where the token reports it faithfully, absent where it does not (NSS).
    expect(obj!.attrs.local).toBe(TOKEN_FACTS.localIsEvidence ? false : undefined);
  });

  it('the same token again: InvalidImportTokenException, exit code 1', async () => {
    const r = await bash(dir, block('import'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^xks: InvalidImportTokenException: /);
  });

  it('delete-key-material, then the same material again (EXISTING_KEY_MATERIAL by default), then sweep', async () => {
    const del = await bash(dir, 'xks import delete-key-material --key-id payments-byok');
    expect(del.code, del.stderr).toBe(0);
    expect(del.stdout).toMatch(/versions 1\); key PendingImport/);
    t.proxy.catalogue.invalidate('payments-byok');
    expect((await t.proxy.lifecycle.get('payments-byok')).versions.size).toBe(0);

    await expectRuns(dir, 'get-parameters');
    const material = readFileSync(join(dir, 'PlaintextKeyMaterial.bin'));
    writeFileSync(join(dir, 'EncryptedKeyMaterial.bin'), wrapMaterial('RSA_AES_KEY_WRAP_SHA_256', readFileSync(join(dir, 'WrappingPublicKey.bin')), material));
    const again = await bash(
      dir,
      'xks import key-material --key-id payments-byok --import-token ImportToken.bin --encrypted-key-material EncryptedKeyMaterial.bin --expiration-model KEY_MATERIAL_DOES_NOT_EXPIRE --json',
    );
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ KeyId: 'payments-byok', KeyMaterialVersion: 1, ImportType: 'EXISTING_KEY_MATERIAL', KeyState: 'Enabled' });
    t.proxy.catalogue.invalidate('payments-byok');
    await expectProxyUses(t.httpUrl, 'payments-byok', material);

    const sweep = await bash(dir, 'xks import sweep --json');
    expect(sweep.code, sweep.stderr).toBe(0);
    expect(JSON.parse(sweep.stdout)).toEqual({ WrappingKeysDestroyed: 0, MaterialDestroyed: [] });
  });
});

// The opt-in exists for tokens without OAEP SHA-256 (SoftHSM); NSS unwraps it in the HSM (test/import/algorithms.test.ts).
describe.skipIf(TOKEN_FACTS.oaepSha256)('docs/byok.md, RSAES_OAEP_SHA_256', () => {
  it('refused without the opt-in, with a message that says why and what to use', async () => {
    const dir = workDir('oaep-refused');
    await bash(dir, 'xks keys create refused-byok --origin EXTERNAL');
    const r = await bash(dir, 'xks import get-parameters --key-id refused-byok --wrapping-algorithm RSAES_OAEP_SHA_256 --wrapping-key-spec RSA_2048 --out-dir .');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^xks: UnsupportedOperationException: RSAES_OAEP_SHA_256 would decode your key material in the proxy's memory/);
  });

  it('with the opt-in: the openssl recipe imports, and the use is logged', async () => {
    const dir = workDir('oaep');
    await expectRuns(dir, 'oaep-operator');
    await expectRuns(dir, 'wrap-oaep');
    expect(readFileSync(join(dir, 'EncryptedKeyMaterial.bin')).length).toBe(384);
    const r = await expectRuns(dir, 'oaep-import');
    expect(r.stderr).toMatch(/decoded in process memory \(operator opt-in\)/);
    const material = readFileSync(join(dir, 'PlaintextKeyMaterial.bin'));
    expect(r.stderr).not.toContain(material.toString('hex'));
    t.proxy.catalogue.invalidate('archive-byok');
    await expectProxyUses(t.httpUrl, 'archive-byok', material);
  });
});
