// The deep health check (spec "GetHealthStatus"): a real encrypt and decrypt on a dedicated key, never a customer key.
// The result is cached (at most 60 s); a slow check answers from the last result rather than past KMS's 250 ms budget.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { KeyStore } from '../hsm/key-store.js';
import { aes256KeyTemplate } from '../hsm/templates.js';
import { buildGcmAad } from './aad.js';

export type EkmHealth = 'ACTIVE' | 'DEGRADED' | 'UNAVAILABLE';

export interface HealthResult {
  status: EkmHealth;
  checkedAt: number;
  detail?: string;
}

export interface HealthOptions {
  keyLabel: string;
  maxAgeMs: number;
  /** How long a request waits for a fresh check before answering from the previous result. */
  waitMs: number;
  fleetSize: number;
  version: string;
  /**
   * How long the oldest call out to the HSM has waited (ms), and past how many ms that means the HSM does not answer:
   * a cached ACTIVE is not repeated while the HSM hangs.
   */
  stalledMs?: () => number;
  stalledAfterMs?: number;
  /** Something else the proxy needs that is not well (the audit trail cannot be sealed): health says so. */
  degradedBy?: (() => { status: Exclude<EkmHealth, 'ACTIVE'>; detail: string } | undefined) | undefined;
}

const RANK: Record<EkmHealth, number> = { ACTIVE: 0, DEGRADED: 1, UNAVAILABLE: 2 };

export class HealthChecker {
  private last: HealthResult | undefined;
  /**
   * Under --workers: how many of this process's sibling workers fail their health check (the primary says, every few
   * seconds). A worker that is fine answers DEGRADED while a sibling is not: KMS's requests reach every worker, so the
   * answer is the process's, whichever worker gives it.
   */
  siblingsUnavailable = 0;
  private running: Promise<HealthResult> | undefined;

  constructor(
    private readonly hsm: KeyStore,
    private readonly opts: HealthOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /** Find or create the health key: AES-256, sensitive, non-extractable, used for nothing else. */
  private async healthKey() {
    const found = await this.hsm.findSecretKeys({ label: this.opts.keyLabel, keyType: 'aes' });
    if (found[0]) return found[0].handle;
    const made = await this.hsm.generateKey(aes256KeyTemplate({ label: this.opts.keyLabel, encrypt: true, decrypt: true, exportable: false }));
    return made.handle;
  }

  private async runCheck(): Promise<HealthResult> {
    try {
      const key = await this.healthKey();
      const probe = randomBytes(32);
      const aad = buildGcmAad(Buffer.from('xks-health'), undefined);
      const out = await this.hsm.encryptGcm(key, probe, aad);
      const back = await this.hsm.decryptGcm(key, out.iv, out.ciphertext, out.tag, aad);
      if (!timingSafeEqual(back, probe)) return { status: 'UNAVAILABLE', checkedAt: this.now(), detail: 'round trip mismatch' };
      return { status: 'ACTIVE', checkedAt: this.now() };
    } catch (e) {
      return { status: 'UNAVAILABLE', checkedAt: this.now(), detail: (e as Error).message };
    }
  }

  /** Start a check unless one is running; remember its result. */
  refresh(): Promise<HealthResult> {
    this.running ??= this.runCheck().then((r) => {
      this.last = r;
      this.running = undefined;
      return r;
    });
    return this.running;
  }

  /** The last result, without starting a check (metrics). */
  get latest(): HealthResult | undefined {
    return this.last;
  }

  /** The HSM's health (the deep check, cached), made worse by what `degradedBy` reports. */
  async current(): Promise<HealthResult> {
    const stalled = this.opts.stalledMs?.() ?? 0;
    if (stalled > (this.opts.stalledAfterMs ?? Infinity)) {
      return { status: 'UNAVAILABLE', checkedAt: this.now(), detail: `the HSM has not answered a call for ${Math.round(stalled)} ms` };
    }
    const r = await this.hsmHealth();
    const d = this.opts.degradedBy?.();
    return d && RANK[d.status] > RANK[r.status] ? { ...r, status: d.status, detail: d.detail } : r;
  }

  private async hsmHealth(): Promise<HealthResult> {
    const last = this.last;
    if (last && this.now() - last.checkedAt <= this.opts.maxAgeMs) return last;
    const fresh = this.refresh();
    if (!last || this.now() - last.checkedAt > 60_000) return fresh;
    let timer: NodeJS.Timeout | undefined;
    const stale = new Promise<HealthResult>((resolve) => (timer = setTimeout(() => resolve(last), this.opts.waitMs)));
    try {
      return await Promise.race([fresh, stale]);
    } finally {
      clearTimeout(timer);
    }
  }

  async response() {
    const r = await this.current();
    const info = this.hsm.info;
    return {
      body: {
        xksProxyFleetSize: this.opts.fleetSize,
        xksProxyVendor: 'xks-hsm-proxy project',
        xksProxyModel: `xks-hsm-proxy ${this.opts.version}`.slice(0, 64),
        ekmVendor: (info.manufacturer || 'unknown').slice(0, 64),
        ekmFleetDetails: [
          {
            id: (info.serial || info.label).slice(0, 64),
            model: `${info.model} ${info.libraryDescription} ${info.libraryVersion}`.trim().slice(0, 64),
            healthStatus: r.status === 'ACTIVE' && this.siblingsUnavailable > 0 ? ('DEGRADED' as const) : r.status,
          },
        ],
      },
    };
  }
}
