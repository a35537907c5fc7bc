// The audit trail of operator commands: every command that changes keys or the token (create, rotate, disable,
// schedule deletion, export, import, KEK ceremonies, token initialisation) appends one line, success or failure, to
// the shared CLI trail (audit.dir, under a lock file: cron jobs may run at once), sealed by an HSM checkpoint.
import { mkdirSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { AuditEntry } from '../audit/audit-record.js';
import { trailFileName, withTrailLock } from '../audit/audit-trail.js';
import { configPath, loadConfig } from '../config/load.js';
import { openAuditTrail, openHsm } from '../proxy.js';

/** Commands that only read (list, describe, report, status, verify, serve) are not audited here. */
const READ_ONLY = new Set(['list', 'describe', 'status', 'verify', 'serve', 'report', 'help']);

let keyVersion: number | undefined;

/** The key version a command made or left current (a rotation's new version), for its audit line. */
export function noteAuditVersion(version: number | undefined): void {
  keyVersion = version;
}

export interface CliCall {
  operation: string;
  keyId?: string | undefined;
  configFile?: string | undefined;
}

/** What the command about to run is: "keys rotate", its key id (first argument), its config file. */
export function describeCall(action: Command): CliCall | undefined {
  if (READ_ONLY.has(action.name())) return undefined;
  const names: string[] = [];
  for (let c: Command | null = action; c && c.parent; c = c.parent) names.unshift(c.name());
  const opts = action.optsWithGlobals<{ config?: string; keyId?: string }>();
  const first = action.args[0];
  return {
    operation: names.join(' '),
    keyId: opts.keyId ?? (first && /^[A-Za-z0-9._-]{1,128}$/.test(first) ? first : undefined),
    configFile: opts.config,
  };
}

/** Append the call's line; says on stderr (never fails the command) when the trail could not be written. */
export async function auditCliCall(call: CliCall, outcome: 'ok' | 'error', errorName: string | undefined): Promise<void> {
  let file: string;
  try {
    file = configPath(call.configFile);
  } catch {
    return; // no configuration at all: the command itself said so
  }
  let loaded;
  try {
    loaded = loadConfig(file);
  } catch {
    return;
  }
  if (!loaded.config.audit) return;
  const entry: AuditEntry = {
    source: 'cli',
    who: operator(),
    operation: call.operation,
    ...(call.keyId ? { keyId: call.keyId } : {}),
    ...(keyVersion !== undefined && call.keyId ? { keyVersion } : {}),
    outcome,
    ...(errorName ? { errorName } : {}),
  };
  try {
    const hsm = await openHsm(loaded);
    try {
      mkdirSync(loaded.config.audit.dir, { recursive: true, mode: 0o750 });
      await withTrailLock(join(loaded.config.audit.dir, trailFileName('cli')), async () => {
        const trail = await openAuditTrail(hsm, loaded, 'cli');
        trail?.append(entry);
        await trail?.close();
      });
    } finally {
      hsm.close();
    }
  } catch (e) {
    process.stderr.write(`xks: the audit trail was not written: ${(e as Error).message}\n`);
    process.exitCode = process.exitCode || 3;
  }
}

function operator(): string {
  try {
    return `os:${userInfo().username}`;
  } catch {
    return `uid:${process.getuid?.() ?? 'unknown'}`;
  }
}
