// `xks audit verify FILE...`: check an audit trail's hash chain and its HSM-signed checkpoints.
import { Command } from 'commander';
import { auditMacChecker } from '../audit/audit-key.js';
import { readAnchors, verifyTrail } from '../audit/audit-verify.js';
import { withConfigOption, withHsm } from './context.js';

export function auditCommand(): Command {
  const audit = new Command('audit').description('the tamper-evident audit trail');
  audit.addCommand(
    withConfigOption(new Command('verify'))
      .description('verify the chain and the HSM checkpoints of trail files (any order; rotated files included)')
      .argument('<files...>')
      .option('--allow-unsealed-tail', 'accept lines written after the last checkpoint (a trail still being written)')
      .option('--anchors <logs...>', 'process logs whose "audit checkpoint" lines must all be in the trail (catches a cut after a checkpoint)')
      .option('--json', 'print JSON')
      .action((files: string[], opts: { allowUnsealedTail?: boolean; anchors?: string[]; json?: boolean }, cmd: Command) =>
        withHsm(cmd, async (hsm) => {
          const anchors = opts.anchors ? readAnchors(opts.anchors) : undefined;
          const r = await verifyTrail(files, auditMacChecker(hsm), { allowUnsealedTail: opts.allowUnsealedTail === true, ...(anchors ? { anchors } : {}) });
          if (opts.json) console.log(JSON.stringify(r));
          else if (r.ok) {
            for (const c of r.chains) {
              const from = c.continuesEarlierFiles ? ` (continues earlier files not given)` : '';
              console.log(`OK ${c.files.join(' -> ')}: seq ${c.firstSeq}..${c.lastSeq}${from}, ${c.lines} lines, ${c.checkpoints} checkpoints verified in the HSM`);
            }
            if (anchors) console.log(`OK all ${anchors.length} checkpoints the process logs recorded are in the trail`);
          } else console.log(`FAILED ${r.problem!.file} line ${r.problem!.line}: ${r.problem!.reason}`);
          if (!r.ok) process.exitCode = 1;
        }),
      ),
  );
  return audit;
}
