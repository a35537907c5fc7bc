// Waiting for what another process or a background task does, by asking again every 100 ms.
import { setTimeout as sleep } from 'node:timers/promises';

/** Calls `probe` until it returns true or `withinMs` passes; returns how long it took (or throws with the last value). */
export async function pollUntil(what: string, withinMs: number, probe: () => Promise<boolean | { ok: boolean; last: unknown }>): Promise<number> {
  const start = Date.now();
  let last: unknown;
  for (;;) {
    const got = await probe();
    const ok = typeof got === 'boolean' ? got : got.ok;
    if (typeof got !== 'boolean') last = got.last;
    if (ok) return Date.now() - start;
    if (Date.now() - start > withinMs) throw new Error(`${what}: not seen within ${withinMs} ms (last: ${JSON.stringify(last)})`);
    await sleep(100);
  }
}
