// `xks hsm`: the token, its mechanisms and the capabilities the proxy chose; token initialisation for SoftHSM.
import { Command } from 'commander';
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
            loggedIn: conn.ping(),
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
          console.log(`key gen    ${c.aesKeyGen ? 'yes' : 'no'}; AES key wrap pad ${c.aesKeyWrapPad ? 'yes' : 'no'}; RSA-OAEP ${c.rsaOaep ? 'yes' : 'no'}; HMAC-SHA256 ${c.hmacSha256 ? 'yes' : 'no'}`);
          console.log(`mechanisms ${c.mechanisms.join(' ')}`);
        });
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
