// A stalled HSM without touching the HSM: every thread of libuv's pool in this process (where the test proxy runs)
// is blocked opening a FIFO that nobody writes (in the kernel, no CPU used), so the PKCS#11 calls made on that pool
// (callMode async: pkcs11js's *Async forms) queue behind them and do not answer. A proxy under test puts
// STALLABLE_HSM in its hsm config (the SoftHSM profile's own default, callMode thread, does not use that pool; the
// call thread's timeouts are tested in test/hsm/call-thread.test.ts).
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFile } from 'node:fs';
import { join } from 'node:path';

/** hsm config that sends AES-GCM calls to libuv's pool, where stallThreadPool() can hold them. */
export const STALLABLE_HSM = { callMode: 'async' } as const;

let fifos = 0;

export interface Stall {
  /** Opens the writer (every blocked reader wakes), closes it (end of file) and waits for the readers to finish. */
  release(): Promise<void>;
}

/** Blocks every thread of the pool until release(); `dir` holds the FIFO. */
export function stallThreadPool(dir: string): Stall {
  const fifo = join(dir, `stall-${process.pid}-${++fifos}.fifo`);
  execFileSync('mkfifo', [fifo]);
  const threads = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  // Exactly one reader per thread: an extra one would open the FIFO after the writer closed and block for ever.
  const readers = Array.from({ length: threads }, () => new Promise<void>((resolve) => readFile(fifo, () => resolve())));
  let released = false;
  return {
    release: async () => {
      if (released) return;
      released = true;
      closeSync(openSync(fifo, 'w'));
      await Promise.all(readers);
    },
  };
}
