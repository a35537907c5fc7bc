// Only until src/cli/main.ts imports './audit-command.js' (the `xks audit` command group, renamed so that it is not
// taken for cli-audit.ts, the audit trail of CLI calls): then delete this file.
export { auditCommand } from './audit-command.js';
