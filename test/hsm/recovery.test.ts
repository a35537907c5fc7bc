// The HSM breaks underneath a running server (all sessions closed, login dropped): requests keep working without a
// restart, requests caught in the break fail with a named XKS error or succeed, none hang.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields, xksClient, type XksResponse } from '../helpers/xks-client.js';
import { XKS_ERRORS } from '../../src/xks/errors.js';
import { aes256KeyTemplate } from '../../src/hsm/templates.js';
import { legacyVersionId as versionId } from '../helpers/legacy-layout.js';
import { tokenLibrary, type TokenLibrary } from '../helpers/token-library.js';

// Short enough to expire within a test, long enough that the other tests run on fresh cache entries.
const KEY_CACHE_TTL_MS = 1_000;
const KEYS = { foo: { encrypt: true, decrypt: true }, bar: { encrypt: true, decrypt: true } };

const withTimeout = <T>(p: Promise<T>, ms: number, what: string) => {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`hung for ${ms} ms: ${what}`)), ms))),
  ]);
};

/** Everything a KMS key store does, once; each result checked. */
async function everythingWorks(t: TestProxy, key = 'foo') {
  const xks = xksClient(t.httpUrl);
  const pt = randomBytes(64);
  const aad = randomBytes(32);
  const enc = await withTimeout(xks.encrypt(key, pt, { additionalAuthenticatedData: aad.toString('base64') }), 5_000, 'encrypt');
  expect(enc.status, enc.text).toBe(200);
  const dec = await withTimeout(xks.decrypt(key, decryptFields(enc.json, aad)), 5_000, 'decrypt');
  expect(dec.status, dec.text).toBe(200);
  expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(pt);
  const md = await withTimeout(xks.metadata(key), 5_000, 'metadata');
  expect(md.status, md.text).toBe(200);
  expect(md.json).toEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' });
  const h = await withTimeout(xks.health(), 5_000, 'health');
  expect(h.status, h.text).toBe(200);
  expect(h.json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
  return enc.json;
}

/**
 * A response is acceptable in a break if it succeeded or carries a named XKS error with its status, other than
 * KeyNotFoundException: the keys exist, and KMS reports that error to the customer as a missing key.
 */
function namedOrOk(r: XksResponse): string | undefined {
  if (r.status === 200) return undefined;
  const name = r.json?.errorName as keyof typeof XKS_ERRORS | undefined;
  if (name && name !== 'KeyNotFoundException' && XKS_ERRORS[name] === r.status) return undefined;
  return `HTTP ${r.status}: ${r.text.slice(0, 200)}`;
}

function suite(label: string, hsm: Record<string, unknown>) {
  describe(label, () => {
    let t: TestProxy;
    /** The library under the proxy, loaded by this test: what it does there happens to the proxy's sessions. */
    let lib: TokenLibrary;
    let old: any; // a ciphertext made before any break
    const oldPt = Buffer.from('encrypted before the HSM broke');

    beforeAll(async () => {
      // health.maxAgeMs 0: every health request runs a real check on the HSM instead of answering from a cached result.
      t = await startProxyOnToken({ keys: KEYS, config: { hsm: { keyCacheTtlMs: KEY_CACHE_TTL_MS, ...hsm }, health: { maxAgeMs: 0, fleetSize: 1 } } });
      lib = tokenLibrary(t.token);
      const enc = await xksClient(t.httpUrl).encrypt('foo', oldPt);
      expect(enc.status).toBe(200);
      old = enc.json;
    });
    afterAll(async () => t?.stop());
    // Each test starts logged in, whatever the previous one left behind (a failed test may leave the login lost).
    beforeEach(async () => {
      if (await t.proxy.hsm.ping()) return;
      lib.login(t.token.userPin);
    });

    // Recoveries so far: each one bumps the generation (the log has one hsm.recover line per incident, not per recovery).
    const recoveries = () => t.proxy.hsm.generation;

    it('keeps serving after C_CloseAllSessions (sessions closed, login dropped), without a restart', async () => {
      await everythingWorks(t);
      const before = recoveries();
      lib.closeAllSessions();
      expect(await t.proxy.hsm.ping()).toBe(false); // really broken
      await everythingWorks(t);
      const dec = await xksClient(t.httpUrl).decrypt('foo', decryptFields(old));
      expect(Buffer.from(dec.json.plaintext, 'base64')).toEqual(oldPt);
      expect(recoveries()).toBeGreaterThan(before);
      expect(await t.proxy.hsm.ping()).toBe(true);
    });

    it('keeps serving after C_Logout (on any session: the login session is logged out with it)', async () => {
      lib.logout();
      expect(await t.proxy.hsm.ping()).toBe(false);
      await everythingWorks(t);
      expect(await t.proxy.hsm.ping()).toBe(true);
    });

    it('finds a key created in the token while the login is lost (no false KeyNotFoundException)', async () => {
      // As `xks keys create` in another process would: the key is in the token, the server has never looked it up.
      await t.proxy.hsm.generateKey(aes256KeyTemplate({ label: 'created_later', id: versionId(1), encrypt: true, decrypt: true, exportable: false }));
      lib.logout();
      // Private objects are invisible to a session that is not logged in: the search must not conclude "no such key".
      const r = await xksClient(t.httpUrl).metadata('created_later');
      expect(r.status, r.text).toBe(200);
      await everythingWorks(t, 'created_later');
    });

    it('keeps finding a key whose cache entry expires while the login is lost', async () => {
      await everythingWorks(t, 'bar');
      lib.logout();
      await sleep(KEY_CACHE_TTL_MS + 50); // the entry is now stale: the next lookup re-reads the token
      const xks = xksClient(t.httpUrl);
      const first = await xks.metadata('bar');
      expect(first.status, first.text).toBe(200);
      await sleep(20); // let the background re-read finish
      const second = await xks.metadata('bar');
      expect(second.status, second.text).toBe(200);
      await everythingWorks(t, 'bar');
    });

    it('does not create a second health-check key when a health check runs while the login is lost', async () => {
      lib.logout();
      const h = await xksClient(t.httpUrl).health(); // maxAgeMs 0: a real check, now
      expect(h.status).toBe(200);
      const healthKeys = await t.proxy.hsm.findSecretKeys({ label: 'xks-proxy-health-check' });
      expect(healthKeys).toHaveLength(1);
    });

    it('answers every request caught in repeated breaks with success or a named error, never hangs, then works', async () => {
      const xks = xksClient(t.httpUrl);
      const problems = new Map<string, number>(); // problem -> count
      const problem = (p: string) => problems.set(p, (problems.get(p) ?? 0) + 1);
      let ok = 0;
      let failed = 0;
      let breaks = 0;
      const recoveriesBefore = recoveries();
      for (let round = 0; round < 6; round++) {
        // Every round starts broken (nothing runs yet, so it is safe), so that its first requests must recover; the
        // breaker below adds more while they run, as often as the gaps between HSM calls allow.
        try {
          if (round % 2 === 0) lib.closeAllSessions();
          else lib.logout();
          breaks++;
        } catch {
          // already logged out or closed: the break is in place anyway
        }
        const inFlight = Array.from({ length: 40 }, async (_, i) => {
          const pt = randomBytes(16 + i);
          const key = i % 2 ? 'foo' : 'bar';
          const rs: XksResponse[] = [];
          const enc = await withTimeout(xks.encrypt(key, pt), 5_000, `round ${round} encrypt ${i}`);
          rs.push(enc);
          if (enc.status === 200) {
            const dec = await withTimeout(xks.decrypt(key, decryptFields(enc.json)), 5_000, `round ${round} decrypt ${i}`);
            rs.push(dec);
            if (dec.status === 200 && !Buffer.from(dec.json.plaintext, 'base64').equals(pt)) problem('wrong plaintext');
          }
          if (i % 10 === 0) rs.push(await withTimeout(xks.health(), 5_000, `round ${round} health ${i}`));
          if (i % 10 === 5) rs.push(await withTimeout(xks.metadata(key), 5_000, `round ${round} metadata ${i}`));
          for (const r of rs) {
            const p = namedOrOk(r);
            if (p) problem(p);
            if (r.status === 200) ok++;
            else failed++;
          }
        });
        // Break the HSM again and again while those requests are being served, alternating the kind of break.
        let done = false;
        const breaker = (async () => {
          for (let j = 0; !done; j++) {
            await sleep(2 + (j % 4));
            if (done) break;
            // Only between HSM calls: SoftHSM frees a session that C_CloseAllSessions closes even while another
            // thread is inside a call on it (a crash, not a PKCS#11 error), which a real HSM does not do to its client.
            if (t.proxy.hsm.asyncCallsInFlight > 0) continue;
            try {
              if ((round + j) % 2 === 0) lib.closeAllSessions();
              else lib.logout();
              breaks++;
            } catch {
              // already logged out or closed: the break is in place anyway
            }
          }
        })();
        await Promise.all(inFlight).finally(() => (done = true));
        await breaker;
      }
      expect(Object.fromEntries(problems), `${ok} ok, ${failed} named errors, ${breaks} breaks`).toEqual({});
      expect(ok).toBeGreaterThan(0);
      // Afterwards: no restart needed, everything works, the pool is not leaking sessions.
      await everythingWorks(t);
      await everythingWorks(t, 'bar');
      const s = t.proxy.hsm.sessionStats;
      expect(s.open).toBeLessThanOrEqual(s.size);
      expect(s.waiting).toBe(0);
      expect(recoveries() - recoveriesBefore).toBeGreaterThanOrEqual(6); // the breaks really hit the server
    });
  });
}

suite('sync HSM calls on the event loop', { callMode: 'sync' });
suite('async HSM calls on the thread pool', { callMode: 'async', sessionPoolSize: 4, operationTimeoutMs: 2_000 });
suite('HSM calls on the call thread (the SoftHSM profile default)', { sessionPoolSize: 4, operationTimeoutMs: 2_000 });
