// The audit trail writer: one JSON line per audited call, chained by SHA-256, sealed at intervals by a checkpoint
// whose MAC is made inside the HSM (audit-record.ts). One writer per file: each proxy process writes its own trail
// (name it per host and worker); short-lived CLI processes share one trail under a lock file.
import { closeSync, existsSync, fstatSync, fsyncSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { GENESIS, checkpointMessage, lineHash, type AuditEntry, type AuditEvent, type Checkpoint } from './audit-record.js';

/** Makes checkpoint MACs with a key that never leaves the HSM. */
export interface AuditSigner {
  keyLabel: string;
  mac(message: Buffer): Promise<Buffer>;
}

export interface AuditTrailOptions {
  file: string;
  signer: AuditSigner;
  /** Seal after this many lines ... */
  checkpointEvery: number;
  /** ... or this long after the first unsealed line, whichever comes first. */
  checkpointIntervalMs: number;
  /** Start a new file (the old one renamed with its end time) past this size. */
  maxFileBytes: number;
  now?: () => Date;
  onCheckpoint?: (c: { file: string; seq: number; hash: string }) => void;
  onError?: (e: Error) => void;
}

export class AuditTrail {
  private fd = -1;
  private seq = 0;
  private prev = GENESIS;
  private bytes = 0;
  private unsealed = 0;
  private buffered: string[] = [];
  private flushScheduled = false;
  private sealing: Promise<void> | undefined;
  /** Entries that arrived while a checkpoint's MAC was being made: they chain after the checkpoint. */
  private waiting: { entry: AuditEntry; time: Date }[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** The timer is a retry after a failed checkpoint. */
  private retryScheduled = false;
  private closing = false;
  private closed = false;
  private readonly now: () => Date;

  private constructor(private readonly opts: AuditTrailOptions) {
    this.now = opts.now ?? (() => new Date());
  }

  /** Open (or continue) the trail in `file`: the chain goes on from its last complete line. */
  static open(opts: AuditTrailOptions): AuditTrail {
    const t = new AuditTrail(opts);
    t.resume();
    return t;
  }

  private resume(): void {
    const file = this.opts.file;
    if (existsSync(file) && statSync(file).size > 0) {
      const tail = readTail(file);
      if (!tail.endsWithNewline) {
        // A line cut short (a crash mid-write): leave the file as evidence (verify names the line) and go on in a new one.
        renameSync(file, rotatedName(file, this.now(), 'cut'));
      }
      if (tail.lastLine !== undefined) {
        const last = JSON.parse(tail.lastLine) as { seq: number };
        this.seq = last.seq;
        this.prev = lineHash(tail.lastLine);
      }
    }
    this.fd = openSync(file, 'a', 0o640);
    this.bytes = fstatSync(this.fd).size;
  }

  /** Append one event. Never throws: an audit failure is reported through onError, the request goes on. */
  append(entry: AuditEntry): void {
    if (this.closed) return;
    this.enqueue(entry, this.now());
  }

  /**
   * A checkpoint's seq and prev are fixed when its MAC is asked for: until it is written, every line waits behind it
   * (including lines that waited for the previous checkpoint and start this one), so lines land in seq order.
   */
  private enqueue(entry: AuditEntry, time: Date): void {
    if (this.sealing) this.waiting.push({ entry, time });
    else this.writeEvent(entry, time);
  }

  private writeEvent(entry: AuditEntry, time: Date): void {
    const event: AuditEvent = { seq: this.seq + 1, time: time.toISOString(), prev: this.prev, type: 'event', ...entry };
    this.push(JSON.stringify(event));
    this.unsealed++;
    // After a failed checkpoint the retry timer decides: a failing HSM is not asked again for every line.
    if (this.retryScheduled) return;
    if (this.unsealed >= this.opts.checkpointEvery) void this.checkpoint();
    else if (this.unsealed === 1) this.schedule(false);
  }

  private schedule(retry: boolean): void {
    clearTimeout(this.timer);
    this.retryScheduled = retry;
    this.timer = setTimeout(() => {
      this.retryScheduled = false;
      void this.checkpoint();
    }, this.opts.checkpointIntervalMs);
    this.timer.unref();
  }

  private push(line: string): void {
    this.seq++;
    this.prev = lineHash(line);
    this.buffered.push(line + '\n');
    this.bytes += Buffer.byteLength(line) + 1;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Write what is buffered in one synchronous call: lines land in order, and rotation never races a write. */
  private flush(): void {
    this.flushScheduled = false;
    if (this.buffered.length === 0 || this.fd < 0) return;
    const chunk = this.buffered.join('');
    this.buffered = [];
    try {
      writeSync(this.fd, chunk);
    } catch (e) {
      this.opts.onError?.(e as Error);
    }
  }

  /** Seal the chain so far with an HSM MAC. */
  checkpoint(): Promise<void> {
    if (this.sealing) return this.sealing;
    if (this.unsealed === 0) return Promise.resolve();
    clearTimeout(this.timer);
    this.retryScheduled = false;
    const fields = { seq: this.seq + 1, time: this.now().toISOString(), prev: this.prev };
    this.sealing = this.opts.signer
      .mac(checkpointMessage(fields))
      .then(
        (mac) => {
          const c: Checkpoint = { ...fields, type: 'checkpoint', keyLabel: this.opts.signer.keyLabel, mac: mac.toString('hex') };
          this.push(JSON.stringify(c));
          this.unsealed = 0;
          this.opts.onCheckpoint?.({ file: this.opts.file, seq: c.seq, hash: this.prev });
          // A finished file ends with a checkpoint: each rotated file is sealed on its own.
          if (this.bytes >= this.opts.maxFileBytes && !this.closed) this.rotate();
        },
        (err: Error) => {
          this.opts.onError?.(err);
          // Not sealed (the HSM was busy or away): try again after another interval, or an idle trail would stay
          // unsealed until checkpointEvery more lines arrive.
          if (!this.closing) this.schedule(true);
        },
      )
      .finally(() => {
        this.sealing = undefined;
        const waiting = this.waiting;
        this.waiting = [];
        // One of these may start the next checkpoint: the rest then wait for it in turn.
        for (const w of waiting) this.enqueue(w.entry, w.time);
      });
    return this.sealing;
  }

  /** Start a new file right after a checkpoint; the chain (seq and prev) continues in it. */
  private rotate(): void {
    this.flush();
    closeSync(this.fd);
    renameSync(this.opts.file, rotatedName(this.opts.file, this.now()));
    this.fd = openSync(this.opts.file, 'a', 0o640);
    this.bytes = 0;
  }

  /** Seal, write everything, fsync and close. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closing = true;
    clearTimeout(this.timer);
    this.retryScheduled = false;
    // The checkpoint in progress, the lines that waited for it, then one last checkpoint for those.
    let last = false;
    for (;;) {
      if (this.sealing) await this.sealing;
      else if (this.unsealed > 0 && !last) {
        last = true;
        await this.checkpoint();
      } else break;
    }
    this.closed = true;
    clearTimeout(this.timer);
    this.flush();
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** The name a finished file gets: `audit.jsonl` -> `audit.2026-11-22T21-30-00-000Z.jsonl`. */
function rotatedName(file: string, at: Date, tag?: string): string {
  const stamp = at.toISOString().replace(/[:.]/g, '-') + (tag ? `-${tag}` : '');
  // Never over an existing file (two rotations in one millisecond): a rename would silently drop its lines.
  for (let n = 0; ; n++) {
    const s = n === 0 ? stamp : `${stamp}-${n}`;
    const name = file.endsWith('.jsonl') ? `${file.slice(0, -6)}.${s}.jsonl` : `${file}.${s}`;
    if (!existsSync(name)) return name;
  }
}

/** The last complete line of a file, and whether the file ends with a newline. */
export function readTail(file: string): { lastLine: string | undefined; endsWithNewline: boolean } {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const len = Math.min(size, 256 * 1024);
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, size - len);
    const text = buf.toString('utf8');
    const endsWithNewline = text.endsWith('\n');
    const lines = text.split('\n');
    lines.pop(); // '' after the final newline, or the cut line
    return { lastLine: lines.length ? lines[lines.length - 1] : undefined, endsWithNewline };
  } finally {
    closeSync(fd);
  }
}

/** The default trail name for this process: one file per host and worker, so no two writers share a file. */
export function trailFileName(role: string): string {
  return `audit-${hostname().replace(/[^A-Za-z0-9._-]/g, '_')}-${role}.jsonl`;
}

/** Run `fn` holding `<file>.lock` (short-lived CLI processes append to one shared trail). */
export async function withTrailLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const lock = `${file}.lock`;
  for (let i = 0; ; i++) {
    try {
      closeSync(openSync(lock, 'wx', 0o640));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // A lock older than a minute belongs to a process that died.
      try {
        if (Date.now() - statSync(lock).mtimeMs > 60_000) unlinkSync(lock);
      } catch {
        // removed meanwhile
      }
      if (i > 400) throw new Error(`the audit trail ${file} is locked by another process (${lock})`);
      await sleep(25);
    }
  }
  try {
    return await fn();
  } finally {
    try {
      unlinkSync(lock);
    } catch {
      // already gone
    }
  }
}
