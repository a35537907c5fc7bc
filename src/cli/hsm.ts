// `xks hsm`: the token, its mechanisms and the capabilities the proxy chose; a pre-deployment check of everything the
// proxy needs from a token; token initialisation for SoftHSM.
import { Command } from 'commander';
import type { LoadedFile } from '../config/load.js';
import { checkHsm, type CheckReport } from '../hsm/check.js';
import { loadProfile, resolveLibrary } from '../hsm/profile.js';
import { initToken } from '../hsm/token-init.js';
import { loadFor, withConfigOption, withHsm } from './context.js';

export function hsmCommand(): Command {
  const hsm = new Command('hsm').description('inspect the HSM');

  hsm.addCommand(
    withConfigOption(new Command('status'))
      .description('print the token, slot, mechanisms and chosen capabilities')
      .option('--json', 'print JSON')
      .action(async (opts: { json?: boolean }, cmd: Command) => {
        await withHsm(cmd, async (conn, loaded) => {
          const status = {
            profile: loaded.config.hsm.profile,
            token: conn.info,
            sessionPool: conn.sessionStats,
            loggedIn: await conn.ping(),
            capabilities: conn.capabilities,
          };
          if (opts.json) {
            console.log(JSON.stringify(status));
            return;
          }
          const c = conn.capabilities;
          console.log(`token      ${conn.info.label} (serial ${conn.info.serial}, slot 0x${conn.info.slot})`);
          console.log(`device     ${conn.info.manufacturer} ${conn.info.model}`);
          console.log(`library    ${conn.info.libraryDescription} ${conn.info.libraryVersion} (profile ${loaded.config.hsm.profile})`);
          console.log(`login      ${status.loggedIn ? 'ok' : 'NOT logged in'}; session pool size ${conn.sessionStats.size}`);
          console.log(`aes-gcm    ${c.aesGcm ? 'yes' : 'no'}; iv mode ${c.ivMode}; calls ${c.callMode}`);
          console.log(`key gen    ${c.aesKeyGen ? 'yes' : 'no'}; RFC 5649 key wrap ${c.keyWrap ? `${c.keyWrap.name}${c.keyWrap.confirmed ? '' : ' (unconfirmed)'}` : 'no'}; RSA-OAEP ${c.rsaOaep ? 'yes' : 'no'}; HMAC-SHA256 ${c.hmacSha256 ? 'yes' : 'no'}`);
          console.log(`mechanisms ${c.mechanisms.join(' ')}`);
        });
      }),
  );

  hsm.addCommand(
    withConfigOption(new Command('check'))
      .description('probe everything the proxy needs on throwaway objects; exit 1 with the reason if it cannot serve')
      .option('--json', 'print the rows as JSON')
      .action(async (opts: { json?: boolean }, cmd: Command) => {
        const report = await runHsmCheck(loadFor(cmd));
        console.log(opts.json ? JSON.stringify(report) : formatCheck(report));
        // One sentence on stderr and exit 1 (main.ts), after the table.
        if (!report.canServe) throw new Error(report.reason ?? 'the token cannot serve');
      }),
  );

  hsm.addCommand(
    withConfigOption(new Command('init-token'))
      .description('initialise a free SoftHSM slot as the configured token (SO PIN from XKS_HSM_SO_PIN); no-op if it exists')
      .action((_opts, cmd: Command) => {
        const loaded = loadFor(cmd);
        const label = loaded.config.hsm.tokenLabel;
        if (!label) throw new Error('hsm.tokenLabel must be set to initialise a token');
        const soPin = process.env.XKS_HSM_SO_PIN;
        if (!soPin) throw new Error('set XKS_HSM_SO_PIN to the security officer PIN for the new token');
        const profile = loadProfile(loaded.config.hsm.profile);
        const r = initToken({ ...resolveLibrary(profile, loaded.config.hsm), label, soPin, userPin: loaded.pin });
        console.log(r.created ? `initialised token ${label} (serial ${r.serial})` : `token ${label} already exists (serial ${r.serial})`);
      }),
  );
  return hsm;
}

/** `xks hsm check` on the configured token; opens and finalises the library itself (no HsmConnection). */
export function runHsmCheck(loaded: LoadedFile): Promise<CheckReport> {
  const h = loaded.config.hsm;
  const profile = loadProfile(h.profile);
  return checkHsm({ library: resolveLibrary(profile, h), profile, tokenLabel: h.tokenLabel, tokenSerial: h.tokenSerial, pin: loaded.pin, ivMode: h.ivMode });
}

const MARK = { ok: 'ok', warn: 'WARN', fail: 'FAIL', info: 'info' } as const;

/** The check as a table: probe, status, needed, what was found; under it, what the proxy will do. */
export function formatCheck(report: CheckReport): string {
  const width = Math.max(5, ...report.rows.map((r) => r.name.length));
  const lines = [`${'PROBE'.padEnd(width)}  STATUS  NEEDED    FOUND / WHAT THE PROXY DOES`];
  for (const r of report.rows) {
    lines.push(`${r.name.padEnd(width)}  ${MARK[r.status].padEnd(6)}  ${r.needed.padEnd(8)}  ${r.result}`);
    if (r.consequence) lines.push(`${' '.repeat(width + 20)}-> ${r.consequence}`);
  }
  lines.push('');
  lines.push(report.canServe ? 'verdict: the proxy can serve on this token' : `verdict: ${report.reason ?? 'the token cannot serve'}`);
  return lines.join('\n');
}
