// `xks report`: the compliance report for every key and version in the token (exit 2 when anything is flagged).
import { Command } from 'commander';
import { BlockIndex } from '../keys/encryption-blocks.js';
import { report } from '../keys/report.js';
import { openCatalogue } from '../proxy.js';
import { withConfigOption, withHsm } from './context.js';

export function reportCommand(): Command {
  return withConfigOption(new Command('report'))
    .description('for every key and version: origin, CKA_* evidence, dates, state, rotation, encryptions; flags anything that breaks "never leaves the HSM" and versions due for rotation by their encryptions')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }, cmd: Command) =>
      withHsm(cmd, async (hsm, loaded) => {
        const keys = await openCatalogue(hsm, loaded).list();
        const blocks = await BlockIndex.read(hsm);
        const r = report(keys, hsm.info, new Date(), { reservedOf: (id) => blocks.reserved(id), limits: loaded.config.encryptionLimits });
        if (opts.json) console.log(JSON.stringify(r, null, 2));
        else {
          console.log(`Token ${r.Token.label} (serial ${r.Token.serial}, ${r.Token.manufacturer} ${r.Token.model}), ${r.GeneratedAt}`);
          for (const k of r.Keys) {
            const rotation = k.RotationPeriodInDays ? `rotates every ${k.RotationPeriodInDays} d, last ${k.LastRotationDate ?? 'never'}` : 'no automatic rotation';
            console.log(`\n${k.Compliant ? 'OK  ' : 'FLAG'} ${k.KeyId}: ${k.KeyState}, origin ${k.Origin}, created ${k.CreationDate ?? 'unknown'}, ${rotation}`);
            for (const f of k.Findings) console.log(`       ${f.severity}: ${f.message}`);
            for (const v of k.Versions) {
              const evidence = `SENSITIVE=${v.Sensitive} EXTRACTABLE=${v.Extractable} NEVER_EXTRACTABLE=${v.NeverExtractable} LOCAL=${v.Local} ENCRYPTIONS<=${v.EncryptionsReserved ?? 0}`;
              console.log(`     v${v.Version} ${v.Origin} ${v.CreationDate ?? ''} ${evidence}`.replace(/ +/g, ' '));
              for (const f of v.Findings) console.log(`       ${f.severity}: ${f.message}`);
            }
          }
          const bad = r.Summary.NonCompliantKeys;
          console.log(`\n${r.Summary.Keys} keys, ${r.Summary.Versions} versions; ${bad.length ? `flagged: ${bad.join(', ')}` : 'nothing flagged'}`);
        }
        if (r.Summary.NonCompliantKeys.length > 0) process.exitCode = 2;
      }),
    );
}
