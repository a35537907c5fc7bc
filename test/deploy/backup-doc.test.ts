// docs/backup.md "Making the second token, step by step" works as written: its shell blocks and its config, run in
// order on a fresh HOME with the built CLI as `xks`, make SoftHSM token B, `xks hsm check` passes on it, and B's SO PIN
// is one the ceremony's first step on B (`xks kek transport-key`) accepts.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { ensureBuilt, MAIN, ROOT, runProcess } from '../helpers/built-cli.js';

const home = mkdtempSync(join(tmpdir(), 'xks-backup-doc-'));
afterAll(() => rmSync(home, { recursive: true, force: true }));

function section(): string {
  const doc = readFileSync(join(ROOT, 'docs/backup.md'), 'utf8');
  const start = doc.indexOf('## Making the second token, step by step');
  expect(start, 'docs/backup.md has the section').toBeGreaterThanOrEqual(0);
  return doc.slice(start, doc.indexOf('\n### The security officer on each HSM', start));
}

it('the SoftHSM steps make token B, which the checks and an SO login accept', async () => {
  ensureBuilt();
  const text = section();
  const blocks = [...text.matchAll(/```(sh|yaml)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1]!, body: m[2]!.replace(/^ {3}/gm, '') }));
  expect(blocks.map((b) => b.lang)).toEqual(['sh', 'sh', 'yaml', 'sh']);
  const [mkdirs, softhsmConf, config, initAndCheck] = blocks;
  // Step 3 says where the config goes: $B/config.yaml.
  expect(text).toContain("B's config, `$B/config.yaml`");
  const script = [
    'set -euo pipefail',
    `xks() { node ${JSON.stringify(MAIN)} "$@"; }`,
    mkdirs!.body,
    softhsmConf!.body,
    `cat > "$B/config.yaml" <<'YAML'\n${config!.body}YAML`,
    initAndCheck!.body,
    // Step 5: B's SO PIN opens an SO session (the ceremony's first step on B).
    'XKS_HSM_SO_PIN=$(cat "$B/so-pin") xks kek transport-key backup-kek --out "$B/b-transport.der" --config "$B/config.yaml"',
  ].join('\n');
  const r = await runProcess('bash', ['-c', script], { env: { HOME: home, XKS_CONFIG: '' }, timeoutMs: 120_000 });
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/initialised token xks-backup \(serial /);
  expect(r.stdout).toMatch(/wrote the transport public key for backup-kek to .*b-transport\.der; fingerprint [0-9a-f]/);
  // Nothing secret was printed.
  for (const f of ['user-pin', 'so-pin', 'sigv4-secret']) {
    const secret = readFileSync(join(home, 'xks-backup-b', f), 'utf8');
    expect(secret.length).toBeGreaterThan(20);
    expect(r.stdout + r.stderr).not.toContain(secret);
  }
});
