// The built CLI (dist/cli/main.js), rebuilt when any source file is newer (scripts/test.sh builds before the suite), and
// the one way tests run it as an operator would, in a child process: runXks for a command that ends, startXks for one
// the test waits on, stops or kills itself. runProcess is the same for any other program (a shell script the docs hold).
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestToken } from './test-token.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const MAIN = join(ROOT, 'dist/cli/main.js');

export function ensureBuilt(): void {
  const newest = (dir: string): number =>
    Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)));
  if (existsSync(MAIN) && statSync(MAIN).mtimeMs >= newest(join(ROOT, 'src'))) return;
  execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'pipe' });
}

/** How a process ended and what it wrote. */
export interface CliRun {
  /** The exit code; -1 when a signal ended it. */
  code: number;
  stdout: string;
  stderr: string;
  /** When the process started and ended (ms since epoch). */
  startedMs: number;
  endedMs: number;
}

export interface CliOptions {
  /** The token the command reaches: what a child process needs in its environment for it (SoftHSM: SOFTHSM2_CONF). */
  token?: Pick<TestToken, 'env'>;
  /** The config file, as XKS_CONFIG. */
  configFile?: string;
  /** Set last, over this process's environment; undefined removes a variable. */
  env?: Record<string, string | undefined>;
  /** Written to stdin, which is then closed (without it, stdin stays an open pipe nobody writes). */
  input?: string;
  /** Default: the repository's root. */
  cwd?: string;
  /** A run still going after this fails the test rather than returning (default 60 s). */
  timeoutMs?: number;
}

function childEnv(o: Omit<CliOptions, 'input' | 'timeoutMs'>): Record<string, string | undefined> {
  return { ...process.env, ...o.token?.env, ...(o.configFile !== undefined ? { XKS_CONFIG: o.configFile } : {}), ...o.env };
}

/** Runs `command args` to its end; never throws on a non-zero exit, only when it runs past its timeout. */
export function runProcess(command: string, args: string[], opts: CliOptions = {}): Promise<CliRun> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const startedMs = Date.now();
  return new Promise((resolve, reject) => {
    const child = execFile(command, args, { cwd: opts.cwd ?? ROOT, env: childEnv(opts) as NodeJS.ProcessEnv, timeout: timeoutMs }, (e, stdout, stderr) => {
      const err = e as (Error & { code?: number | string; killed?: boolean }) | null;
      if (err?.killed) return reject(new Error(`${command} ${args.join(' ')} timed out after ${timeoutMs} ms:\n${stdout}\n${stderr}`));
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, startedMs, endedMs: Date.now() });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

/** Runs `xks <args>` (the built CLI) to its end; never throws on a non-zero exit. */
export function runXks(args: string[], opts: CliOptions = {}): Promise<CliRun> {
  return runProcess('node', [MAIN, ...args], opts);
}

export interface CliProcess {
  child: ChildProcess;
  /** Everything the process wrote so far (stdout and stderr). */
  output(): string;
  /** Resolves with the exit code and signal once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `xks <args>` in the background (stdin closed); the test waits for it, stops or kills it. */
export function startXks(args: string[], opts: Omit<CliOptions, 'input' | 'timeoutMs'> = {}): CliProcess {
  const child = spawn('node', [MAIN, ...args], { cwd: opts.cwd ?? ROOT, env: childEnv(opts) as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, output: () => out, exited };
}
