// A scrape of /metrics never touches the HSM: xks_keys used to search the whole token on every scrape (169 ms at 400
// keys, on the event loop), so scrapers stalled the proxy, and a hung search hung the scrape. Here every PKCS#11 call
// is counted by our emulator module, and searches hang for 2 s, while /metrics is scraped: every scrape answers at
// once with the key counts, and the HSM sees no call at all.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import { find, httpGet, parseMetrics } from '../helpers/ops-metrics.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';


let t: TestProxy;
let control: EmulatorControl;
let ops: string;
const setControl = (text: string) => control.set(text);

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
beforeAll(async () => {
  if (TOKEN_KIND !== 'softhsm') return;
  buildEmulator();
  const token = createTestToken('scrape');
  control = emulatorControl(token);
  t = await startProxyOnToken({
    token,
    config: {
      hsm: control.hsm(),
      listeners: { http: { host: '127.0.0.1', port: 0 }, ops: { host: '127.0.0.1', port: 0 } },
    },
    keys: { foo: { encrypt: true, decrypt: true }, bar: { encrypt: true, decrypt: true } },
  });
  ops = `http://127.0.0.1:${t.proxy.opsListening!.http!.port}`;
}, 60_000);
afterAll(async () => {
  if (control) await setControl('');
  await t?.stop();
});

it.skipIf(TOKEN_KIND !== 'softhsm')('answers every scrape at once, with the key counts, while the HSM hangs on searches, and makes no PKCS#11 call', async () => {
  const calls = join(t.token.dir, 'calls');
  await setControl(`count * ${calls}\nhang C_FindObjectsInit 2000\n`);
  try {
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const r = await httpGet(`${ops}/metrics`);
      const ms = performance.now() - t0;
      expect(r.status, r.text).toBe(200);
      expect(ms, `scrape ${i} took ${ms.toFixed(0)} ms`).toBeLessThan(500);
      expect(find(parseMetrics(r.text), 'xks_keys', { state: 'Enabled' })).toHaveLength(1);
    }
    const made = existsSync(calls) ? readFileSync(calls, 'utf8').split('\n').filter(Boolean) : [];
    expect(made, 'PKCS#11 calls made while scraping').toEqual([]);
  } finally {
    await setControl('');
  }
});
