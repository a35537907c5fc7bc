// The audit key is made only when a trail is first opened on a token without one. A signer that later does not find it
// (the key destroyed, or a search after a recovery that saw nothing: a lost login hides private objects) fails its
// checkpoint by name instead of making a second audit key, which would seal the trail with a key nobody configured.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AuditAnchors } from '../../src/audit/audit-anchor.js';
import { auditSigner, findAuditKeys } from '../../src/audit/audit-key.js';
import { AuditTrail } from '../../src/audit/audit-trail.js';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { openTestHsm } from '../helpers/test-hsm.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';

let token: TestToken;
let hsm: HsmConnection;

beforeAll(async () => {
  token = createTestToken('audit-key-missing');
  hsm = await openTestHsm(token);
});
afterAll(() => {
  hsm?.close();
  token?.cleanup();
});

it('makes the key at first open only; a key not found later is a named checkpoint failure, never a second key', async () => {
  const label = 'audit-key-made-once';
  const signer = await auditSigner(hsm, label);
  const [key] = await findAuditKeys(hsm, label);
  expect(key).toBeDefined();
  const message = Buffer.from('xks-audit-checkpoint-v1\n1\n2026-01-01T00:00:00.000Z\n' + '0'.repeat(64));
  expect(await signer.mac(message)).toHaveLength(32);
  // A second signer on the same token finds the key: it makes none.
  await auditSigner(hsm, label);
  expect(await findAuditKeys(hsm, label)).toHaveLength(1);

  await hsm.destroyObject(key!);
  await expect(signer.mac(message)).rejects.toMatchObject({ code: 'AuditKeyNotFound' });
  expect(await findAuditKeys(hsm, label)).toHaveLength(0);

  // As the trail sees it: its checkpoint fails, by name, and the trail says it is not sealed.
  const file = join(mkdtempSync(join(tmpdir(), 'xks-audit-key-')), 'audit-key.jsonl');
  const trail = await AuditTrail.open({ file, signer, anchors: new AuditAnchors(hsm), checkpointEvery: 1, checkpointIntervalMs: 60_000, maxFileBytes: 1_000_000, onError: () => undefined });
  trail.append({ source: 'cli', operation: 'keys rotate', keyId: 'k', outcome: 'ok' });
  await trail.checkpoint();
  expect(trail.status.failing).toMatch(/^checkpoint: AuditKeyNotFound: /);
  expect(await findAuditKeys(hsm, label)).toHaveLength(0);
  await trail.close();
});
