// One log line per incident, not one per failing request: an HSM outage at 1,800 requests/s would otherwise write
// thousands of identical warnings a second and bury the line that says what happened. The first event of a kind is
// logged at once; repeats within the window are counted and reported in one line (`repeated`) when it ends; a window
// without repeats closes the incident, and the next event of that kind is logged at once again.
import type { Logger } from './logger.js';

type Level = 'warn' | 'error';

interface Incident {
  level: Level;
  msg: string;
  fields: Record<string, unknown>;
  repeated: number;
  timer: NodeJS.Timeout;
}

/** Kinds of incident open at once beyond which further kinds are counted together (the map stays bounded). */
const MAX_OPEN = 256;
const OVERFLOW = '\u0000overflow';

export class Incidents {
  private readonly open = new Map<string, Incident>();

  constructor(
    private readonly logger: Logger,
    /** Repeats of one kind within this are counted in one line. */
    readonly windowMs = 10_000,
  ) {}

  /** A warning of kind `key` (with `msg`): logged now, or counted when the same kind was logged within the window. */
  warn(key: string, fields: Record<string, unknown>, msg: string): void {
    this.report('warn', key, fields, msg);
  }

  error(key: string, fields: Record<string, unknown>, msg: string): void {
    this.report('error', key, fields, msg);
  }

  private report(level: Level, key: string, fields: Record<string, unknown>, msg: string): void {
    let id = `${level}\u0000${msg}\u0000${key}`;
    if (!this.open.has(id) && this.open.size >= MAX_OPEN) {
      id = OVERFLOW;
      fields = {};
      msg = 'further warnings and errors of other kinds (too many kinds at once to tell apart)';
      level = 'warn';
    }
    const open = this.open.get(id);
    if (open) {
      open.repeated++;
      open.fields = fields; // the summary shows the latest event's details
      return;
    }
    this.logger[level](fields, msg);
    this.open.set(id, { level, msg, fields, repeated: 0, timer: this.arm(id) });
  }

  private arm(id: string): NodeJS.Timeout {
    const timer = setTimeout(() => this.endWindow(id), this.windowMs);
    timer.unref();
    return timer;
  }

  private endWindow(id: string): void {
    const open = this.open.get(id);
    if (!open) return;
    if (open.repeated === 0) {
      this.open.delete(id);
      return;
    }
    this.logger[open.level]({ ...open.fields, repeated: open.repeated, windowMs: this.windowMs }, open.msg);
    open.repeated = 0;
    open.timer = this.arm(id); // still happening: one more window before the incident counts as over
  }

  /** Report what was counted and not yet logged (at shutdown), and forget every open incident. */
  flush(): void {
    for (const [id, open] of this.open) {
      clearTimeout(open.timer);
      if (open.repeated > 0) this.logger[open.level]({ ...open.fields, repeated: open.repeated, windowMs: this.windowMs }, open.msg);
      this.open.delete(id);
    }
  }
}
