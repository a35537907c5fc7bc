// A freshly started proxy answers its first burst from warm state (issue 14, finding 17): the session pool is open,
// the call thread started, and the keys the key stores may use are found in the token, all before the listener opens.
// A token whose searches and session opens are slow (our PKCS#11 emulator makes C_FindObjectsInit and C_OpenSession
// take 300 ms, as a network HSM or a SoftHSM token with thousands of objects can) shows what a cold start costs: every
// first request waited for them past its 240 ms budget.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import { ACCESS_KEY_ID, PREFIX, REGION, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('a proxy started on a slow token', () => {
  let token: TestToken;
  let t: TestProxy;
  let control: EmulatorControl;

  beforeAll(async () => {
    buildEmulator();
    token = createTestToken('warm-up');
    control = emulatorControl(token);
    const hsm = { ...control.hsm(), keyCacheTtlMs: 60_000 };
    // The keys exist before the proxy starts, as in production.
    const maker = await startProxyOnToken({ token, cleanupToken: false, config: { hsm }, keys: { foo: { encrypt: true, decrypt: true }, bar: { encrypt: true, decrypt: true } } });
    await maker.stop();
    await control.set('hang C_FindObjectsInit 300\nhang C_OpenSession 300\n');
    // The key store's allow-list names its keys: their first blocks of encryptions are reserved at warm-up too.
    const prefixes = [
      { path: PREFIX, region: REGION, keys: ['foo', 'bar'], credentials: [{ accessKeyId: ACCESS_KEY_ID, secret: { file: 'secret1' } }] },
    ];
    t = await startProxyOnToken({ token, config: { hsm, prefixes } });
  }, 120_000);
  afterAll(async () => {
    await control?.set('');
    await t?.stop();
  });

  it('has its sessions open and the token\'s keys found before it listens, and answers its first burst within budget', async () => {
    const xks = xksClient(t.httpUrl);
    const answers = await Promise.all(
      Array.from({ length: 16 }, (_, i) => xks.encrypt(i % 2 ? 'foo' : 'bar', Buffer.from(`first burst ${i}`))),
    );
    expect(answers.map((a) => a.json?.errorName ?? a.status)).toEqual(Array(16).fill(200));
    const warm = t.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'warm-up');
    expect(warm).toMatchObject({ sessions: 8, callThread: true, keys: 2 });
  }, 30_000);
});
