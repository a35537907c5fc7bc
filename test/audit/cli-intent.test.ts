// A key-changing CLI command is on the audit trail before it takes effect: its intent is sealed first, so a command
// killed after its HSM change leaves a visible "started, no outcome"; a lock left by a killed command is taken over at
// once; and a command whose intent cannot be sealed changes nothing. The built CLI, killed with SIGKILL at a known
// point: a PKCS#11 call our emulator module (test/emulator) holds for a few seconds, over a SoftHSM token.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trailFileName } from '../../src/audit/audit-trail.js';
import { ensureBuilt, runXks, startXks } from '../helpers/built-cli.js';
import { buildEmulator, emulatorControl, type EmulatorControl } from '../helpers/emulator.js';
import { writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, TOKEN_KIND, type TestToken } from '../helpers/test-token.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(TOKEN_KIND !== 'softhsm')('key-changing CLI commands and the audit trail', () => {
  let token: TestToken;
  let configFile: string;
  let control: EmulatorControl;
  let auditDir: string;
  let cliTrail: string;
  const setControl = (text: string) => control.set(text);
  const xks = (args: string[]) => runXks(args, { token, configFile });
  const events = () =>
    existsSync(cliTrail)
      ? readFileSync(cliTrail, 'utf8')
          .split('\n')
          .filter(Boolean)
          .flatMap((l) => {
            try {
              return [JSON.parse(l)];
            } catch {
              return [];
            }
          })
          .filter((l) => l.type === 'event')
      : [];
  const trailFiles = () => readdirSync(auditDir).filter((f) => f.endsWith('.jsonl')).map((f) => join(auditDir, f));
  /** `xks <args>` in the background, to be killed. */
  const start = (args: string[]) => startXks(args, { token, configFile });
  async function waitUntil(what: string, pred: () => boolean, ms = 20_000) {
    for (const end = Date.now() + ms; !pred(); ) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(25);
    }
  }

  beforeAll(() => {
    ensureBuilt();
    buildEmulator();
    token = createTestToken('audit-cli-intent');
    control = emulatorControl(token);
    auditDir = join(token.dir, 'audit');
    configFile = writeTestConfig(token, {
      hsm: control.hsm(),
      audit: { dir: auditDir },
    });
    cliTrail = join(auditDir, trailFileName('cli'));
  }, 120_000);
  afterAll(async () => {
    if (control) await setControl('');
    token?.cleanup();
  });

  it('writes the intent, sealed, before the change; a command killed during its change leaves "started, no outcome"', async () => {
    expect((await xks(['keys', 'create', 'warm-up'])).code).toBe(0);
    expect(events().map((e) => [e.operation, e.keyId, e.outcome])).toEqual([
      ['keys create', 'warm-up', 'started'],
      ['keys create', 'warm-up', 'ok'],
    ]);
    const [intent, outcome] = events();
    expect(intent.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(outcome.requestId).toBe(intent.requestId);

    // Every C_GenerateKey takes 3 s: the intent's HSM anchor (the intent is written and sealed before it), then the
    // key the command makes, during which it is killed.
    await setControl('hang C_GenerateKey 3000\n');
    const run = start(['keys', 'create', 'killed-key']);
    const lock = `${cliTrail}.lock`;
    await waitUntil('the intent line', () => events().some((e) => e.keyId === 'killed-key' && e.outcome === 'started'));
    // The intent is sealed before the command goes on: the line after it is a checkpoint.
    await waitUntil('the intent sealed', () => {
      const lines = readFileSync(cliTrail, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      const i = lines.findIndex((l) => l.keyId === 'killed-key');
      return lines[i + 1]?.type === 'checkpoint';
    });
    await waitUntil('the intent step done (the lock released)', () => !existsSync(lock));
    await sleep(1_000);
    run.child.kill('SIGKILL');
    await run.exited;
    await setControl('');
    expect(events().filter((e) => e.keyId === 'killed-key').map((e) => e.outcome)).toEqual(['started']);

    const r = await xks(['audit', 'verify', ...trailFiles()]);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stdout).toMatch(/^STARTED, NO OUTCOME \S+ line \d+ \(seq \d+\): keys create killed-key by os:\S+ at \S+: killed before it finished/m);
  });

  it('takes over at once a lock left by a killed command', async () => {
    await setControl('hang C_Sign 8000\n');
    const run = start(['keys', 'create', 'lock-holder']);
    const lock = `${cliTrail}.lock`;
    await waitUntil('the lock', () => existsSync(lock));
    await sleep(300);
    run.child.kill('SIGKILL');
    await run.exited;
    await setControl('');
    expect(existsSync(lock)).toBe(true); // left behind

    const t0 = Date.now();
    const r = await xks(['keys', 'create', 'after-lock']);
    expect(r.code, r.stderr).toBe(0);
    expect(Date.now() - t0).toBeLessThan(6_000); // not the 10 s wait (nor 60 s) of a lock thought alive
    expect(existsSync(lock)).toBe(false);
    expect(events().filter((e) => e.keyId === 'after-lock').map((e) => e.outcome)).toEqual(['started', 'ok']);
  });

  it('makes no change when its intent cannot be sealed: a named error, exit 3', async () => {
    await setControl('fail C_Sign CKR_DEVICE_ERROR\n');
    const r = await xks(['keys', 'create', 'refused-key']);
    await setControl('');
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.stderr).toMatch(/AuditTrailUnavailable: the audit trail cannot be written \(.+\); the command did not run, nothing was changed/);
    // The HSM check is a diagnostic: it runs on an HSM that cannot seal anything, and is audited after it ran.
    await setControl('fail C_Sign CKR_DEVICE_ERROR\n');
    const check = await xks(['hsm', 'check']);
    await setControl('');
    expect(check.stdout.length, check.stderr).toBeGreaterThan(0);
    expect(check.stderr).not.toMatch(/the command did not run/);
    const d = await xks(['keys', 'describe', 'refused-key']);
    expect(d.code).not.toBe(0);
    expect(d.stderr).toMatch(/no key "refused-key" in the token/);
  });
});
