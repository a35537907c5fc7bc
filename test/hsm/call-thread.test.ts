// The PKCS#11 call thread (callMode thread, the SoftHSM default): calls made in one loop iteration go to the thread in
// one message. Each call in a batch gets its own outcome, a call the thread does not answer in time fails with Timeout
// (its session is handed back only when the thread is done with it), and a thread that dies is replaced.
import { createCipheriv, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallThread } from '../../src/hsm/call-thread.js';
import { ckrMeanings, HsmError, toHsmError } from '../../src/hsm/errors.js';
import { loadProfile } from '../../src/hsm/profile.js';
import type { HsmConnection, Handle } from '../../src/hsm/hsm-connection.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { createKnownAesKey, libraryOf, openTestHsm } from '../helpers/test-hsm.js';

/** What the token's codes mean (SoftHSM 2.6 answers a failed tag check with CKR_GENERAL_ERROR): its profile says so. */
let MEANINGS: ReturnType<typeof ckrMeanings>;

const KEY = randomBytes(32);
let token: TestToken;
let hsm: HsmConnection;
let key: Handle;

function nodeEncrypt(iv: Buffer, pt: Buffer, aad: Buffer): Buffer {
  const c = createCipheriv('aes-256-gcm', KEY, iv, { authTagLength: 16 });
  c.setAAD(aad);
  return Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
}

beforeAll(async () => {
  token = createTestToken('callthread');
  MEANINGS = ckrMeanings(loadProfile(token.profile));
  // callThreadBusyAt 0: every call goes to the thread, however idle the loop.
  hsm = await openTestHsm(token, { poolSize: 32, acquireTimeoutMs: 5_000, callThreadBusyAt: 0 });
  expect(hsm.capabilities.callMode).toBe('thread');
  // A token object, so that it outlives a re-initialisation of the library.
  key = await createKnownAesKey(hsm, KEY, { label: 'call-thread-test' });
});

afterAll(() => {
  hsm?.close();
  token?.cleanup();
});

describe('one batch', () => {
  let thread: CallThread;
  let sessions: Handle[];
  beforeAll(() => {
    thread = new CallThread(token.modulePath, 5_000);
    const { openSession } = libraryOf(hsm);
    sessions = Array.from({ length: 24 }, () => openSession());
  });
  afterAll(() => {
    thread.close();
    const { mod } = libraryOf(hsm);
    for (const s of sessions) mod.C_CloseSession(s);
  });

  it('gives every call its own outcome: good ones exact, tampered ones DataInvalid, in one message', async () => {
    const cases = sessions.map((session, i) => {
      const iv = randomBytes(12);
      const aad = randomBytes(i * 7);
      const pt = randomBytes(1 + i * 50);
      const sealed = nodeEncrypt(iv, pt, aad);
      if (i % 4 === 0) return { kind: 'encrypt' as const, p: thread.encrypt(session, key, iv, aad, pt, pt.length + 16, 128), want: sealed };
      if (i % 4 === 1) sealed[sealed.length - 1]! ^= 1; // tag
      if (i % 4 === 2) sealed[0]! ^= 0x80; // ciphertext
      const tampered = i % 4 !== 3;
      return { kind: 'decrypt' as const, p: thread.decrypt(session, key, iv, aad, sealed, sealed.length, 128), want: tampered ? undefined : pt };
    });
    for (const c of cases) {
      const got = await c.p.then(
        (b) => b,
        (e: unknown) => toHsmError(e, 'decrypt', MEANINGS),
      );
      if (c.want) expect(got, `${c.kind} answers the right bytes`).toEqual(c.want);
      else expect(got instanceof HsmError && got.code).toBe('DataInvalid');
    }
    expect(thread.pending).toBe(0);
  });

  it('a call after a failed one on the same session works (the failure left nothing open)', async () => {
    const iv = randomBytes(12);
    const pt = Buffer.from('after the failures');
    expect(await thread.encrypt(sessions[1]!, key, iv, Buffer.alloc(0), pt, pt.length + 16, 128)).toEqual(nodeEncrypt(iv, pt, Buffer.alloc(0)));
  });
});

describe('timeouts', () => {
  it('calls past the budget fail with Timeout at once; each one says when the thread is done with its session', async () => {
    const thread = new CallThread(token.modulePath, 20);
    const { mod, openSession } = libraryOf(hsm);
    const session = openSession();
    try {
      // 3,000 Init+Encrypt pairs on one session, one after another on the thread: far more than 20 ms of work.
      const pt = randomBytes(1024);
      const calls = Array.from({ length: 3000 }, () => thread.encrypt(session, key, randomBytes(12), Buffer.alloc(0), pt, pt.length + 16, 128));
      const outcomes = await Promise.all(calls.map((p) => p.then(() => undefined, (e: unknown) => e)));
      const last = outcomes.at(-1) as HsmError & { settled?: Promise<void> };
      expect(last).toBeInstanceOf(HsmError);
      expect(last.code).toBe('Timeout');
      expect(thread.pending, 'timed-out calls still count until the thread returns them').toBeGreaterThan(0);
      await last.settled;
      expect(thread.pending).toBe(0);
      // Every call either succeeded or timed out; nothing else.
      for (const o of outcomes) if (o !== undefined) expect((o as HsmError).code).toBe('Timeout');
      const iv = randomBytes(12);
      const fresh = new CallThread(token.modulePath, 5_000);
      const out = await fresh.encrypt(session, key, iv, Buffer.alloc(0), pt, pt.length + 16, 128);
      fresh.close();
      expect(out, 'the session is clean after the timed-out calls').toEqual(nodeEncrypt(iv, pt, Buffer.alloc(0)));
    } finally {
      thread.close();
      mod.C_CloseSession(session);
    }
  });
});

describe('a thread that dies', () => {
  it('fails its calls as a device error, the connection recovers, and a new thread serves the next calls', async () => {
    const before = await hsm.encryptGcm(key, Buffer.from('warm'), Buffer.alloc(0));
    expect(before.ciphertext).toHaveLength(4);
    const thread = (hsm as unknown as { thread: { worker: { terminate(): Promise<number> } } }).thread;
    const generation = hsm.generation;
    const pts = Array.from({ length: 16 }, (_, i) => Buffer.from(`in flight ${i}`));
    const calls = pts.map((pt) => hsm.encryptGcm(key, pt, Buffer.alloc(0)));
    void thread.worker.terminate();
    // Each call in flight is retried once after the recovery (which re-initialises the library, so the old key
    // handle may be void: the proxy's key catalogue re-resolves on that), so none hangs and none answers wrong bytes.
    const outcomes = await Promise.allSettled(calls);
    outcomes.forEach((o, i) => {
      if (o.status === 'fulfilled') expect(Buffer.concat([o.value.ciphertext, o.value.tag])).toEqual(nodeEncrypt(o.value.iv, pts[i]!, Buffer.alloc(0)));
      else expect(o.reason).toBeInstanceOf(HsmError);
    });
    expect(hsm.generation).toBeGreaterThan(generation);
    key = (await hsm.findSecretKeys({ label: 'call-thread-test' }))[0]!.handle;
    const after = await hsm.encryptGcm(key, Buffer.from('after'), Buffer.alloc(0));
    expect(Buffer.concat([after.ciphertext, after.tag])).toEqual(nodeEncrypt(after.iv, Buffer.from('after'), Buffer.alloc(0)));
    expect(hsm.asyncCallsInFlight).toBe(0);
  });
});

describe('a thread that cannot start (a broken install)', () => {
  it('fails the calls it was sent as a device error, says why once, and sends no more calls there', async () => {
    const reasons: string[] = [];
    const thread = new CallThread('/nonexistent/libpkcs11.so', 1_000, 0, (r) => reasons.push(r));
    try {
      expect(thread.busy, 'busyAt 0: every call goes to the thread while it may start').toBe(true);
      const call = thread.encrypt(Buffer.alloc(8), Buffer.alloc(8), randomBytes(12), Buffer.alloc(0), Buffer.from('x'), 17, 128);
      const e = await call.then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(HsmError);
      expect((e as HsmError).code).toBe('DeviceError');
      const until = Date.now() + 5_000;
      while (thread.unusable === undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      expect(thread.unusable).toMatch(/nonexistent/);
      expect(reasons).toEqual([thread.unusable]);
      expect(thread.busy, 'calls are made in place from now on').toBe(false);
    } finally {
      thread.close();
    }
  });
});
