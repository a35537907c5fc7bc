// A key's versions as the tests check them: straight from the token (the rotation protocol's invariants), as the CLI
// describes them, and as a ciphertext names them.
import { expect } from 'vitest';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { assemble } from '../../src/keys/catalogue.js';
import { secretObjectRole } from '../../src/keys/key-objects.js';
import { decodeCiphertextMetadata } from '../../src/xks/ciphertext-metadata.js';
import { runXks } from './built-cli.js';
import type { TestToken } from './test-token.js';

/** `xks keys describe <id>` (a separate process reading the token), parsed. */
export async function describeViaCli(token: TestToken, configFile: string, id: string): Promise<any> {
  const r = await runXks(['keys', 'describe', id, '--json'], { token, configFile });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

/** The key version named by an encrypt response's ciphertextMetadata. */
export function versionOf(encryptBody: { ciphertextMetadata: string }): number | undefined {
  return decodeCiphertextMetadata(Buffer.from(encryptBody.ciphertextMetadata, 'base64'));
}

/**
 * The key's AES objects straight from the token, by role: version number -> how many objects claim it, and the
 * candidates. The invariants of the rotation protocol are checked on these, not on the proxy's own reading.
 */
export async function tokenObjects(hsm: HsmConnection, id: string) {
  const objs = await hsm.findSecretKeys({ label: id });
  // The catalogue's own reading of the objects: material with its commit marker is a version, without one a candidate.
  const key = assemble(id, objs);
  const versions = new Map<number, number>([...(key?.versions.values() ?? [])].map((v) => [v.version, 1 + v.alternates.length]));
  const candidates = (key?.candidates ?? []).map((c) => c.version);
  const records = objs.filter((o) => o.keyType === 'generic-secret' && secretObjectRole(o.id).role === 'record').length;
  return { all: objs, versions, candidates, records };
}

/** Versions 1..n, each claimed by exactly one object, and no candidate left. */
export async function expectCleanVersions(hsm: HsmConnection, id: string, n: number): Promise<void> {
  const t = await tokenObjects(hsm, id);
  expect([...t.versions.entries()].sort((a, b) => a[0] - b[0])).toEqual(Array.from({ length: n }, (_, i) => [i + 1, 1]));
  expect(t.candidates).toEqual([]);
  expect(t.records).toBe(1);
}
