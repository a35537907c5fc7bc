#!/usr/bin/env node
// `xks`: the proxy's command line. Each command group lives in its own file; this one only assembles them.
import { Command } from 'commander';
import { VERSION } from '../proxy.js';
import { auditCommand } from './audit.js';
import { hsmCommand } from './hsm.js';
import { importCommand } from './import.js';
import { kekCommand } from './kek.js';
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

program.parseAsync(process.argv).catch((e: unknown) => {
  // One sentence for a person: what was wrong. No stack, no secrets.
  process.stderr.write(`xks: ${(e as Error)?.message ?? String(e)}\n`);
  process.exit(1);
});
