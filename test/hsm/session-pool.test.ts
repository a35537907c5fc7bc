// The session pool's own rules, with sessions that are plain numbers (the pool never calls PKCS#11 itself: its owner
// passes it open and close). A session from before a recovery or a library re-initialisation is never lent again.
import { describe, expect, it } from 'vitest';
import { SessionPool, type PooledSession } from '../../src/hsm/session-pool.js';

function pool(size = 2) {
  const state = { generation: 0, epoch: 0, opened: 0, closed: [] as number[] };
  const p = new SessionPool({
    size,
    acquireTimeoutMs: 50,
    open: async () => {
      const handle = Buffer.alloc(8);
      handle.writeUInt32LE(++state.opened, 0);
      return { handle, generation: state.generation, epoch: state.epoch };
    },
    close: async (s) => {
      state.closed.push(s.handle.readUInt32LE(0));
    },
    currentGeneration: () => state.generation,
    currentEpoch: () => state.epoch,
  });
  return { p, state };
}

const n = (s: PooledSession) => s.handle.readUInt32LE(0);

describe('SessionPool', () => {
  it('lends an idle session again', async () => {
    const { p } = pool();
    const a = await p.acquire();
    p.release(a);
    expect(n(p.tryAcquire()!)).toBe(n(a));
  });

  it('never lends again a session opened before a re-initialisation, even in the same recovery generation', async () => {
    const { p, state } = pool();
    const a = await p.acquire();
    // A re-initialisation (C_Finalize + C_Initialize) while the session was out: its number now means nothing.
    state.epoch++;
    p.release(a);
    expect(p.tryAcquire(), 'not lent again').toBeUndefined();
    expect(state.closed, 'and not closed: the library that opened it is gone').toEqual([]);
    const b = await p.acquire();
    expect(n(b)).not.toBe(n(a));
    expect(p.stats.open).toBe(1);
  });

  it('drops idle sessions of an ended epoch when it lends', async () => {
    const { p, state } = pool();
    const a = await p.acquire();
    p.release(a);
    state.epoch++;
    expect(p.tryAcquire()).toBeUndefined();
    expect(p.stats.open).toBe(0);
  });

  it('a session that fails to open leaves room for the next', async () => {
    let fail = true;
    const p = new SessionPool({
      size: 1,
      acquireTimeoutMs: 50,
      open: async () => {
        if (fail) throw new Error('CKR_DEVICE_ERROR');
        return { handle: Buffer.alloc(8), generation: 0, epoch: 0 };
      },
      close: async () => undefined,
      currentGeneration: () => 0,
      currentEpoch: () => 0,
    });
    await expect(p.acquire()).rejects.toThrow('CKR_DEVICE_ERROR');
    expect(p.stats.open).toBe(0);
    fail = false;
    expect(await p.acquire(), 'opened, not refused as a full pool').toBeDefined();
  });
});
