// Runs the built `xks migrate aws-sample` (dist/cli/main.js) in a child process, as an operator would.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { MAIN, ROOT } from '../helpers/built-cli.js';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export const FIXTURES = new URL('../fixtures/aws-sample/', import.meta.url);
export const EXAMPLES = ['settings', 'settings_cloudhsm', 'settings_docker', 'settings_luna', 'settings_nshield', 'settings_softhsmv2', 'settings_softhsmv2_osx'];

export async function xks(args: string[], env: Record<string, string> = {}): Promise<Run> {
  try {
    const r = await promisify(execFile)('node', [MAIN, ...args], { cwd: ROOT, env: { ...process.env, ...env }, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string; killed?: boolean };
    if (err.killed) throw new Error(`xks ${args.join(' ')} timed out`);
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}
