// The audit trail writer: one JSON line per audited call, chained by SHA-256, sealed at intervals by a checkpoint
// whose MAC is made inside the HSM (audit-record.ts) and anchored in the HSM (audit-anchor.ts). One writer per file:
// each proxy process writes its own trail (name it per host and worker); short-lived CLI processes share one trail
// under a lock file. Opening a trail continues it only from a line the writer can vouch for (audit-resume.ts).
import { closeSync, existsSync, fstatSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AuditAnchors, HsmAnchor } from './audit-anchor.js';
import {
  GENESIS,
  anchorHash,
  checkpointMessage,
  lineHash,
  sealMessage,
  segmentMessage,
  trailId,
  type AuditEntry,
  type AuditEvent,
  type Checkpoint,
  type Segment,
} from './audit-record.js';
import { planResume } from './audit-resume.js';

/** Makes checkpoint MACs with a key that never leaves the HSM, and checks them. */
export interface AuditSigner {
  keyLabel: string;
  mac(message: Buffer): Promise<Buffer>;
  /** True when `mac` is this key's MAC of `message`. */
  verify(message: Buffer, mac: Buffer): Promise<boolean>;
}

export interface AuditTrailOptions {
  file: string;
  signer: AuditSigner;
  /** Where each checkpoint is anchored, out of reach of whoever can write the files. */
  anchors: AuditAnchors;
  /** Seal after this many lines ... */
  checkpointEvery: number;
  /** ... or this long after the first unsealed line, whichever comes first. */
  checkpointIntervalMs: number;
  /** Start a new file (the old one renamed with its end time) past this size. */
  maxFileBytes: number;
  now?: () => Date;
  onCheckpoint?: (c: { file: string; seq: number; hash: string }) => void;
  /** The trail was opened with a new segment: what it does not vouch for, and why. */
  onSegment?: (s: { file: string; seq: number; reason: string; notVouched?: { fromSeq: number; toSeq: number } | undefined; unsealedFile?: string | undefined }) => void;
  onError?: (e: Error) => void;
}

/** How soon a failed checkpoint is tried again (at most; checkpointIntervalMs when that is shorter). */
const RETRY_MS = 5_000;
/** The first retry of a failed write or anchor; each next one waits twice as long, at most RETRY_MS. */
const FIRST_REPAIR_MS = 200;
const backoff = (attempt: number) => Math.min(RETRY_MS, FIRST_REPAIR_MS * 2 ** attempt);

/** The steps of sealing a trail that can fail: the checkpoint's MAC in the HSM, the file write, the HSM anchor. */
export type AuditFailureStage = 'checkpoint' | 'write' | 'anchor';

export interface AuditTrailStatus {
  /** The step that last failed and has not succeeded since ("checkpoint: ..."): the trail is not being sealed. */
  failing: string | undefined;
  /** Lines written (or waiting) since the last checkpoint. */
  unsealedLines: number;
  /** When the last checkpoint (or segment) was made (ms), if one was made since the trail was opened. */
  lastSealAt: number | undefined;
  openedAt: number;
  lines: number;
  checkpoints: number;
  failures: Record<AuditFailureStage, number>;
}

export class AuditTrail {
  private fd = -1;
  private seq = 0;
  private prev = GENESIS;
  /** The time of the last line (ms): a line is never dated before it, so time in a trail never goes backwards. */
  private lastTime = 0;
  private bytes = 0;
  private unsealed = 0;
  private buffered: string[] = [];
  /** Bytes a write did not take (a full disk, an I/O error): written first, before anything newer. */
  private unwritten: Buffer[] = [];
  /** The newest checkpoint (or segment) pushed but not yet written and fsynced: anchored once it is. */
  private toAnchor: { seq: number; hash: string; checkpoint: boolean } | undefined;
  /** Retries of a failed write, with a doubling delay. */
  private repairTimer: NodeJS.Timeout | undefined;
  private repairs = 0;
  /** The newest anchor that could not be made: made again by a timer, with a doubling delay, lines or no lines. */
  private anchorRetry: HsmAnchor | undefined;
  private anchorTimer: NodeJS.Timeout | undefined;
  private anchorRetries = 0;
  private flushScheduled = false;
  private sealing: Promise<void> | undefined;
  /** Entries that arrived while a checkpoint's MAC was being made: they chain after the checkpoint. */
  private waiting: { entry: AuditEntry; time: Date }[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** The timer is a retry after a failed checkpoint. */
  private retryScheduled = false;
  private closing = false;
  private closed = false;
  private anchoring: Promise<void> = Promise.resolve();
  private anchorNext: HsmAnchor | undefined;
  private readonly trail: string;
  private readonly now: () => Date;
  private readonly failures = new Map<AuditFailureStage, string>();
  private readonly counts = { lines: 0, checkpoints: 0, failures: { checkpoint: 0, write: 0, anchor: 0 } };
  private lastSealAt: number | undefined;
  private readonly openedAt = Date.now();

  private constructor(private readonly opts: AuditTrailOptions) {
    this.now = opts.now ?? (() => new Date());
    this.trail = trailId(resolve(opts.file));
  }

  /**
   * Open (or continue) the trail in `file`. The chain goes on from its last line only when that line is a checkpoint
   * the HSM vouches for; otherwise a new segment begins (audit-resume.ts), and nothing unverified is ever sealed.
   */
  static async open(opts: AuditTrailOptions): Promise<AuditTrail> {
    const t = new AuditTrail(opts);
    await t.resume();
    return t;
  }

  private async resume(): Promise<void> {
    const file = this.opts.file;
    const { signer } = this.opts;
    const anchor = await this.opts.anchors.latest(this.trail);
    const plan = await planResume(file, anchor, signer.keyLabel, (l) => signer.verify(sealMessage(l), Buffer.from(l.mac, 'hex')));
    if (plan.kind === 'continue') {
      this.seq = plan.from.line.seq;
      this.prev = lineHash(plan.from.raw);
      this.lastTime = Date.parse(plan.from.line.time);
      this.lastSealAt = this.lastTime;
      if (plan.anchor) await this.recordAnchor({ trail: this.trail, seq: this.seq, hash: anchorHash(this.prev) });
    }
    let unsealedFile = plan.kind === 'segment' && plan.unsealedIn ? basename(plan.unsealedIn) : undefined;
    if (plan.kind === 'segment' && plan.renameCurrent) {
      // The file keeps the lines the segment does not vouch for, as evidence; the new file begins with the segment.
      const renamed = rotatedName(file, this.now(), plan.renameCurrent);
      renameSync(file, renamed);
      unsealedFile = basename(renamed);
    }
    this.fd = openSync(file, 'a', 0o640);
    this.bytes = fstatSync(this.fd).size;
    if (plan.kind !== 'segment') return;

    const after = plan.after;
    this.lastTime = after ? Date.parse(after.line.time) : 0;
    const seq = plan.topSeq + 1;
    const afterSeq = after?.line.seq ?? 0;
    const fields: Omit<Segment, 'type' | 'keyLabel' | 'mac'> = {
      seq,
      time: this.stamp(this.now()),
      prev: after ? lineHash(after.raw) : GENESIS,
      reason: plan.reason,
      ...(after ? { after: { seq: after.line.seq, hash: lineHash(after.raw) } } : {}),
      ...(seq - 1 > afterSeq ? { notVouched: { fromSeq: afterSeq + 1, toSeq: seq - 1 } } : {}),
      ...(unsealedFile ? { unsealedFile } : {}),
      ...(anchor ? { anchored: { seq: anchor.seq, hash: anchor.hash } } : {}),
    };
    const mac = await macWithRetry(signer, segmentMessage(fields));
    const { seq: _seq, time, prev, ...rest } = fields;
    const line = JSON.stringify({ seq, time, prev, type: 'segment', ...rest, keyLabel: signer.keyLabel, mac: mac.toString('hex') } satisfies Segment);
    this.seq = seq - 1;
    this.push(line);
    this.opts.onSegment?.({ file, seq, reason: plan.reason, notVouched: fields.notVouched, unsealedFile });
    this.lastSealAt = Date.now();
    // Anchored once it is on disk (a write that fails is tried again).
    this.toAnchor = { seq, hash: this.prev, checkpoint: false };
    this.settle();
    await this.anchoring;
  }

  /** A line's time: never before the line before it (a clock stepped back writes the last time again). */
  private stamp(at: Date): string {
    this.lastTime = Math.max(this.lastTime, at.getTime());
    return new Date(this.lastTime).toISOString();
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
    const event: AuditEvent = { seq: this.seq + 1, time: this.stamp(time), prev: this.prev, type: 'event', ...entry };
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
    this.timer = setTimeout(
      () => {
        this.retryScheduled = false;
        void this.checkpoint();
      },
      // A failed checkpoint is tried again within seconds: until it succeeds health is not ACTIVE (and with
      // audit.onFailure refuse, XKS calls are refused).
      retry ? Math.min(this.opts.checkpointIntervalMs, RETRY_MS) : this.opts.checkpointIntervalMs,
    );
    this.timer.unref();
  }

  private async recordAnchor(a: HsmAnchor): Promise<void> {
    try {
      await this.opts.anchors.record(a);
      if (this.anchorRetry && this.anchorRetry.seq <= a.seq) {
        this.anchorRetry = undefined;
        this.anchorRetries = 0;
        this.failures.delete('anchor');
      } else if (!this.anchorRetry) this.failures.delete('anchor');
    } catch (e) {
      this.failed('anchor', e as Error);
      // Until an anchor succeeds the trail counts as not sealed (with audit.onFailure refuse, key operations wait):
      // it is tried again on its own, not only when a later checkpoint happens to be made.
      if (!this.anchorRetry || this.anchorRetry.seq <= a.seq) this.anchorRetry = a;
      this.scheduleAnchorRetry();
    }
  }

  private scheduleAnchorRetry(): void {
    if (this.anchorTimer || this.closed) return;
    this.anchorTimer = setTimeout(() => {
      this.anchorTimer = undefined;
      if (this.anchorRetry && !this.anchorNext) this.anchor(this.anchorRetry);
    }, backoff(this.anchorRetries++));
    this.anchorTimer.unref();
  }

  private failed(stage: AuditFailureStage, e: Error): void {
    this.counts.failures[stage]++;
    this.failures.set(stage, e.message);
    this.opts.onError?.(e);
  }

  /**
   * Whether the trail is sealed as it should be: `failing` names the last failure (checkpoint MAC, file write, HSM
   * anchor) not yet followed by a success of the same step; counts since the trail was opened.
   */
  get status(): AuditTrailStatus {
    const [stage, message] = [...this.failures.entries()][0] ?? [];
    return {
      failing: stage ? `${stage}: ${message}` : undefined,
      unsealedLines: this.unsealed + this.waiting.length,
      lastSealAt: this.lastSealAt,
      openedAt: this.openedAt,
      lines: this.counts.lines,
      checkpoints: this.counts.checkpoints,
      failures: { ...this.counts.failures },
    };
  }

  private push(line: string): void {
    this.counts.lines++;
    this.seq++;
    this.prev = lineHash(line);
    this.buffered.push(line + '\n');
    this.bytes += Buffer.byteLength(line) + 1;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.settle());
    }
  }

  /**
   * Write what is buffered in synchronous calls (lines land in order, and rotation never races a write) until every
   * byte is taken. What a failed write did not take is kept, in order, for the retry timer: a line is never dropped or
   * left cut short, and seq and prev, already given to later lines, stay true. True when all is written.
   */
  private flush(): boolean {
    this.flushScheduled = false;
    if (this.fd < 0) return false;
    if (this.buffered.length > 0) {
      this.unwritten.push(Buffer.from(this.buffered.join(''), 'utf8'));
      this.buffered = [];
    }
    while (this.unwritten.length > 0) {
      const chunk = this.unwritten[0]!;
      let done = 0;
      try {
        while (done < chunk.length) {
          const n = writeSync(this.fd, chunk, done, chunk.length - done);
          if (n <= 0) throw new Error('the audit file took no bytes');
          done += n;
        }
      } catch (e) {
        this.unwritten[0] = chunk.subarray(done);
        this.failed('write', e as Error);
        this.scheduleRepair();
        return false;
      }
      this.unwritten.shift();
    }
    this.failures.delete('write');
    return true;
  }

  /**
   * Write what is buffered; once everything up to the newest checkpoint is written and fsynced, anchor that checkpoint
   * in the HSM (an anchor never names a line that is not on disk) and rotate the file if it is due. While a failed write
   * waits for its retry, lines are only queued behind it: a failing disk is not tried again for every line.
   */
  private settle(): void {
    if (this.repairTimer) {
      this.flushScheduled = false;
      if (this.buffered.length > 0) this.unwritten.push(Buffer.from(this.buffered.splice(0).join(''), 'utf8'));
      return;
    }
    if (!this.flush()) return;
    const sealed = this.toAnchor;
    if (sealed) {
      if (!this.sync()) {
        this.scheduleRepair();
        return;
      }
      this.toAnchor = undefined;
      if (sealed.checkpoint) this.opts.onCheckpoint?.({ file: this.opts.file, seq: sealed.seq, hash: sealed.hash });
      this.anchor({ trail: this.trail, seq: sealed.seq, hash: anchorHash(sealed.hash) });
      // A finished file ends with a checkpoint (each rotated file is sealed on its own): not when lines written late
      // with it follow it; the next checkpoint rotates then.
      if (this.bytes >= this.opts.maxFileBytes && !this.closed && this.seq === sealed.seq) this.rotate();
    }
    this.repairs = 0;
  }

  /** Try a failed write (or fsync) again after a doubling delay, whether or not new lines arrive. */
  private scheduleRepair(): void {
    if (this.repairTimer || this.closed) return;
    this.repairTimer = setTimeout(() => {
      this.repairTimer = undefined;
      this.settle();
    }, backoff(this.repairs++));
    this.repairTimer.unref();
  }

  /** Seal the chain so far with an HSM MAC. */
  checkpoint(): Promise<void> {
    if (this.sealing) return this.sealing;
    if (this.unsealed === 0) return Promise.resolve();
    clearTimeout(this.timer);
    this.retryScheduled = false;
    const fields = { seq: this.seq + 1, time: this.stamp(this.now()), prev: this.prev };
    this.sealing = this.opts.signer
      .mac(checkpointMessage(fields))
      .then(
        (mac) => {
          const c: Checkpoint = { ...fields, type: 'checkpoint', keyLabel: this.opts.signer.keyLabel, mac: mac.toString('hex') };
          this.push(JSON.stringify(c));
          this.unsealed = 0;
          this.counts.checkpoints++;
          this.lastSealAt = Date.now();
          this.failures.delete('checkpoint');
          // On disk (written and fsynced) before its anchor exists: an anchor never names a line a crash could lose.
          this.toAnchor = { seq: c.seq, hash: this.prev, checkpoint: true };
          this.settle();
        },
        (err: Error) => {
          this.failed('checkpoint', err);
          // Not sealed (the HSM was busy or away): try again after another interval, or an idle trail would stay
          // unsealed until checkpointEvery more lines arrive.
          if (!this.closing) this.schedule(true);
        },
      )
      // Callers do not wait for a checkpoint (`void this.checkpoint()`): a rejection would end the process.
      .catch((err: Error) => this.failed('write', err))
      .finally(() => {
        this.sealing = undefined;
        const waiting = this.waiting;
        this.waiting = [];
        // One of these may start the next checkpoint: the rest then wait for it in turn.
        for (const w of waiting) this.enqueue(w.entry, w.time);
      });
    return this.sealing;
  }

  private sync(): boolean {
    try {
      fsyncSync(this.fd);
      return true;
    } catch (e) {
      this.failed('write', e as Error);
      return false;
    }
  }

  /** Record the newest checkpoint in the HSM, one at a time; a checkpoint made meanwhile replaces a pending one. */
  private anchor(a: HsmAnchor): void {
    const idle = this.anchorNext === undefined;
    this.anchorNext = a;
    if (!idle) return;
    this.anchoring = this.anchoring.then(async () => {
      const next = this.anchorNext!;
      this.anchorNext = undefined;
      await this.recordAnchor(next);
    });
  }

  /**
   * Start a new file right after a checkpoint; the chain (seq and prev) continues in it. Never throws: a rotation that
   * fails is a write failure (status, metrics, onError), and the old file is written until a new one is open. A current
   * file removed underneath (rename: ENOENT) took its lines with it; a new file at its path continues the chain, and
   * verify reports the missing lines.
   */
  private rotate(): void {
    const file = this.opts.file;
    const rotated = rotatedName(file, this.now());
    let moved = false;
    try {
      renameSync(file, rotated);
      moved = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.failed('write', new Error(`the audit file could not be rotated, it stays the current file: ${(e as Error).message}`));
        return;
      }
      this.failed('write', new Error(`the current audit file ${file} was removed: the lines it held are lost; a new file continues the chain`));
    }
    let fd: number;
    try {
      fd = openSync(file, 'a', 0o640);
    } catch (e) {
      let back = '';
      if (moved) {
        try {
          renameSync(rotated, file);
        } catch {
          back = ` (lines go on into ${basename(rotated)})`;
        }
      }
      this.failed('write', new Error(`a new audit file could not be opened, the current one is kept${back}: ${(e as Error).message}`));
      return;
    }
    const old = this.fd;
    this.fd = fd;
    this.bytes = fstatSync(fd).size;
    try {
      closeSync(old);
    } catch {
      // already unusable: nothing more to write through it
    }
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
    clearTimeout(this.repairTimer);
    this.repairTimer = undefined;
    clearTimeout(this.anchorTimer);
    this.anchorTimer = undefined;
    // What cannot be written now stays unwritten: status.failing says so (the CLI then fails the command).
    if (this.toAnchor) this.settle();
    else if (this.flush()) this.sync();
    // One more try of an anchor that failed, unless a newer one is on its way.
    if (this.anchorRetry && !this.anchorNext && !this.toAnchor) this.anchor(this.anchorRetry);
    while (this.anchorNext) await this.anchoring;
    await this.anchoring;
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** The name a finished file gets: `audit.jsonl` -> `audit.2026-11-22T21-30-00-000Z.jsonl`. */
export function rotatedName(file: string, at: Date, tag?: string): string {
  const stamp = at.toISOString().replace(/[:.]/g, '-') + (tag ? `-${tag}` : '');
  // Never over an existing file (two rotations in one millisecond): a rename would silently drop its lines.
  for (let n = 0; ; n++) {
    const s = n === 0 ? stamp : `${stamp}-${n}`;
    const name = file.endsWith('.jsonl') ? `${file.slice(0, -6)}.${s}.jsonl` : `${file}.${s}`;
    if (!existsSync(name)) return name;
  }
}

/** The default trail name for this process: one file per host and worker, so no two writers share a file. */
export function trailFileName(role: string): string {
  return `audit-${hostname().replace(/[^A-Za-z0-9._-]/g, '_')}-${role}.jsonl`;
}

/** A segment's MAC, tried a few times: a writer that cannot make it cannot open its trail. */
async function macWithRetry(signer: AuditSigner, message: Buffer): Promise<Buffer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await signer.mac(message);
    } catch (e) {
      if (attempt >= 3) throw e;
      await sleep(200 * attempt);
    }
  }
}
