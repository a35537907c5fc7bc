// callMode "thread": AES-GCM calls run on one dedicated thread instead of the event loop or libuv's pool.
//
// Why: on an in-process token (SoftHSM) a C_EncryptInit + C_Encrypt pair costs ~15 us of CPU. On the event loop that
// is time no request is parsed or answered; on libuv's pool each call also costs a dispatch and a wake-up (~20 us of
// event-loop time each, measured). Here the calls a loop iteration produces go over in one message: their inputs are
// copied into one buffer that is moved (not cloned) to the thread, and the outputs come back the same way: ~5 us of
// event-loop time per call. An idle event loop makes its calls itself (see `busy`).
//
// The thread only calls C_*Init + C_Encrypt/C_Decrypt on sessions and keys the main thread owns (call-thread-worker.cjs);
// the main thread never uses a session while its call is out (the session pool lends it to one call at a time), and
// waits for calls out before it finalises the library (HsmConnection.drain).
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { HsmError } from './errors.js';
import type { Handle } from './module.js';

const FIELDS = 9; // must match call-thread-worker.cjs
const ENCRYPT = 0;
const DECRYPT = 1;

interface Call {
  op: typeof ENCRYPT | typeof DECRYPT;
  session: Handle;
  key: Handle;
  iv: Buffer;
  aad: Buffer;
  data: Buffer;
  outBytes: number;
  tagBits: number;
  resolve: (out: Buffer) => void;
  reject: (err: Error) => void;
  /** performance.now() when queued: the sweep times calls out from then. */
  at: number;
  /** Set when the call timed out: resolved once the thread has finished with the session. */
  settle?: () => void;
}

interface Reply {
  results: number[];
  errors: Record<number, { message: string; code: number | undefined }>;
  out: ArrayBuffer;
}

/** An error the thread reported, shaped like pkcs11js's own so that toHsmError names it the same way. */
export class CallThreadError extends Error {
  override readonly name = 'Pkcs11Error';
  constructor(
    message: string,
    readonly code?: number,
  ) {
    super(message);
  }
}

export class CallThread {
  private worker: Worker | undefined;
  private readonly queued: Call[] = [];
  /** Calls sent and not answered, by id; a Map keeps them in sending order, which is the thread's order. */
  private readonly sent = new Map<number, Call>();
  private nextId = 0;
  private flushing = false;
  private sweeper: NodeJS.Timeout | undefined;
  private loopBusy: boolean;
  private elu = performance.eventLoopUtilization();
  private readonly sampler: NodeJS.Timeout | undefined;
  private ready = false;
  /** Why the thread could not start, if it could not: calls are then made in place. */
  unusable: string | undefined;

  constructor(
    private readonly modulePath: string,
    private readonly timeoutMs: number,
    /** Event-loop utilisation (0..1) above which `busy` says yes; 0: always. */
    private readonly busyAt = 0.8,
    /** Told once if the thread cannot start. */
    private readonly onUnusable?: (reason: string) => void,
  ) {
    this.loopBusy = busyAt <= 0;
    if (busyAt > 0) {
      this.sampler = setInterval(this.sample, 100);
      this.sampler.unref();
    }
    // Started now, while the loop is idle: starting a thread takes tens of milliseconds, which the first calls of a
    // busy spell would otherwise wait for.
    this.start();
  }

  /**
   * Whether calls should come here. A call made in place costs the event loop ~16 us. Here it costs ~5 us when a loop
   * iteration sends many calls at once, but a lone call costs about as much as in place, plus two thread wake-ups and
   * the latency of the hop. So calls come here only when the loop is nearly saturated (at KMS's 1,800 requests/s one
   * process is about half busy). Measured over the last 100 ms; off again only below 60% of the threshold, so that it
   * does not flap.
   */
  get busy(): boolean {
    return this.loopBusy && this.unusable === undefined;
  }

  private readonly sample = (): void => {
    const now = performance.eventLoopUtilization();
    const u = performance.eventLoopUtilization(now, this.elu).utilization;
    this.elu = now;
    this.loopBusy = u >= (this.loopBusy ? this.busyAt * 0.6 : this.busyAt);
  };

  /** C_EncryptInit(AES-GCM) + C_Encrypt; resolves with ciphertext || tag (and whatever the HSM appends). */
  encrypt(session: Handle, key: Handle, iv: Buffer, aad: Buffer, plaintext: Buffer, outBytes: number, tagBits: number): Promise<Buffer> {
    return this.enqueue(ENCRYPT, session, key, iv, aad, plaintext, outBytes, tagBits);
  }

  /** C_DecryptInit(AES-GCM) + C_Decrypt of ciphertext || tag. */
  decrypt(session: Handle, key: Handle, iv: Buffer, aad: Buffer, input: Buffer, outBytes: number, tagBits: number): Promise<Buffer> {
    return this.enqueue(DECRYPT, session, key, iv, aad, input, outBytes, tagBits);
  }

  /** Calls sent to the thread, and the messages they went in. */
  readonly stats = { calls: 0, batches: 0 };

  /** How long the oldest call queued or out has waited (ms); 0 when none. */
  get oldestCallMs(): number {
    const first = this.sent.values().next().value ?? this.queued[0];
    return first ? performance.now() - first.at : 0;
  }

  /** How far past its budget the oldest call queued or out is (ms); 0 when none is. */
  get overdueMs(): number {
    return Math.max(0, this.oldestCallMs - this.timeoutMs);
  }

  /** Calls queued or out on the thread. */
  get pending(): number {
    return this.queued.length + this.sent.size;
  }

  /** Stop the thread; calls not yet answered fail with Closed. */
  close(): void {
    const err = new HsmError('Closed', 'the HSM connection is closed');
    for (const c of this.queued.splice(0)) c.reject(err);
    for (const c of this.sent.values()) c.reject(err);
    this.sent.clear();
    void this.worker?.terminate();
    this.worker = undefined;
    clearInterval(this.sampler);
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  private enqueue(
    op: Call['op'],
    session: Handle,
    key: Handle,
    iv: Buffer,
    aad: Buffer,
    data: Buffer,
    outBytes: number,
    tagBits: number,
  ): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      this.queued.push({ op, session, key, iv, aad, data, outBytes, tagBits, resolve, reject, at: performance.now() });
      if (!this.flushing) {
        this.flushing = true;
        // Everything this loop iteration asks for goes in one message.
        setImmediate(this.flush);
      }
    });
  }

  private readonly flush = (): void => {
    this.flushing = false;
    const calls = this.queued.splice(0);
    if (calls.length === 0) return;
    const worker = this.ensureWorker();
    let total = 0;
    for (const c of calls) total += c.session.length + c.key.length + c.iv.length + c.aad.length + c.data.length;
    const bytes = new ArrayBuffer(total);
    const view = new Uint8Array(bytes);
    const meta: number[] = [];
    let at = 0;
    for (const c of calls) {
      const id = this.nextId++;
      meta.push(id, c.op, at, c.session.length, c.iv.length, c.aad.length, c.data.length, c.outBytes, c.tagBits);
      for (const part of [c.session, c.key, c.iv, c.aad, c.data]) {
        view.set(part, at);
        at += part.length;
      }
      this.sent.set(id, c);
    }
    this.stats.calls += calls.length;
    this.stats.batches++;
    // The inputs are copied into one buffer that is moved to the thread: a Buffer cloned as is would carry its whole
    // 8 KiB pool slab with it.
    worker.postMessage({ meta, bytes }, [bytes]);
  };

  /**
   * True once the thread has loaded the library (at most `maxMs` from now); false when it did not in time or cannot
   * start. Start-up waits for it, so that the first busy spell does not queue calls behind the thread's start.
   */
  whenReady(maxMs: number): Promise<boolean> {
    if (this.ready || this.unusable !== undefined) return Promise.resolve(this.ready);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.readyWaiters.delete(waiter);
        resolve(ok);
      };
      const waiter = () => done(this.ready);
      const timer = setTimeout(() => done(false), maxMs);
      this.readyWaiters.add(waiter);
    });
  }

  private readonly readyWaiters = new Set<() => void>();

  private readonly onReply = (reply: Reply | 'ready'): void => {
    if (reply === 'ready') {
      this.ready = true;
      for (const w of [...this.readyWaiters]) w();
      return;
    }
    const { results, errors, out } = reply;
    let offset = 0;
    for (let i = 0; i < results.length; i += 2) {
      const id = results[i]!;
      const length = results[i + 1]!;
      const c = this.sent.get(id);
      if (!c) continue; // failed by close()
      this.sent.delete(id);
      const start = offset;
      offset += c.outBytes;
      if (c.settle) {
        c.settle(); // timed out earlier: its caller has its answer; the session may be discarded now
        continue;
      }
      if (length < 0) c.reject(new CallThreadError(errors[id]?.message ?? 'PKCS#11 call failed', errors[id]?.code));
      else c.resolve(Buffer.from(out, start, length));
    }
    if (this.pending === 0) this.worker?.unref();
  };

  private ensureWorker(): Worker {
    const worker = this.worker ?? this.start();
    // Referenced only while calls are out, so that a CLI command's process can end once its work is done.
    worker.ref();
    return worker;
  }

  /** Start the thread (unreferenced). */
  private start(): Worker {
    // Resolved next to this file: src/hsm under vitest, dist/hsm when built (tsc copies the .cjs through).
    const worker = new Worker(new URL('./call-thread-worker.cjs', import.meta.url), {
      workerData: { modulePath: this.modulePath },
      // Its own small heap: it allocates one output buffer per batch and nothing else.
      resourceLimits: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 8 },
    });
    worker.on('message', this.onReply);
    worker.on('error', (e) => this.fail(worker, e));
    worker.on('exit', (code) => this.fail(worker, new Error(`exited with code ${code}`)));
    this.worker = worker;
    this.sweeper = setInterval(this.sweep, Math.max(5, Math.min(50, this.timeoutMs / 4)));
    this.sweeper.unref();
    worker.unref();
    return worker;
  }

  /**
   * The thread stopped: every call out fails as a device error (the connection recovers and retries it), and a new
   * thread serves the next calls, unless this one never started.
   */
  private fail(worker: Worker, cause: Error): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    if (!this.ready && this.unusable === undefined) {
      // It never loaded the library (a broken install, not a failing HSM): make calls in place from now on rather
      // than fail them under load.
      this.unusable = cause.message;
      this.onUnusable?.(cause.message);
      for (const w of [...this.readyWaiters]) w();
    }
    this.ready = false;
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    const err = new HsmError('DeviceError', `the PKCS#11 call thread stopped (${cause.message})`);
    for (const c of this.sent.values()) {
      if (c.settle) c.settle();
      else c.reject(err);
    }
    this.sent.clear();
  }

  /** Calls past their budget fail with Timeout now; their sessions are thrown away once the thread returns them. */
  private readonly sweep = (): void => {
    const limit = performance.now() - this.timeoutMs;
    for (const c of this.sent.values()) {
      if (c.at > limit) break; // in sending order: the rest are younger
      if (c.settle) continue;
      const settled = new Promise<void>((resolve) => (c.settle = resolve));
      const err = new HsmError('Timeout', `the HSM did not answer within ${this.timeoutMs} ms`);
      c.reject(Object.assign(err, { settled }));
    }
  };
}
