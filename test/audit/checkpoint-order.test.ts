// Lines and checkpoints land in seq order whatever the HSM does: with a checkpoint MAC that is slow, or that fails
// now and then, lines that arrive while a checkpoint is being made wait for it, and none is written with a seq the
// pending checkpoint already holds. The signer is the real one on a real token, slowed and failed by a wrapper.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AuditAnchors } from '../../src/audit/audit-anchor.js';
import { auditMacChecker, auditSigner } from '../../src/audit/audit-key.js';
import { AuditTrail, type AuditSigner } from '../../src/audit/audit-trail.js';
import { verifyTrail } from '../../src/audit/audit-verify.js';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { openTestHsm } from '../helpers/test-hsm.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';

let token: TestToken;
let hsm: HsmConnection;

beforeAll(async () => {
  token = createTestToken('audit-order');
  hsm = await openTestHsm(token);
});
afterAll(() => {
  hsm?.close();
  token?.cleanup();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('writes lines and checkpoints in seq order while checkpoint MACs are slow and some fail', async () => {
  const real = await auditSigner(hsm);
  let calls = 0;
  let failing = true;
  const signer: AuditSigner = {
    keyLabel: real.keyLabel,
    verify: real.verify,
    mac: async (message) => {
      calls++;
      await sleep(15);
      if (failing && calls % 3 === 0) throw new Error('the HSM did not answer');
      return real.mac(message);
    },
  };
  const file = join(mkdtempSync(join(tmpdir(), 'xks-audit-order-')), 'audit-order.jsonl');
  const errors: Error[] = [];
  const trail = await AuditTrail.open({ file, signer, anchors: new AuditAnchors(hsm), checkpointEvery: 3, checkpointIntervalMs: 20, maxFileBytes: 10_000_000, onError: (e) => errors.push(e) });
  for (let i = 0; i < 120; i++) {
    trail.append({ source: 'xks', operation: 'Encrypt', keyId: 'foo', kmsRequestId: `req-${i}`, outcome: 'ok' });
    if (i % 4 === 0) await sleep(3);
  }
  failing = false;
  await sleep(100);
  await trail.close();
  expect(errors.length).toBeGreaterThan(0); // the failures really happened

  const lines = readFileSync(file, 'utf8').split('\n').slice(0, -1).map((l) => JSON.parse(l) as { seq: number; type: string; kmsRequestId?: string });
  expect(lines.map((l) => l.seq)).toEqual(lines.map((_, i) => i + 1));
  // Every request is there once, in the order it arrived.
  expect(lines.filter((l) => l.type === 'event').map((l) => l.kmsRequestId)).toEqual(Array.from({ length: 120 }, (_, i) => `req-${i}`));
  expect(lines.filter((l) => l.type === 'checkpoint').length).toBeGreaterThan(5);
  const r = await verifyTrail([file], auditMacChecker(hsm), { keyLabel: real.keyLabel });
  expect(r.problem).toBeUndefined();
  expect(r.ok).toBe(true);
});
