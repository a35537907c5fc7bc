// A pool of PKCS#11 sessions: a session runs one operation at a time (CKR_OPERATION_ACTIVE otherwise),
// so a concurrent server borrows one per operation and gives it back only when it is known clean.
import { HsmError } from './errors.js';

export interface PooledSession {
  readonly handle: Buffer;
  /** The recovery generation it was opened in; sessions from before a recovery are never reused. */
  readonly generation: number;
  /** The library instance it belongs to; after a re-initialisation its handle means nothing and is not closed. */
  readonly epoch: number;
}

export interface SessionPoolOptions {
  size: number;
  /** How long a caller may wait for a free session before it gets PoolExhausted. */
  acquireTimeoutMs: number;
  /** Callers already waiting beyond which a new one gets PoolExhausted at once (overload answers 429, not a timeout). */
  maxWaiters?: number;
  /** Opens a session (off the event loop where the connection makes its calls there). */
  open: () => Promise<PooledSession>;
  close: (s: PooledSession) => Promise<void>;
  currentGeneration: () => number;
  currentEpoch: () => number;
}

interface Waiter {
  resolve: (s: PooledSession) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class SessionPool {
  private readonly idle: PooledSession[] = [];
  private readonly waiters: Waiter[] = [];
  private open = 0;
  private closed = false;

  constructor(private readonly opts: SessionPoolOptions) {}

  /** Callers that had to wait for a session, and callers refused (none came free in time, or the queue was full). */
  private waited = 0;
  private refused = 0;

  get stats(): { open: number; idle: number; waiting: number; size: number; waited: number; refused: number } {
    return { open: this.open, idle: this.idle.length, waiting: this.waiters.length, size: this.opts.size, waited: this.waited, refused: this.refused };
  }

  /** An idle session now, or undefined when none is idle (no allocation on the hot path). */
  tryAcquire(): PooledSession | undefined {
    if (this.closed) throw new HsmError('Closed', 'the HSM connection is closing');
    const gen = this.opts.currentGeneration();
    const epoch = this.opts.currentEpoch();
    while (this.idle.length > 0) {
      const s = this.idle.pop()!;
      if (s.generation === gen && s.epoch === epoch) return s;
      this.closeQuietly(s); // from before a recovery
      this.open--;
    }
    return undefined;
  }

  /** An idle session, a new one while the pool is below its size, or the next one given back (within the budget). */
  async acquire(): Promise<PooledSession> {
    const s = this.tryAcquire();
    if (s) return s;
    if (this.open < this.opts.size) return this.openOne();
    if (this.waiters.length >= (this.opts.maxWaiters ?? Infinity)) {
      this.refused++;
      return Promise.reject(new HsmError('PoolExhausted', 'the HSM queue is full'));
    }
    this.waited++;
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          this.refused++;
          reject(new HsmError('PoolExhausted', 'no HSM session became free in time'));
        }, this.opts.acquireTimeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  /** Give back a clean session. */
  release(s: PooledSession): void {
    // A session from before a recovery or a re-initialisation (opened while one was under way) is never reused: after
    // C_Finalize its number may name another session.
    if (this.closed || s.generation !== this.opts.currentGeneration() || s.epoch !== this.opts.currentEpoch()) {
      this.discard(s);
      return;
    }
    const w = this.waiters.shift();
    if (w) {
      clearTimeout(w.timer);
      w.resolve(s);
    } else {
      this.idle.push(s);
    }
  }

  /** Close a session that may hold an open operation or that the module no longer knows, and make room. */
  discard(s: PooledSession): void {
    this.open--;
    this.closeQuietly(s);
    this.serveWaiter();
  }

  /** Open one more session, counted while it opens. */
  private async openOne(): Promise<PooledSession> {
    this.open++;
    try {
      return await this.opts.open();
    } catch (e) {
      this.open--;
      throw e;
    }
  }

  private closeQuietly(s: PooledSession): void {
    if (s.epoch !== this.opts.currentEpoch()) return;
    // already invalid, or closed with the library: nothing to do
    this.opts.close(s).catch(() => undefined);
  }

  /** Forget every idle session (after a recovery); sessions in use are discarded when they come back. */
  drainIdle(): void {
    for (const s of this.idle.splice(0)) this.discard(s);
  }

  /** A session was discarded: the first waiter gets an idle one, or a new one opened for it. */
  private serveWaiter(): void {
    if (this.waiters.length === 0 || this.closed) return;
    const idle = this.tryAcquire();
    if (!idle && this.open >= this.opts.size) return;
    const w = this.waiters.shift()!;
    clearTimeout(w.timer);
    if (idle) w.resolve(idle);
    else this.openOne().then(w.resolve, w.reject);
  }

  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new HsmError('Closed', 'the HSM connection is closing'));
    }
    for (const s of this.idle.splice(0)) {
      this.open--;
      this.closeQuietly(s);
    }
  }
}
