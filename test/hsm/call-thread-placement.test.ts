// callMode thread with its default threshold: an idle event loop makes an AES-GCM call itself (sooner and cheaper than
// a hop to the thread and back); a busy one hands its calls to the call thread. Its own file: one PKCS#11 library per
// process, and this connection needs the default threshold.
import { createCipheriv, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { GcmResult, Handle, HsmConnection } from '../../src/hsm/hsm-connection.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { createKnownAesKey, openTestHsm } from '../helpers/test-hsm.js';

const KEY = randomBytes(32);
let token: TestToken;
let hsm: HsmConnection;
let key: Handle;

beforeAll(async () => {
  token = createTestToken('placement');
  // An operator's choice (hsm.callThreadBusyAt): the default, 0, sends every call to the thread.
  hsm = await openTestHsm(token, { acquireTimeoutMs: 5_000, callThreadBusyAt: 0.8 });
  expect(hsm.capabilities.callMode).toBe('thread');
  key = await createKnownAesKey(hsm, KEY);
});

afterAll(() => {
  hsm?.close();
  token?.cleanup();
});

async function expectExact(p: Promise<GcmResult>, pt: Buffer) {
  const out = await p;
  const c = createCipheriv('aes-256-gcm', KEY, out.iv);
  expect(Buffer.concat([out.ciphertext, out.tag])).toEqual(Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]));
}

it('an idle event loop makes the call itself; a busy one hands calls to the thread', async () => {
  // A session open and IVs drawn (both through the control thread), so that the calls below count only themselves.
  await hsm.encryptGcm(key, Buffer.from('warm'), Buffer.alloc(0));
  const idle = hsm.encryptGcm(key, Buffer.from('idle'), Buffer.alloc(0));
  expect(hsm.asyncCallsInFlight, 'idle: made in place').toBe(0);
  await expectExact(idle, Buffer.from('idle'));

  const end = Date.now() + 350;
  while (Date.now() < end) {
    // the event loop is fully busy for a few sampling periods
  }
  await new Promise((r) => setTimeout(r, 0)); // the sampler's tick, due during the spin, runs first
  const busy = hsm.encryptGcm(key, Buffer.from('busy'), Buffer.alloc(0));
  expect(hsm.asyncCallsInFlight, 'busy: out on the thread').toBe(1);
  await expectExact(busy, Buffer.from('busy'));

  // Idle again: back in place after a sampling period or two.
  await new Promise((r) => setTimeout(r, 250));
  const again = hsm.encryptGcm(key, Buffer.from('again'), Buffer.alloc(0));
  expect(hsm.asyncCallsInFlight, 'idle again: made in place').toBe(0);
  await expectExact(again, Buffer.from('again'));
});
