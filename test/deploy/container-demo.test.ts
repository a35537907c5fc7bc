// The container's demo configuration (softhsm-config/demo-config.yaml.template, filled in by docker/entrypoint.sh's sed
// line) loads with the proxy's own loader and turns on what the demo promises: the XKS listeners, the operations
// listener, the admin API with a secret of the volume's own, and the audit trail, all on the ports the image exposes.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { ROOT } from '../helpers/built-cli.js';

const dir = mkdtempSync(join(tmpdir(), 'xks-container-demo-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The template with the entrypoint's own substitutions (`-e 's#@NAME@#value#'`), read from the entrypoint. */
function demoConfig(): string {
  const entrypoint = readFileSync(join(ROOT, 'docker/entrypoint.sh'), 'utf8');
  const subs = [...entrypoint.matchAll(/-e 's#(@[A-Z_]+@)#([^#]*)#g?'/g)].map((m) => [m[1]!, m[2]!] as const);
  expect(subs.map(([name]) => name).sort()).toEqual(['@ADMIN_PORT@', '@HOST@', '@HTTPS_PORT@', '@HTTP_PORT@', '@OPS_PORT@']);
  let text = readFileSync(join(ROOT, 'softhsm-config/demo-config.yaml.template'), 'utf8');
  for (const [name, value] of subs) text = text.replaceAll(name, value);
  expect(text).not.toMatch(/@[A-Z_]+@/);
  return text;
}

it('loads, with the XKS listeners, /metrics and /health, the admin API and the audit trail on the exposed ports', () => {
  for (const f of ['user-pin', 'sigv4-secret', 'admin-secret']) {
    writeFileSync(join(dir, f), f === 'sigv4-secret' ? 'PleaseReplaceThisWithSomeSecretOfLength43To64' : 'x'.repeat(44));
    chmodSync(join(dir, f), 0o600);
  }
  writeFileSync(join(dir, 'config.yaml'), demoConfig());
  const { config } = loadConfig(join(dir, 'config.yaml'));
  const l = config.listeners;
  expect([l.http?.port, l.https?.port, l.ops?.port, config.admin?.listener.port]).toEqual([8080, 8443, 9091, 9090]);
  expect(config.audit?.dir).toBe(join(dir, 'audit'));
  expect(config.admin?.credentials.map((c) => c.accessKeyId)).toEqual(['XKSDEMOADMIN0000000001']);
  const exposed = /^EXPOSE (.*)$/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))![1]!.split(' ').map(Number);
  expect(exposed.sort()).toEqual([8080, 8443, 9090, 9091]);
});
