// pino JSON logs. Redaction is a safety net: the code never passes plaintext, key material, PINs or secrets to a log.
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'xks-proxy' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ['pin', 'secret', 'plaintext', '*.pin', '*.secret', '*.plaintext', 'authorization', 'headers.authorization'],
        censor: '[redacted]',
      },
    },
    // Asynchronous stdout: one line per request must not cost a blocking write per request. pino flushes it at exit.
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
