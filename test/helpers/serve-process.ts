// A long-running `xks serve` (the built CLI, in a child process) whose JSON log lines the test reads, and a free port
// for its listeners. One-shot commands: runXks (built-cli.ts).
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { startXks, type CliProcess } from './built-cli.js';
import type { TestToken } from './test-token.js';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface ServeProcess extends CliProcess {
  /** The JSON log lines written so far. */
  logLines(): Record<string, any>[];
  /** Waits until `pred` holds for the output (polling), or fails with the output after `timeoutMs`. */
  waitFor(pred: (out: string) => boolean, timeoutMs?: number, what?: string): Promise<void>;
}

/** Spawns `xks serve --config <file> <args>` on `token`. */
export function spawnServe(token: TestToken, configFile: string, args: string[] = [], env: Record<string, string> = {}): ServeProcess {
  const run = startXks(['serve', '--config', configFile, ...args], { token, env });
  const { child, output } = run;
  return {
    ...run,
    logLines: () =>
      output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .flatMap((l) => {
          try {
            return [JSON.parse(l) as Record<string, any>];
          } catch {
            return [];
          }
        }),
    waitFor: async (pred, timeoutMs = 20_000, what = 'a log line') => {
      const until = Date.now() + timeoutMs;
      while (!pred(output())) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${what}; output so far:\n${output().slice(-4000)}`);
        if (child.exitCode !== null) throw new Error(`xks serve exited (${child.exitCode}) while waiting for ${what}:\n${output().slice(-4000)}`);
        await sleep(50);
      }
    },
  };
}

export interface ListeningServe extends ServeProcess {
  /** The XKS HTTP listener's URL, as the process logged it (its config may ask for port 0). */
  url: string;
  /** SIGTERM, then SIGKILL if it has not exited within 10 s. */
  stop(): Promise<void>;
}

/** spawnServe, resolved once the process listens (within 30 s, or it is killed and this fails with its output). */
export async function serveListening(token: TestToken, configFile: string, args: string[] = []): Promise<ListeningServe> {
  const serve = spawnServe(token, configFile, args);
  const listening = /"http":"127\.0\.0\.1:(\d+)".*xks proxy listening/;
  try {
    await serve.waitFor((out) => listening.test(out), 30_000, 'xks serve to listen');
  } catch (e) {
    serve.child.kill('SIGKILL');
    throw e;
  }
  const { child } = serve;
  return {
    ...serve,
    url: `http://127.0.0.1:${listening.exec(serve.output())![1]}`,
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await Promise.race([serve.exited, sleep(10_000).then(() => child.kill('SIGKILL'))]);
    },
  };
}

/** Counts the occurrences of `s` in `text`. */
export function count(text: string, s: string): number {
  return text.split(s).length - 1;
}
