// `xks keys export` and `xks keys import-wrapped`: backup of an exportable key by wrapping under a trusted KEK, and its
// restore into the same or another token (docs/backup.md). Added to the `keys` group by keys.ts.
import { Command } from 'commander';
import { exportKey, importWrapped } from '../keys/backup.js';
import { describeKey } from '../keys/key-description.js';
import { openCatalogue, openLifecycle } from '../proxy.js';
import { readInput, withConfigOption, withHsm } from './context.js';
import { refuseExisting, writeNew } from './kek.js';

export function exportCommand(): Command {
  return withConfigOption(new Command('export'))
    .description('write every version of an --exportable key, wrapped under a trusted KEK, with its record, to a file')
    .argument('<externalKeyId>')
    .requiredOption('--kek <label>', 'the KEK to wrap under (`xks kek list`)')
    .requiredOption('--out <file>', 'the backup file to write (must not exist)')
    .option('--json', 'print JSON')
    .action((id: string, opts: { kek: string; out: string; json?: boolean }, cmd: Command) =>
      withHsm(cmd, async (hsm, loaded) => {
        refuseExisting(opts.out);
        const lifecycle = openLifecycle(hsm, openCatalogue(hsm, loaded), loaded);
        const text = await exportKey({ hsm, lifecycle }, id, opts.kek);
        writeNew(opts.out, text);
        const doc = JSON.parse(text) as { versions: { version: number }[]; kek: { checkValue: string } };
        const versions = doc.versions.map((v) => v.version);
        if (opts.json) console.log(JSON.stringify({ KeyId: id, Versions: versions, Kek: opts.kek, KekCheckValue: doc.kek.checkValue, File: opts.out }));
        else console.log(`exported ${id}: version${versions.length > 1 ? 's' : ''} ${versions.join(', ')} wrapped under KEK ${opts.kek} (check value ${doc.kek.checkValue}) to ${opts.out}`);
      }),
    );
}

export function importWrappedCommand(): Command {
  return withConfigOption(new Command('import-wrapped'))
    .description('restore a key from a file written by `xks keys export`, with the same id, versions and state')
    .argument('<file>', 'the backup file')
    .requiredOption('--kek <label>', 'the KEK the backup was wrapped under (the same KEK, received with `xks kek receive`)')
    .option('--json', 'print the key as JSON')
    .action((file: string, opts: { kek: string; json?: boolean }, cmd: Command) =>
      withHsm(cmd, async (hsm, loaded) => {
        const contents = readInput(file, 'the backup file').toString('utf8');
        const lifecycle = openLifecycle(hsm, openCatalogue(hsm, loaded), loaded);
        const key = await importWrapped({ hsm, lifecycle }, contents, opts.kek);
        const d = describeKey(key);
        if (opts.json) console.log(JSON.stringify(d));
        else console.log(`restored ${key.id}: ${d.KeyState}, versions ${[...key.versions.keys()].sort((a, b) => a - b).join(', ')}, current ${d.CurrentVersion ?? '-'}`);
      }),
    );
}
