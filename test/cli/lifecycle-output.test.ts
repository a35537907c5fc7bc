// Commands say what they did: each lifecycle command prints the setting it changed and the dates that follow from it
// (set-rotation on and off print different lines, schedule-deletion its deletion date), `keys list` shows rotation
// and exportability, and `hsm status` names every mechanism. The built CLI on a real token.
import { describe, expect, it } from 'vitest';
import { useCliOnToken } from '../helpers/proxy-on-token.js';
import { TOKEN_FACTS } from '../helpers/test-token.js';

const DAY_MS = 86_400_000;
const cli = useCliOnToken('lifecycle-output');
const xks = cli.xks;

/** "YYYY-MM-DD HH:MM UTC" of a time `days` from now (the minute may have turned: either is accepted). */
function dayAhead(days: number): RegExp {
  const at = (ms: number) => new Date(Date.now() + days * DAY_MS + ms).toISOString();
  const fmt = (iso: string) => `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
  return new RegExp(`(${fmt(at(-60_000))}|${fmt(at(0))}|${fmt(at(60_000))})`);
}

describe('lifecycle commands print what they changed', () => {
  it('set-rotation --period-days and --off print different lines: the period, the next date, what it was', async () => {
    expect((await xks(['keys', 'create', 'rot'])).code).toBe(0);
    const on = await xks(['keys', 'set-rotation', 'rot', '--period-days', '365']);
    expect(on.code, on.stderr).toBe(0);
    expect(on.stdout.trim()).toMatch(/^rot: automatic rotation every 365 days \(was off\); next due \d{4}-\d\d-\d\d \d\d:\d\d UTC, done by `xks keys rotate-due`$/);
    expect(on.stdout).toMatch(dayAhead(365));
    const off = await xks(['keys', 'set-rotation', 'rot', '--off']);
    expect(off.code, off.stderr).toBe(0);
    expect(off.stdout.trim()).toBe('rot: automatic rotation off (was every 365 days); rotate by hand with `xks keys rotate rot`');
  });

  it('schedule-deletion prints the deletion date; cancel-deletion that there is none, and the state', async () => {
    const r = await xks(['keys', 'schedule-deletion', 'rot', '--pending-window-days', '7']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^rot: PendingDeletion, unusable now; deletion date \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in 7 days: `xks keys purge-due` destroys it from then on\)/);
    expect(r.stdout).toMatch(dayAhead(7));
    const list = await xks(['keys', 'list']);
    expect(list.stdout).toMatch(new RegExp(`rot\\s+PendingDeletion\\s+ENCRYPT,DECRYPT\\s+1\\s+HSM\\s+off\\s+no\\s+deletion ${dayAhead(7).source}`));
    const cancel = await xks(['keys', 'cancel-deletion', 'rot']);
    expect(cancel.stdout.trim()).toBe('deletion cancelled for rot: Disabled, AES_256, ENCRYPT,DECRYPT, version 1, no deletion date; `xks keys enable rot` to use it again');
    expect((await xks(['keys', 'enable', 'rot'])).stdout.trim()).toBe('enabled rot: Enabled, AES_256, ENCRYPT,DECRYPT, version 1');
    expect((await xks(['keys', 'disable', 'rot'])).stdout.trim()).toMatch(/^disabled rot: Disabled, .*; KMS sees it DISABLED until `xks keys enable rot`$/);
  });

  it('create and rotate print the rotation period and its next date', async () => {
    const c = await xks(['keys', 'create', 'periodic', '--rotation-period-days', '90']);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout.trim()).toMatch(/^created periodic: Enabled, AES_256, ENCRYPT,DECRYPT, version 1, rotates every 90 days, next due /);
    expect(c.stdout).toMatch(dayAhead(90));
    const r = await xks(['keys', 'rotate', 'periodic']);
    expect(r.stdout.trim()).toMatch(/^rotated periodic: version 2 is current since \d{4}-\d\d-\d\d \d\d:\d\d UTC; rotates every 90 days, next due .*; older versions still decrypt$/);
  });

  it.runIf(TOKEN_FACTS.wrapWithTrusted)('keys list shows rotation and exportability', async () => {
    expect((await xks(['keys', 'create', 'exp', '--exportable'])).stdout).toMatch(/, exportable \(xks keys export\)$/m);
    const list = await xks(['keys', 'list']);
    expect(list.stdout.split('\n')[0]).toMatch(/^KeyId\s+State\s+Usage\s+Version\s+Origin\s+Rotation\s+Exportable\s+Note$/);
    expect(list.stdout).toMatch(/\nexp\s+Enabled\s+ENCRYPT,DECRYPT\s+1\s+HSM\s+off\s+yes\s*\n/);
    expect(list.stdout).toMatch(new RegExp(`\\nperiodic\\s+Enabled\\s+ENCRYPT,DECRYPT\\s+2\\s+HSM\\s+90d, next \\d{4}-\\d\\d-\\d\\d\\s+no\\s*\\n`));
  });
});

describe('xks hsm status', () => {
  it('names every mechanism the token lists (vendor-defined ones as CKM_VENDOR_DEFINED+...)', async () => {
    const r = await xks(['hsm', 'status']);
    expect(r.code, r.stderr).toBe(0);
    const mechanisms = r.stdout.split('\n').find((l) => l.startsWith('mechanisms '))!.split(' ').slice(1);
    expect(mechanisms).toContain('CKM_AES_GCM');
    expect(mechanisms.filter((m) => !/^CKM_[A-Z0-9_]+(\+0x[0-9a-f]+)?$/.test(m))).toEqual([]);
    // SoftHSM 2.6 (and the emulators over it) list EdDSA, which pkcs11js (PKCS#11 v2.40) has no name for.
    if (TOKEN_FACTS.manufacturer === 'SoftHSM project') expect(mechanisms).toEqual(expect.arrayContaining(['CKM_EC_EDWARDS_KEY_PAIR_GEN', 'CKM_EDDSA']));
  });
});
