// Where every PKCS#11 call other than hot-path AES-GCM runs when the call mode is thread or async: one dedicated thread
// (control-thread-worker.cjs), one call at a time. An HSM that hangs in C_FindObjects, C_Login or C_Initialize then
// holds that thread, never the event loop: requests are still answered at their deadline, /ping and GetHealthStatus
// still answer, and every call out past its budget fails with Timeout.
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { HsmError } from './errors.js';

interface Pending {
  /** Told the value of a call that returned after its caller timed out (a session to close). */
  onLate?: ((v: unknown) => void) | undefined;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  /** performance.now() when sent. */
  at: number;
  /** Set when the call timed out: resolved once the thread has finished it. */
  settle?: () => void;
}

interface Reply {
  id: number;
  value?: unknown;
  error?: { message: string; code?: number };
}

/** An error the thread reported, shaped like pkcs11js's own (message with the CKR name, code) for toHsmError. */
export class ControlThreadError extends Error {
  override readonly name = 'Pkcs11Error';
  constructor(
    message: string,
    readonly code?: number,
  ) {
    super(message);
  }
}

/** Structured cloning hands Buffers back as Uint8Arrays: callers get Buffers, as from pkcs11js itself. */
function toBuffers(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(toBuffers);
  if (v !== null && typeof v === 'object' && !(v instanceof Date)) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[k] = toBuffers(x);
    return o;
  }
  return v;
}

export class ControlThread {
  private worker: Worker | undefined;
  /** Calls out, by id, in sending order (the thread's order). */
  private readonly out = new Map<number, Pending>();
  private nextId = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly modulePath: string,
    /** Budget for one call; past it the caller gets Timeout (and, through `settled`, word of when the call returns). */
    private readonly timeoutMs: number,
  ) {}

  /** Run one PKCS#11 function (or the composite `findAll`) on the thread. */
  call<T>(fn: string, ...args: unknown[]): Promise<T> {
    return this.callOr<T>(undefined, fn, ...args);
  }

  /** As call(), and `onLate` gets what a call returns after its caller was told Timeout (a session it must close). */
  callOr<T>(onLate: ((v: T) => void) | undefined, fn: string, ...args: unknown[]): Promise<T> {
    if (this.closed) return Promise.reject(new HsmError('Closed', 'the HSM connection is closed'));
    const worker = this.ensureWorker();
    return new Promise<T>((resolve, reject) => {
      const id = this.nextId++;
      this.out.set(id, { resolve: resolve as (v: unknown) => void, reject, at: performance.now(), onLate: onLate as ((v: unknown) => void) | undefined });
      worker.postMessage({ id, fn, args });
    });
  }

  /** Calls sent and not answered (timed-out ones included, until the thread returns them). */
  get pending(): number {
    return this.out.size;
  }

  /** How far past its budget the oldest call out is (ms); 0 when none is. */
  get overdueMs(): number {
    for (const c of this.out.values()) return Math.max(0, performance.now() - c.at - this.timeoutMs);
    return 0;
  }

  close(): void {
    this.closed = true;
    const err = new HsmError('Closed', 'the HSM connection is closed');
    for (const c of this.out.values()) if (!c.settle) c.reject(err);
    this.out.clear();
    void this.worker?.terminate();
    this.worker = undefined;
    clearInterval(this.sweeper);
  }

  private ensureWorker(): Worker {
    if (this.worker) {
      this.worker.ref();
      return this.worker;
    }
    // Resolved next to this file: src/hsm under vitest, dist/hsm when built (tsc copies the .cjs through).
    const worker = new Worker(new URL('./control-thread-worker.cjs', import.meta.url), {
      workerData: { modulePath: this.modulePath },
      resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8 },
    });
    worker.on('message', (m: Reply | 'ready') => this.onReply(m));
    worker.on('error', (e) => this.fail(worker, e));
    worker.on('exit', (code) => this.fail(worker, new Error(`exited with code ${code}`)));
    this.worker = worker;
    this.sweeper ??= setInterval(() => this.sweep(), Math.max(5, Math.min(100, this.timeoutMs / 4)));
    this.sweeper.unref();
    return worker;
  }

  private onReply(m: Reply | 'ready'): void {
    if (m === 'ready') return;
    const c = this.out.get(m.id);
    if (!c) return;
    this.out.delete(m.id);
    if (c.settle) {
      c.settle();
      if (!m.error) c.onLate?.(toBuffers(m.value));
    } else if (m.error) c.reject(new ControlThreadError(m.error.message, m.error.code));
    else c.resolve(toBuffers(m.value));
    // Referenced only while calls are out, so that a CLI command's process can end once its work is done.
    if (this.out.size === 0) this.worker?.unref();
  }

  /** The thread stopped: every call out fails as a device error (the connection recovers), a new thread serves next. */
  private fail(worker: Worker, cause: Error): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    const err = new HsmError('DeviceError', `the PKCS#11 control thread stopped (${cause.message})`);
    for (const c of this.out.values()) {
      if (c.settle) c.settle();
      else c.reject(err);
    }
    this.out.clear();
  }

  /** Calls past their budget fail with Timeout now; the thread is still busy with the oldest of them. */
  private sweep(): void {
    const limit = performance.now() - this.timeoutMs;
    for (const c of this.out.values()) {
      if (c.at > limit) break;
      if (c.settle) continue;
      const settled = new Promise<void>((resolve) => (c.settle = resolve));
      c.reject(Object.assign(new HsmError('Timeout', `the HSM did not answer within ${this.timeoutMs} ms`), { settled }));
    }
  }
}
