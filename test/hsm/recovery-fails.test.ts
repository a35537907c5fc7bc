// When recovery itself fails (the token removed, C_Initialize refusing), every request gets a named 503 that KMS reads
// as "retry later", never a 500 InternalException; once the HSM is back, the proxy serves again without a restart.
// Faults come from our PKCS#11 emulator's control file (test/emulator), forwarding to a SoftHSM token.
import { execFileSync } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

const ROOT = new URL('../../', import.meta.url).pathname;

// The emulator forwards to SoftHSM: this runs in the SoftHSM pass.
describe.skipIf(TOKEN_KIND !== 'softhsm')('an HSM that cannot be recovered', () => {
  let t: TestProxy;
  let control: string;
  const setControl = (text: string) => {
    writeFileSync(`${control}.new`, text);
    renameSync(`${control}.new`, control);
  };

  beforeAll(async () => {
    execFileSync('bash', [join(ROOT, 'scripts/build-emulator.sh')], { stdio: 'pipe' });
    const token = createTestToken('unrecoverable');
    control = join(token.dir, 'emulator-control');
    writeFileSync(control, '');
    t = await startProxyOnToken({
      token,
      config: { hsm: { module: join(ROOT, 'test/emulator/build/libxks-emulator.so'), libraryParameters: `vendor=none control=${control}` } },
      keys: { foo: { encrypt: true, decrypt: true } },
    });
  }, 60_000);
  afterAll(async () => {
    setControl('');
    await t?.stop();
  });

  it('answers a named 503 while the token is gone, and serves again once it is back', async () => {
    const xks = xksClient(t.httpUrl);
    expect((await xks.encrypt('foo', Buffer.from('before'))).status).toBe(200);
    // Every call fails as if the token were removed, C_Initialize included: recovery cannot succeed.
    setControl('fail * CKR_DEVICE_REMOVED\n');
    const answers = [];
    for (let i = 0; i < 10; i++) answers.push(await xks.encrypt('foo', Buffer.from('while gone')));
    for (const a of answers) {
      expect(a.status, a.text).toBe(503);
      expect(a.json.errorName).toBe('DependencyTimeoutException');
    }
    setControl('');
    let back = false;
    for (let i = 0; i < 20 && !back; i++) back = (await xks.encrypt('foo', Buffer.from('after'))).status === 200;
    expect(back).toBe(true);
    expect(t.logs.some((l) => l.includes('hsm.recover'))).toBe(true);
  });
});
