// `xks audit verify FILE...`: check an audit trail's hash chain, its HSM-signed checkpoints and its HSM anchors.
import { Command, InvalidArgumentError } from 'commander';
import { AuditAnchors } from '../audit/audit-anchor.js';
import { auditMacChecker, DEFAULT_AUDIT_KEY_LABEL } from '../audit/audit-key.js';
import { readAnchors, verifyTrail, type ResumePoint } from '../audit/audit-verify.js';
import { withConfigOption, withHsm } from './context.js';

function resumePoint(value: string, previous: ResumePoint[] = []): ResumePoint[] {
  const m = /^([0-9]{1,15}):([0-9a-f]{64})$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError('a resume point is <seq>:<hash>, as `xks audit verify` printed it');
  return [...previous, { seq: Number(m[1]), hash: m[2]! }];
}

export function auditCommand(): Command {
  const audit = new Command('audit').description('the tamper-evident audit trail');
  audit.addCommand(
    withConfigOption(new Command('verify'))
      .description(
        'verify the chain, the HSM checkpoints and the HSM anchors of trail files (any order; rotated files included). ' +
          'Exit 0: verified; 1: a problem (named at its line); 2: verified, but some lines are not evidence (a writer could not vouch for them), ' +
          'a command started and left no outcome, or a trail goes on beyond the files given (its HSM anchor is later: newest files missing)',
      )
      .argument('<files...>')
      .option('--allow-unsealed-tail', 'accept lines written after the last checkpoint (a trail still being written): listed as not evidence (exit 2); a chain still needs a checkpoint')
      .option('--anchors <logs...>', 'process logs whose "audit checkpoint" lines must all be in the trail (catches a cut after a checkpoint)')
      .option('--from <seq:hash>', 'a chain may begin after this resume point (the last line of files deleted by a retention policy); repeat per trail', resumePoint)
      .option('--key-label <label>', 'the HSM key of the checkpoints (default: audit.keyLabel of the config)')
      .option('--trail-dir <dir>', 'the directory the trail was written in, when the files given are copies (the HSM anchors name it)')
      .option('--json', 'print JSON')
      .action(
        (
          files: string[],
          opts: { allowUnsealedTail?: boolean; anchors?: string[]; from?: ResumePoint[]; keyLabel?: string; trailDir?: string; json?: boolean },
          cmd: Command,
        ) =>
          withHsm(cmd, async (hsm, loaded) => {
            const anchors = opts.anchors ? readAnchors(opts.anchors) : undefined;
            // Read before the files: a checkpoint is on disk before it is anchored, so a live trail never looks cut.
            const hsmAnchors = await new AuditAnchors(hsm).list();
            const keyLabel = opts.keyLabel ?? loaded.config.audit?.keyLabel ?? DEFAULT_AUDIT_KEY_LABEL;
            const r = await verifyTrail(files, auditMacChecker(hsm), {
              keyLabel,
              allowUnsealedTail: opts.allowUnsealedTail === true,
              hsmAnchors,
              from: opts.from ?? [],
              trailDir: opts.trailDir,
              ...(anchors ? { anchors } : {}),
            });
            const notEvidence = r.chains.flatMap((c) => c.notVouched);
            const unfinished = r.chains.flatMap((c) => c.started);
            if (opts.json) console.log(JSON.stringify(r));
            else if (r.ok) {
              for (const c of r.chains) {
                const from = c.startsAfter ? ` (after the resume point ${c.startsAfter.seq}:${c.startsAfter.hash})` : '';
                const segments = c.segments ? `, ${c.segments} segment(s)` : '';
                console.log(
                  `OK ${c.files.join(' -> ')}: seq ${c.firstSeq}..${c.lastSeq}${from}, ${c.lines} lines, ${c.checkpoints} checkpoints verified in the HSM${segments}; resume point ${c.resumePoint.seq}:${c.resumePoint.hash}`,
                );
              }
              for (const n of notEvidence) {
                const seqs = n.fromSeq !== undefined ? ` (seq ${n.fromSeq}..${n.toSeq})` : '';
                if (n.lines > 0) console.log(`NOT EVIDENCE ${n.file} lines ${n.fromLine}..${n.toLine}${seqs}: ${n.reason}`);
                else console.log(`MISSING${seqs}: ${n.reason}`);
              }
              for (const c of r.chains.flatMap((x) => x.started)) {
                console.log(
                  `STARTED, NO OUTCOME ${c.file} line ${c.line} (seq ${c.seq}): ${c.operation}${c.keyId ? ` ${c.keyId}` : ''} by ${c.who ?? 'unknown'} at ${c.time}: killed before it finished (it may have made its change), or still running`,
                );
              }
              const anchored = r.anchoredTrails ?? [];
              if (anchored.length) console.log(`OK the newest checkpoint the HSM anchored is in the files, for the trail of ${anchored.join(', ')}`);
              for (const i of r.incomplete ?? []) {
                console.log(
                  `INCOMPLETE the trail of ${i.trail}: the HSM anchor records the checkpoint seq ${i.anchoredSeq}, beyond the files given (they end at seq ${i.lastSeq}): its newer files were not given, or were deleted`,
                );
              }
              if (!anchored.length && !r.incomplete?.length) {
                console.log('NOTE no HSM anchor names these files: a cut after the last checkpoint is not ruled out (copies? give --trail-dir)');
              }
              if (anchors) console.log(`OK all ${anchors.length} checkpoints the process logs recorded are in the trail`);
            } else console.log(`FAILED ${r.problem!.file} line ${r.problem!.line}: ${r.problem!.reason}`);
            if (!r.ok) process.exitCode = 1;
            else if (notEvidence.length > 0 || unfinished.length > 0 || (r.incomplete?.length ?? 0) > 0) process.exitCode = 2;
          }),
      ),
  );
  return audit;
}
