// What a reload (SIGHUP, or a change of the file) does not apply: the settings read at start-up only. A change to one
// of them is accepted with the rest of the file but waits for a restart, and `xks serve` says so, per section.
import { isDeepStrictEqual } from 'node:util';
import type { Config } from './schema.js';

/**
 * Read at start-up only: the HSM connection and its budgets, the listeners, the request limits, the encryption
 * budget, imports, the audit trail, health and logging. A reload applies prefixes (credentials, allow-lists,
 * policies, rate limits), the admin API's credentials and region, and secretFilePermissions (used by the reload's load).
 */
const RESTART_ONLY = ['hsm', 'listeners', 'limits', 'encryptionLimits', 'import', 'audit', 'health', 'log'] as const;

export interface IgnoredChange {
  /** The top-level section. */
  section: string;
  /** What changed in it: `audit` when the section was added or removed, else its fields (`listeners.ops`). */
  fields: string[];
}

/** The restart-only settings in which `next` differs from the running configuration. Pure. */
export function changesNeedingRestart(running: Config, next: Config): IgnoredChange[] {
  const out: IgnoredChange[] = [];
  for (const section of RESTART_ONLY) {
    const fields = changedFields(section, running[section], next[section]);
    if (fields.length) out.push({ section, fields });
  }
  // The admin listener starts and stops with the process; its credentials and region follow a reload. (An admin
  // section added on reload is reported by the proxy's reload itself: its API starts with the next restart.)
  if (running.admin && next.admin && !isDeepStrictEqual(running.admin.listener, next.admin.listener)) {
    out.push({ section: 'admin', fields: ['admin.listener'] });
  }
  return out;
}

function changedFields(section: string, a: unknown, b: unknown): string[] {
  if (isDeepStrictEqual(a, b)) return [];
  if (!isObject(a) || !isObject(b)) return [section];
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => !isDeepStrictEqual(a[k], b[k])).map((k) => `${section}.${k}`).sort();
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
