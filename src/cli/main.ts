#!/usr/bin/env node
// `xks`: the proxy's command line. Each command group lives in its own file; this one only assembles them.
import { Command } from 'commander';
import { VERSION } from '../proxy.js';
import { auditCommand } from './audit-command.js';
import { awsCommand } from './aws.js';
import { auditCliCall, beginCliCall, describeCall, type CliCall } from './cli-audit.js';
import { callCommand } from './call.js';
import { cliErrorName, cliExitCode } from './cli-errors.js';
import { configCommand } from './config.js';
import { hsmCommand } from './hsm.js';
import { importCommand } from './import.js';
import { kekCommand } from './kek.js';
import { migrateCommand } from './migrate.js';
import { reportCommand } from './report.js';
import { keysCommand } from './keys.js';
import { serveCommand } from './serve.js';

const program = new Command('xks')
  .description('AWS KMS External Key Store proxy backed by a PKCS#11 HSM')
  .version(VERSION)
  .showHelpAfterError();
program.addCommand(serveCommand());
program.addCommand(keysCommand());
program.addCommand(hsmCommand());
program.addCommand(importCommand());
program.addCommand(kekCommand());
program.addCommand(auditCommand());
program.addCommand(reportCommand());
program.addCommand(migrateCommand());
program.addCommand(awsCommand());
program.addCommand(configCommand());
program.addCommand(callCommand());

// Commands that change keys or the token put their intent on the audit trail before they run (they do not run when
// it cannot be sealed), and their outcome after, whatever it is.
let call: CliCall | undefined;
program.hook('preAction', async (_root, action) => {
  call = describeCall(action);
  if (call) await beginCliCall(call);
});

program.parseAsync(process.argv).then(
  async () => {
    if (call) await auditCliCall(call, process.exitCode ? 'error' : 'ok', undefined);
  },
  async (e: unknown) => {
    // One sentence for a person: what was wrong. No stack, no secrets.
    process.stderr.write(`xks: ${(e as Error)?.message ?? String(e)}\n`);
    if (call) await auditCliCall(call, 'error', cliErrorName(e));
    process.exit(cliExitCode(e));
  },
);

