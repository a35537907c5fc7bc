// Two proxies on one token, as replicas behind a load balancer: this process (A) and a separate `xks serve` process (B)
// that shares nothing with A but the token. A change made through A's lifecycle or the CLI (disable, enable, rotate,
// scheduled deletion, purge) is served at once by A and within 5 s by B (2 x the default keyCacheTtlMs of 2 s, plus
// slack for a loaded machine), seen only through signed XKS requests.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KeyLifecycle } from '../../src/keys/lifecycle.js';
import { ensureBuilt, runXks } from '../helpers/built-cli.js';
import { serveListening, type ListeningServe } from '../helpers/serve-process.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, writeTestConfig } from '../helpers/proxy-on-token.js';
import { decryptFields, xksClient, type XksResponse } from '../helpers/xks-client.js';
import { versionOf } from '../helpers/key-versions.js';
import { pollUntil } from '../helpers/poll.js';

const SEEN_WITHIN_MS = 5_000;
const DAY_MS = 86_400_000;

let a: TestProxy;
let b: ListeningServe;
let xa: ReturnType<typeof xksClient>;
let xb: ReturnType<typeof xksClient>;
let early: any;

beforeAll(async () => {
  ensureBuilt();
  a = await startProxyOnToken();
  const second = writeTestConfig(a.token, { listeners: { http: { host: '127.0.0.1', port: 0 } } }, 'second.yaml');
  b = await serveListening(a.token, second);
  xa = xksClient(a.httpUrl);
  xb = xksClient(b.url);
}, 120_000);

afterAll(async () => {
  await b?.stop();
  await a?.stop();
});

const status = async (x: ReturnType<typeof xksClient>, id: string) => {
  const m = await x.metadata(id);
  return { ok: false, last: m.json?.keyStatus ?? m.json?.errorName, m };
};

/** Polls B's GetKeyMetadata until it answers `want` (a keyStatus or an errorName); returns how long that took. */
function bSees(id: string, want: string): Promise<number> {
  return pollUntil(`process B sees ${id} ${want}`, SEEN_WITHIN_MS, async () => {
    const s = await status(xb, id);
    return { ok: s.last === want, last: s.last };
  });
}

function expectInvalidState(r: XksResponse): void {
  expect(r.status, r.text).toBe(400);
  expect(r.json.errorName).toBe('InvalidStateException');
}

it('a key created through A is served by B', async () => {
  await a.proxy.lifecycle.create('shared', { usage: { encrypt: true, decrypt: true } });
  await bSees('shared', 'ENABLED');
  const enc = await xb.encrypt('shared', Buffer.from('made by B at version 1'));
  expect(enc.status, enc.text).toBe(200);
  early = enc.json;
  // A decrypts what B made: one key, one material.
  expect((await xa.decrypt('shared', decryptFields(early))).status).toBe(200);
});

it('disable through A: A refuses at once, B within 5 s', async () => {
  await a.proxy.lifecycle.disable('shared');
  expect((await status(xa, 'shared')).last).toBe('DISABLED');
  expectInvalidState(await xa.encrypt('shared', Buffer.from('x')));
  await bSees('shared', 'DISABLED');
  expectInvalidState(await xb.encrypt('shared', Buffer.from('x')));
  expectInvalidState(await xb.decrypt('shared', decryptFields(early)));
});

it('enable through A: B serves again within 5 s, and decrypts what it made before the disable', async () => {
  await a.proxy.lifecycle.enable('shared');
  expect((await status(xa, 'shared')).last).toBe('ENABLED');
  await bSees('shared', 'ENABLED');
  const dec = await xb.decrypt('shared', decryptFields(early));
  expect(dec.status, dec.text).toBe(200);
  expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe('made by B at version 1');
});

it('rotate through A: B decrypts the new version at once and encrypts with it within 5 s', async () => {
  expect((await a.proxy.lifecycle.rotate('shared')).Version).toBe(2);
  const fromA = await xa.encrypt('shared', Buffer.from('made by A at version 2'));
  expect(versionOf(fromA.json)).toBe(2);
  // B has version 1 cached; a ciphertext naming version 2 makes it read the token before answering.
  const dec = await xb.decrypt('shared', decryptFields(fromA.json));
  expect(dec.status, dec.text).toBe(200);
  expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe('made by A at version 2');
  await pollUntil('B encrypts at version 2', SEEN_WITHIN_MS, async () => {
    const enc = await xb.encrypt('shared', Buffer.from('x'));
    return { ok: versionOf(enc.json) === 2, last: enc.json };
  });
  expect((await xb.decrypt('shared', decryptFields(early))).status).toBe(200);
  expect((await status(xb, 'shared')).m.json).toEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' });
});

it('rotate through the CLI (a third process): A and B both move to version 3 within 5 s', async () => {
  const r = await runXks(['keys', 'rotate', 'shared'], { token: a.token, configFile: a.configFile });
  expect(r.code, r.stderr).toBe(0);
  for (const [name, x] of [['A', xa], ['B', xb]] as const) {
    await pollUntil(`${name} encrypts at version 3`, SEEN_WITHIN_MS, async () => {
      const enc = await x.encrypt('shared', Buffer.from('x'));
      return { ok: versionOf(enc.json) === 3, last: enc.json };
    });
  }
});

it('schedule deletion through the CLI: both refuse within 5 s; cancel and enable through A: B serves again', async () => {
  const r = await runXks(['keys', 'schedule-deletion', 'shared', '--pending-window-days', '7'], { token: a.token, configFile: a.configFile });
  expect(r.code, r.stderr).toBe(0);
  await bSees('shared', 'DISABLED');
  await pollUntil('A sees shared DISABLED', SEEN_WITHIN_MS, async () => {
    const s = await status(xa, 'shared');
    return { ok: s.last === 'DISABLED', last: s.last };
  });
  expectInvalidState(await xb.decrypt('shared', decryptFields(early)));
  expect((await a.proxy.lifecycle.get('shared')).state).toBe('PendingDeletion');

  expect((await a.proxy.lifecycle.cancelDeletion('shared')).state).toBe('Disabled');
  // Still refused by both: cancelling a deletion leaves the key disabled.
  expect((await status(xa, 'shared')).last).toBe('DISABLED');
  expect((await status(xb, 'shared')).last).toBe('DISABLED');
  await a.proxy.lifecycle.enable('shared');
  await bSees('shared', 'ENABLED');
  expect((await xb.decrypt('shared', decryptFields(early))).status).toBe(200);
});

it('a purged key is KeyNotFoundException for B within 5 s', async () => {
  await a.proxy.lifecycle.create('doomed', { usage: { encrypt: true, decrypt: true } });
  await bSees('doomed', 'ENABLED');
  await a.proxy.lifecycle.scheduleDeletion('doomed', 7);
  await bSees('doomed', 'DISABLED');
  // Eight days later (a lifecycle with a clock of its own, on A's connection): the deletion date has passed.
  const later = new KeyLifecycle(a.proxy.hsm, a.proxy.catalogue, { reserved: new Set(), now: () => new Date(Date.now() + 8 * DAY_MS) });
  expect(await later.purgeDue()).toEqual(['doomed']);
  expect((await status(xa, 'doomed')).last).toBe('KeyNotFoundException');
  await bSees('doomed', 'KeyNotFoundException');
  // The other key is untouched.
  expect((await status(xb, 'shared')).last).toBe('ENABLED');
  expect(b.output()).not.toContain(a.token.userPin);
});
