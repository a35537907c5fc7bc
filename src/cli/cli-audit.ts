// The audit trail of operator commands: every command that changes keys or the token (create, rotate, disable,
// schedule deletion, export, import, KEK ceremonies, token initialisation) appends two lines to the shared CLI trail
// (audit.dir, under a lock file: cron jobs may run at once), each sealed by an HSM checkpoint: its intent before it
// runs, and its outcome, success or failure, after. A command whose intent cannot be sealed does not run.
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { AuditEntry } from '../audit/audit-record.js';
import { AuditError } from '../audit/audit-error.js';
import { trailFileName } from '../audit/audit-trail.js';
import { withTrailLock } from '../audit/trail-lock.js';
import { configPath, loadFile, type LoadedFile } from '../config/load.js';
import { openAuditTrail, openHsm } from '../proxy.js';

/**
 * Commands that only read (list, describe, report, status, verify, serve) are not audited here; nor is a migration
 * (`migrate aws-sample`), which writes a config file and changes nothing in a token.
 */
const READ_ONLY = new Set(['list', 'describe', 'status', 'verify', 'serve', 'report', 'help', 'aws-sample']);
/**
 * Groups whose commands change nothing in the token: `config check` reads files (and keys, with --hsm), `call` sends
 * XKS requests (the serving proxy audits them), `aws` prints what AWS needs.
 */
const READ_ONLY_GROUPS = new Set(['config', 'call', 'aws']);

/**
 * Commands audited after they ran only, as before intents existed: the token's initialisation (there is no token to
 * seal an intent with before it) and the HSM check (a diagnostic that must run on an HSM that cannot seal anything;
 * its probe objects are its own and destroyed).
 */
const OUTCOME_ONLY = new Set(['hsm init-token', 'hsm check']);

let keyVersion: number | undefined;

/** The key version a command made or left current (a rotation's new version), for its audit line. */
export function noteAuditVersion(version: number | undefined): void {
  keyVersion = version;
}

export interface CliCall {
  operation: string;
  keyId?: string | undefined;
  configFile?: string | undefined;
  /** The call id its intent line carries; set once that line is sealed. */
  requestId?: string | undefined;
  /** Its outcome goes on the trail (its intent was sealed, or it is audited after it ran only). */
  audited?: boolean | undefined;
}

/** What the command about to run is: "keys rotate", its key id (first argument), its config file. */
export function describeCall(action: Command): CliCall | undefined {
  if (READ_ONLY.has(action.name())) return undefined;
  const names: string[] = [];
  for (let c: Command | null = action; c && c.parent; c = c.parent) names.unshift(c.name());
  if (READ_ONLY_GROUPS.has(names[0]!)) return undefined;
  const opts = action.optsWithGlobals<{ config?: string; keyId?: string }>();
  const first = action.args[0];
  return {
    operation: names.join(' '),
    keyId: opts.keyId ?? (first && /^[A-Za-z0-9._-]{1,128}$/.test(first) ? first : undefined),
    configFile: opts.config,
  };
}

/**
 * Before the command runs: its intent ("started", operation, key id, a call id) goes on the CLI trail, sealed by a
 * checkpoint in the HSM and fsynced, so a command killed after its HSM change leaves a visible "started, no outcome".
 * When the trail cannot be written or sealed (the HSM refuses, the lock is held) this throws a named AuditError and
 * the command does not run.
 */
export async function beginCliCall(call: CliCall): Promise<void> {
  const loaded = configFor(call);
  if (!loaded?.config.audit) return;
  if (OUTCOME_ONLY.has(call.operation)) {
    call.audited = true;
    return;
  }
  const id = randomUUID();
  try {
    await writeCliLine(loaded, { ...entryFor(call), outcome: 'started', requestId: id });
  } catch (e) {
    const err = e as AuditError;
    throw new AuditError(err.code, `${err.message.replace(/^\w+: /, '')}; the command did not run, nothing was changed`);
  }
  call.requestId = id;
  call.audited = true;
}

/** After the command: its outcome, under the intent's call id. Says on stderr (exit 3) when it could not be written. */
export async function auditCliCall(call: CliCall, outcome: 'ok' | 'error', errorName: string | undefined): Promise<void> {
  if (!call.audited) return; // no trail configured, or the intent was refused and the command did not run
  const loaded = configFor(call);
  if (!loaded?.config.audit) return;
  const entry: AuditEntry = {
    ...entryFor(call),
    ...(keyVersion !== undefined && call.keyId ? { keyVersion } : {}),
    outcome,
    ...(errorName ? { errorName } : {}),
    ...(call.requestId ? { requestId: call.requestId } : {}),
  };
  try {
    await writeCliLine(loaded, entry);
  } catch (e) {
    process.stderr.write(`xks: the command's outcome was not written to the audit trail: ${(e as Error).message}\n`);
    process.exitCode = process.exitCode || 3;
  }
}

function configFor(call: CliCall): LoadedFile | undefined {
  try {
    return loadFile(configPath(call.configFile));
  } catch {
    return undefined; // no configuration at all: the command itself says so
  }
}

function entryFor(call: CliCall): Omit<AuditEntry, 'outcome'> {
  return { source: 'cli', who: operator(), operation: call.operation, ...(call.keyId ? { keyId: call.keyId } : {}) };
}

/** One line on the CLI trail, sealed (checkpoint, fsync, HSM anchor) before this returns; a named AuditError if not. */
async function writeCliLine(loaded: LoadedFile, entry: AuditEntry): Promise<void> {
  const unavailable = (why: string) => new AuditError('AuditTrailUnavailable', `the audit trail cannot be written (${why})`);
  let hsm;
  try {
    hsm = await openHsm(loaded);
  } catch (e) {
    throw unavailable(`the HSM did not open: ${(e as Error).message}`);
  }
  try {
    mkdirSync(loaded.config.audit!.dir, { recursive: true, mode: 0o750 });
    await withTrailLock(join(loaded.config.audit!.dir, trailFileName('cli')), async () => {
      const trail = (await openAuditTrail(hsm, loaded, 'cli'))!;
      trail.append(entry);
      await trail.close();
      const { failing, unsealedLines } = trail.status;
      if (failing || unsealedLines > 0) throw unavailable(failing ?? 'not sealed');
    });
  } catch (e) {
    if (e instanceof AuditError) throw e;
    throw unavailable((e as Error).message);
  } finally {
    hsm.close();
  }
}

function operator(): string {
  try {
    return `os:${userInfo().username}`;
  } catch {
    return `uid:${process.getuid?.() ?? 'unknown'}`;
  }
}
