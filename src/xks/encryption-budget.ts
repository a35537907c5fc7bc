// This process's share of each key version's encryptions (keys/encryption-blocks.ts holds the token side). Encrypt
// counts each request against the blocks this process reserved in the HSM: one comparison and one increment. When a
// quarter of the latest block is left, the next one is reserved in the background, so no request waits for the HSM
// except a version's first in this process. Past the version's limit no block is granted and Encrypt is refused.
import type { KeyStore } from '../hsm/key-store.js';
import type { KeyVersion } from '../keys/catalogue.js';
import { claimBlock } from '../keys/encryption-blocks.js';
import type { EncryptionLimits } from '../keys/encryption-limits.js';
import { XksError } from './errors.js';

/** A process's first block of a version is this fraction of the largest, and each next one twice the one before. */
const FIRST_BLOCK_DIVISOR = 64;
/** After a claim failed in the background, the next background attempt waits this long (a request that runs out does not). */
const RETRY_AFTER_MS = 1_000;
const LOG_AGAIN_AFTER_MS = 60_000;

interface Counter {
  readonly keyId: string;
  readonly version: number;
  /** Encryptions this process counted under the version. */
  used: number;
  /** Encryptions this process reserved in the HSM (the sum of its blocks). */
  limit: number;
  /** Below this, a request only counts; from it, the next block is reserved (a quarter of the latest one left). */
  soft: number;
  /** The size asked for last (blocks double, up to perBlock). */
  lastAsked: number;
  /** Encryptions reserved by the whole fleet when this process last looked (the metric). */
  reserved: number;
  /** The version's limit is reached: no block will be granted any more. */
  exhausted: boolean;
  /** The last claim granted nothing because other processes claimed the last room at the same moment. */
  contended: boolean;
  claiming: Promise<void> | undefined;
  /** When a claim last failed or was contended (performance.now()): background claims wait a moment after it. */
  failedAt: number;
  failureLoggedAt: number;
}

export interface EncryptionCount {
  keyId: string;
  version: number;
  /** Encryptions made by this process. */
  encryptions: number;
  /** Encryptions reserved by the fleet, as last read from the token. */
  reserved: number;
}

export class EncryptionBudget {
  /** Per version object of the catalogue: found without building a string on every request. */
  private readonly byVersion = new WeakMap<KeyVersion, Counter>();
  /**
   * Per key, version and version date: a key deleted and made again under the same id has new material under the same
   * version numbers, and must not inherit the old material's blocks.
   */
  private readonly counters = new Map<string, Counter>();
  private readonly firstBlock: number;

  constructor(
    private readonly hsm: KeyStore,
    private readonly limits: EncryptionLimits,
    private readonly onEvent: (event: string, detail: Record<string, unknown>) => void = () => undefined,
  ) {
    this.firstBlock = Math.max(1, Math.floor(limits.perBlock / FIRST_BLOCK_DIVISOR));
  }

  /**
   * Count one encryption under `v` of `keyId`: undefined when counted, a promise when this process must reserve a block
   * first (it rejects with InvalidStateException once the version's limit is reached).
   */
  take(keyId: string, v: KeyVersion): Promise<void> | undefined {
    const c = this.byVersion.get(v) ?? this.counterFor(keyId, v);
    if (c.used < c.soft) {
      c.used++;
      return undefined;
    }
    return this.takeSlow(c);
  }

  /**
   * Reserve this process's first block of `v` now (warm-up, before the listeners open), so that the version's first
   * request does not wait for the HSM. Nothing is counted.
   */
  async prepare(keyId: string, v: KeyVersion): Promise<void> {
    const c = this.byVersion.get(v) ?? this.counterFor(keyId, v);
    if (c.limit === 0 && !c.exhausted) await this.claim(c);
  }

  /** Every version this process encrypted under (the metrics read it at scrape time; no HSM access). */
  counts(): EncryptionCount[] {
    return [...this.counters.values()].map((c) => ({ keyId: c.keyId, version: c.version, encryptions: c.used, reserved: c.reserved }));
  }

  private counterFor(keyId: string, v: KeyVersion): Counter {
    const name = `${keyId}\u0000${v.version}\u0000${v.createdAt?.getTime() ?? ''}`;
    let c = this.counters.get(name);
    if (!c) {
      c = { keyId, version: v.version, used: 0, limit: 0, soft: 0, lastAsked: 0, reserved: 0, exhausted: false, contended: false, claiming: undefined, failedAt: -Infinity, failureLoggedAt: -Infinity };
      this.counters.set(name, c);
    }
    this.byVersion.set(v, c);
    return c;
  }

  private takeSlow(c: Counter): Promise<void> | undefined {
    if (c.used < c.limit) {
      c.used++;
      // Ahead of need: the rest of this block serves while the next one is reserved.
      if (!c.claiming && !c.exhausted && performance.now() - c.failedAt >= RETRY_AFTER_MS) {
        c.soft = c.limit;
        this.claim(c).catch(() => undefined);
      }
      return undefined;
    }
    if (c.exhausted) throw this.refusal(c);
    return this.claim(c).then(() => {
      // Other requests waiting for the same block may have used it up: then another one is reserved.
      if (c.used >= c.limit && !c.exhausted && c.contended) {
        // Other processes took the last room at the same moment, again and again: KMS retries a throttled request.
        throw new XksError('ThrottlingException', `reserving encryptions of external key ${c.keyId} version ${c.version} conflicted with other processes; retry`);
      }
      // Counted like any request: the next block is reserved only once this one is three quarters used.
      if (c.used < c.soft) {
        c.used++;
        return undefined;
      }
      return this.takeSlow(c);
    });
  }

  private claim(c: Counter): Promise<void> {
    c.claiming ??= this.reserve(c).finally(() => (c.claiming = undefined));
    return c.claiming;
  }

  private async reserve(c: Counter): Promise<void> {
    const want = c.lastAsked === 0 ? this.firstBlock : Math.min(this.limits.perBlock, c.lastAsked * 2);
    try {
      const r = await claimBlock(this.hsm, c.keyId, c.version, want, this.limits.perVersion);
      c.lastAsked = want;
      c.reserved = Math.max(c.reserved, r.reserved);
      c.limit += r.granted;
      if (r.exhausted) {
        c.exhausted = true;
        this.onEvent('encryption-limit-reached', { keyId: c.keyId, version: c.version, reserved: r.reserved, limit: this.limits.perVersion });
      } else if (r.reserved >= this.limits.rotateAfter && r.reserved - r.granted < this.limits.rotateAfter) {
        // Once, by the process whose block crossed the threshold.
        this.onEvent('encryption-rotation-due', { keyId: c.keyId, version: c.version, reserved: r.reserved, rotateAfter: this.limits.rotateAfter });
      }
      c.contended = r.contended;
      if (r.contended) c.failedAt = performance.now();
      // The next block is reserved when a quarter of this one is left (all of it, once nothing more can be granted).
      c.soft = c.exhausted ? c.limit : c.limit - Math.floor(r.granted / 4);
    } catch (e) {
      // One line per incident, not one per request that ran out meanwhile (each gets its own error).
      if (performance.now() - c.failureLoggedAt >= LOG_AGAIN_AFTER_MS) {
        c.failureLoggedAt = performance.now();
        this.onEvent('encryption-block-failed', { keyId: c.keyId, version: c.version, reason: (e as Error).message });
      }
      c.failedAt = performance.now();
      c.soft = c.limit; // requests go on using what is left; the next one past it tries again
      throw e;
    }
  }

  private refusal(c: Counter): XksError {
    return new XksError(
      'InvalidStateException',
      `external key ${c.keyId} version ${c.version} has reached its limit of ${this.limits.perVersion} encryptions (NIST SP 800-38D, random IVs): rotate the key`,
    );
  }
}
