// pino JSON logs. What is logged is built from typed records that have no field for plaintext, key material, PINs or
// secrets (the request log is xks/request-log.ts's RequestLog); test/obs/log-secrets.test.ts greps a run's log to
// prove it. No redaction pass: it would cost more per request line than the line itself.
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/** ISO time, formatted once per millisecond: thousands of request lines a second share a few hundred strings. */
let lastMs = 0;
let lastTime = '';
function isoTimeCached(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
}

/** The message of the one line per XKS request: the only line that may wait in the buffer. */
export const REQUEST_LINE = 'xks request';

export function createLogger(level: string, destination?: DestinationStream): Logger {
  // Asynchronous, buffered stdout: one line per request must cost neither a blocking write nor a thread-pool write
  // of its own (~15 us each at 1,800 requests/s). Request lines go out once 4 KiB are waiting, and at least every
  // 100 ms; pino flushes the rest at exit.
  const dest = destination ?? pino.destination({ dest: 1, sync: false, minLength: 4096, periodicFlush: 100 });
  // The stream's own flush, without a callback: pino's logger.flush() passes one, and SonicBoom adds a 'drain' and an
  // 'error' listener per call while a write is out, so a burst of warnings piled them up (MaxListenersExceededWarning)
  // and asked for an fsync of stdout each.
  const flush = (dest as { flush?: () => void }).flush?.bind(dest);
  return pino(
    {
      level,
      base: { service: 'xks-proxy' },
      timestamp: isoTimeCached,
      hooks: {
        // Events (start-up, reloads, recoveries, warnings) go out at once, in order with the request lines before
        // them; only request lines wait for the buffer.
        logMethod(args, method) {
          method.apply(this, args);
          if (flush && args[args.length - 1] !== REQUEST_LINE) {
            try {
              flush();
            } catch {
              // the stream is closed (the process is exiting): nothing more can be written
            }
          }
        },
      },
    },
    dest,
  );
}
