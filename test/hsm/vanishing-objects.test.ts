// Another writer destroys objects while a search reads them: a rotation's lease is renewed (a new object made, the old
// one destroyed) every 500 ms, by this process or another replica. An object destroyed between C_FindObjects and
// C_GetAttributeValue is simply no longer there: the search answers without it, it does not fail whole (which would
// fail a catalogue refresh, and so a request, for a key that was never in question).
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { GENERIC_SECRET_KEY_GEN } from '../../src/hsm/mechanisms.js';
import { inertSecretTemplate } from '../../src/hsm/templates.js';
import { openTestHsm } from '../helpers/test-hsm.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';

describe('a search while another writer destroys what it finds', () => {
  let token: TestToken;
  let hsm: HsmConnection;

  beforeAll(async () => {
    token = createTestToken('vanishing');
    hsm = await openTestHsm(token);
  });
  afterAll(() => {
    hsm?.close();
    token?.cleanup();
  });

  it.each(['async', 'thread'] as const)('answers without the destroyed objects and never fails (%s calls)', async (mode) => {
    hsm.capabilities.callMode = mode;
    const label = `churn-${mode}`;
    const make = async () => (await hsm.generateKey(inertSecretTemplate(label, randomBytes(8)), GENERIC_SECRET_KEY_GEN)).handle;
    // Two objects that stay, and a few that are made and destroyed all along.
    const kept = [await make(), await make()];
    let churning = [await make(), await make(), await make()];
    let stop = false;
    const churn = (async () => {
      while (!stop) {
        const next = await Promise.all(churning.map(() => make()));
        await Promise.all(churning.map((h) => hsm.destroyObject(h)));
        churning = next;
      }
    })();
    const failures: unknown[] = [];
    let searches = 0;
    try {
      const until = Date.now() + 3_000;
      while (Date.now() < until) {
        searches++;
        const found = await hsm.findSecretKeys({ label }).catch((e: unknown) => {
          failures.push(e);
          return undefined;
        });
        if (found) {
          // What stays is always found, and each object found is described whole.
          for (const k of kept) expect(found.some((o) => o.handle.equals(k))).toBe(true);
          for (const o of found) expect(o.label).toBe(label);
        }
      }
    } finally {
      stop = true;
      await churn;
    }
    expect(searches).toBeGreaterThan(20);
    expect(failures.map(String)).toEqual([]);
  }, 30_000);
});
