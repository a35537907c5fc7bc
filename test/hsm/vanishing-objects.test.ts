// Another writer destroys objects while a search reads them: a rotation's lease is renewed (a new object made, then the
// old one destroyed) every 500 ms, by this process or another replica. An object destroyed between C_FindObjects and
// C_GetAttributeValue must neither fail the search (which would fail a catalogue refresh or a rotation for a key that
// was never in question) nor be left out of it while its successor is too: a search that answered without both would
// show a live writer with no lease, whose claim then looks abandoned. The search is made again instead, so every
// answer holds what existed at one moment.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
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

  it.each(['async', 'thread'] as const)('never fails, and every answer holds what existed at one moment (%s calls)', async (mode) => {
    hsm.capabilities.callMode = mode;
    const label = `churn-${mode}`;
    const make = async () => (await hsm.generateKey(inertSecretTemplate(label, randomBytes(8)), GENERIC_SECRET_KEY_GEN)).handle;
    // Two objects that stay, and a few that are made and destroyed all along.
    const kept = [await make(), await make()];
    let churning = [await make(), await make(), await make()];
    let stop = false;
    // Replaced every 20 ms: 25 times the rate of a lease's renewals, so that searches meet destroys often.
    const churn = (async () => {
      while (!stop) {
        const next = await Promise.all(churning.map(() => make()));
        await Promise.all(churning.map((h) => hsm.destroyObject(h)));
        churning = next;
        await sleep(20);
      }
    })();
    const failures: unknown[] = [];
    let searches = 0;
    let short = 0;
    try {
      // 30 searches while it churns (on a busy machine they may take a while).
      while (searches < 30) {
        searches++;
        const found = await hsm.findSecretKeys({ label }).catch((e: unknown) => {
          failures.push(e);
          return undefined;
        });
        if (found) {
          // What stays is always found, and each object found is described whole.
          for (const k of kept) expect(found.some((o) => o.handle.equals(k))).toBe(true);
          for (const o of found) expect(o.label).toBe(label);
          // Three churning objects exist at every moment (each made before the one it replaces is destroyed).
          if (found.length < kept.length + 3) short++;
        }
      }
    } finally {
      stop = true;
      await churn;
    }
    expect(failures.map(String)).toEqual([]);
    expect(short, 'answers missing an object that existed throughout').toBe(0);
  }, 30_000);
});
