// The built CLI (dist/cli/main.js) in child processes for the operations tests: one-shot commands (`xks keys ...`,
// `xks audit verify`) and a long-running `xks serve` whose JSON log lines the test reads.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { MAIN, ROOT } from './built-cli.js';
import type { TestToken } from './test-token.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `xks <args>` against `token` (its env) with `configFile` (XKS_CONFIG); never throws on a non-zero exit. */
export async function runXks(token: TestToken, configFile: string, args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  try {
    const r = await promisify(execFile)('node', [MAIN, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...token.env, XKS_CONFIG: configFile, ...env },
      timeout: 30_000,
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string; killed?: boolean };
    if (err.killed) throw new Error(`xks ${args.join(' ')} timed out`);
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface ServeProcess {
  child: ChildProcess;
  /** Everything the process wrote so far (stdout and stderr). */
  output(): string;
  /** The JSON log lines written so far. */
  logLines(): Record<string, any>[];
  /** Waits until `pred` holds for the output (polling), or fails with the output after `timeoutMs`. */
  waitFor(pred: (out: string) => boolean, timeoutMs?: number, what?: string): Promise<void>;
  /** Resolves with the exit code and signal once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `xks serve --config <file> <args>` on `token`. */
export function spawnServe(token: TestToken, configFile: string, args: string[] = [], env: Record<string, string> = {}): ServeProcess {
  const child = spawn('node', [MAIN, 'serve', '--config', configFile, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...token.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    output: () => out,
    logLines: () =>
      out
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
      while (!pred(out)) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${what}; output so far:\n${out.slice(-4000)}`);
        if (child.exitCode !== null) throw new Error(`xks serve exited (${child.exitCode}) while waiting for ${what}:\n${out.slice(-4000)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    exited,
  };
}

/** Counts the occurrences of `s` in `text`. */
export function count(text: string, s: string): number {
  return text.split(s).length - 1;
}
