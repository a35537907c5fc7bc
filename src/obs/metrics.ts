// Prometheus metrics (prom-client), served on the operations listener. Request metrics are observed from each
// request's log line; HSM call latency from the connection; gauges (sessions, health, keys by state, credential age,
// certificate expiry) are read when scraped, from what the process already holds: a scrape never calls the HSM (keys
// by state come from a count made in the background, key-count.ts). Under `xks serve --workers N` each worker records into its own default
// registry and the primary serves them aggregated (prom-client's AggregatorRegistry).
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import client from 'prom-client';
import { FastCounter, FastHistogram } from './fast-metrics.js';
import type { KeyCount } from './key-count.js';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

// What the scrape-time gauges read, as the shapes they need: obs imports nothing from the rest of src (docs/design.md,
// "Layers"), and proxy.ts passes the real objects, which have these shapes.

/** The token and its session pool (hsm/key-store.ts's HsmOperations). */
export interface MetricsHsm {
  readonly info: { readonly label: string; readonly serial: string };
  readonly sessionStats: { open: number; idle: number; waiting: number; size: number; waited: number; refused: number };
  readonly callThreadStats: { calls: number; batches: number };
}

/** The last deep health check (xks/health.ts's HealthChecker). */
export interface MetricsHealth {
  readonly latest: { status: string; checkedAt: number } | undefined;
}

/** Encryptions per key version (xks/encryption-budget.ts's EncryptionBudget). */
export interface MetricsEncryptions {
  counts(): readonly { keyId: string; version: number; encryptions: number; reserved: number }[];
}

type SecretRef = { env: string } | { file: string };

/** The parts of the loaded config file the credential and certificate gauges read (config/load.ts's LoadedConfig). */
export interface MetricsConfig {
  file: string;
  config: {
    prefixes: readonly { path: string; credentials: readonly { accessKeyId: string; created?: string | undefined; secret: SecretRef }[] }[];
    listeners: { https?: { certFile: string } | undefined };
  };
}

export interface MetricsSources {
  hsm: MetricsHsm;
  health: MetricsHealth;
  /** Keys by state; absent in a worker that does not count them (the primary shows the first worker's count). */
  keyCount?: KeyCount | undefined;
  encryptions: MetricsEncryptions;
  config: () => MetricsConfig;
}

export class Metrics {
  readonly registry: client.Registry;
  private readonly requests: FastCounter;
  private readonly legacyDecrypts: FastCounter;
  private readonly latency: FastHistogram;
  private readonly hsmLatency: FastHistogram;
  private sources: MetricsSources | undefined;

  constructor(registry: client.Registry = client.register) {
    this.registry = registry;
    client.collectDefaultMetrics({ register: registry, prefix: 'xks_process_' });
    this.requests = new FastCounter('xks_requests_total', 'XKS requests by operation, outcome and error name', registry);
    this.legacyDecrypts = new FastCounter(
      'xks_legacy_decrypts_total',
      "Decrypts that authenticated only under AWS's sample proxy's AAD layout (ciphertexts it made), by prefix and key",
      registry,
    );
    this.latency = new FastHistogram(
      'xks_request_duration_seconds',
      'XKS request latency, from the first byte read to the response written',
      LATENCY_BUCKETS,
      registry,
    );
    this.hsmLatency = new FastHistogram(
      'xks_hsm_call_duration_seconds',
      'PKCS#11 AES-GCM call latency of successful calls (Init to result, session already borrowed)',
      LATENCY_BUCKETS,
      registry,
    );
    const self = this;
    new client.Gauge({
      name: 'xks_hsm_sessions',
      help: 'HSM session pool: open, idle and busy sessions, callers waiting, configured size',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const s = self.sources?.hsm.sessionStats;
        if (!s) return;
        this.set({ state: 'open' }, s.open);
        this.set({ state: 'idle' }, s.idle);
        this.set({ state: 'busy' }, s.open - s.idle);
        this.set({ state: 'waiting' }, s.waiting);
        this.set({ state: 'size' }, s.size);
      },
    });
    new client.Counter({
      name: 'xks_hsm_session_waits_total',
      help: 'Operations that waited for a session (waited) or were refused because none came free or the queue was full (refused)',
      labelNames: ['result'],
      registers: [registry],
      collect() {
        const s = self.sources?.hsm.sessionStats;
        if (!s) return;
        this.reset();
        this.inc({ result: 'waited' }, s.waited);
        this.inc({ result: 'refused' }, s.refused);
      },
    });
    new client.Counter({
      name: 'xks_hsm_call_thread_calls_total',
      help: 'AES-GCM calls sent to the PKCS#11 call thread (callMode thread, while the event loop is busy); the rest ran in place',
      registers: [registry],
      collect() {
        const s = self.sources?.hsm.callThreadStats;
        if (!s) return;
        this.reset();
        this.inc(s.calls);
      },
    });
    new client.Counter({
      name: 'xks_hsm_call_thread_messages_total',
      help: 'Messages that carried those calls to the call thread (calls made in the same event-loop turn share one)',
      registers: [registry],
      collect() {
        const s = self.sources?.hsm.callThreadStats;
        if (!s) return;
        this.reset();
        this.inc(s.batches);
      },
    });
    new client.Gauge({
      name: 'xks_hsm_up',
      aggregator: 'min', // across workers (AggregatorRegistry)
      help: 'Deep health of the HSM (1 ACTIVE, 0 otherwise) by token, from the last health check',
      labelNames: ['token', 'serial'],
      registers: [registry],
      collect() {
        const src = self.sources;
        const r = src?.health.latest;
        if (!src || !r) return;
        this.set({ token: src.hsm.info.label, serial: src.hsm.info.serial }, r.status === 'ACTIVE' ? 1 : 0);
      },
    });
    new client.Gauge({
      name: 'xks_health_check_age_seconds',
      aggregator: 'max', // across workers (AggregatorRegistry)
      help: 'Seconds since the last deep health check',
      registers: [registry],
      collect() {
        const r = self.sources?.health.latest;
        if (r) this.set((Date.now() - r.checkedAt) / 1000);
      },
    });
    new client.Gauge({
      name: 'xks_keys',
      aggregator: 'first', // across workers (AggregatorRegistry)
      help: 'External keys in the token by state, as last counted in the background (hsm.keyCountIntervalMs)',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const counted = self.sources?.keyCount?.latest;
        if (!counted) return;
        for (const [state, n] of counted.byState) this.set({ state }, n);
      },
    });
    new client.Gauge({
      name: 'xks_keys_count_age_seconds',
      aggregator: 'max', // across workers (AggregatorRegistry)
      help: 'Seconds since xks_keys was counted (a count that fails keeps the previous one)',
      registers: [registry],
      collect() {
        const counted = self.sources?.keyCount?.latest;
        if (counted) this.set((Date.now() - counted.countedAt) / 1000);
      },
    });
    // From this process's counters: no HSM access at scrape time.
    new client.Counter({
      name: 'xks_encryptions_total',
      help: 'Encryptions by this proxy per external key and version (NIST SP 800-38D allows 2^32 per version with random IVs)',
      labelNames: ['key', 'version'],
      registers: [registry],
      collect() {
        const counts = self.sources?.encryptions.counts();
        if (!counts) return;
        this.reset();
        for (const c of counts) this.inc({ key: c.keyId, version: String(c.version) }, c.encryptions);
      },
    });
    new client.Gauge({
      name: 'xks_encryptions_reserved',
      aggregator: 'max', // across workers (AggregatorRegistry): the latest fleet-wide total any of them read
      help: 'Encryptions reserved in the HSM per external key and version by every proxy on the token, as last read (an upper bound of those made)',
      labelNames: ['key', 'version'],
      registers: [registry],
      collect() {
        const counts = self.sources?.encryptions.counts();
        if (!counts) return;
        this.reset();
        for (const c of counts) this.set({ key: c.keyId, version: String(c.version) }, c.reserved);
      },
    });
    new client.Gauge({
      name: 'xks_sigv4_credential_age_seconds',
      aggregator: 'first', // across workers (AggregatorRegistry)
      help: 'Age of each SigV4 credential: from its `created` date in the config, else its secret file changed',
      labelNames: ['prefix', 'access_key_id'],
      registers: [registry],
      collect() {
        const src = self.sources;
        if (!src) return;
        this.reset();
        const loaded = src.config();
        for (const p of loaded.config.prefixes) {
          for (const c of p.credentials) {
            const since = credentialSince(c, loaded.file);
            if (since !== undefined) this.set({ prefix: p.path, access_key_id: c.accessKeyId }, (Date.now() - since) / 1000);
          }
        }
      },
    });
    new client.Gauge({
      name: 'xks_tls_certificate_expiry_days',
      aggregator: 'min', // across workers (AggregatorRegistry)
      help: 'Days until the HTTPS listener certificate expires (KMS alarms before it does)',
      labelNames: ['listener'],
      registers: [registry],
      collect() {
        this.reset();
        if (self.servedCertValidTo !== undefined) this.set({ listener: 'https' }, (self.servedCertValidTo - Date.now()) / 86_400_000);
      },
    });
  }

  /**
   * When the HTTPS listener's certificate expires: read once, as the listener reads it at start-up. The listener keeps
   * that certificate until a restart, so a file replaced since must not hide its expiry (KMS sees the one served).
   */
  private servedCertValidTo: number | undefined;

  /** What the scrape-time gauges read. */
  bind(sources: MetricsSources): void {
    this.sources = sources;
    const https = sources.config().config.listeners.https;
    try {
      this.servedCertValidTo = https ? Date.parse(new X509Certificate(readFileSync(https.certFile)).validTo) : undefined;
    } catch {
      this.servedCertValidTo = undefined; // the listener cannot start with it either
    }
  }

  observeRequest(r: {
    operation: string | undefined;
    outcome: string | undefined;
    errorName: string | undefined;
    prefix: string | undefined;
    keyId?: string | undefined;
    aadLayout?: string | undefined;
    ms: number | undefined;
  }): void {
    const operation = r.operation ?? 'none';
    const outcome = r.outcome ?? 'error';
    const error = r.errorName ?? '';
    const prefix = r.prefix ?? '';
    // Label values are bounded: operations and error names are fixed sets, prefixes come from the config.
    this.requests.inc(`${operation}\u0000${outcome}\u0000${error}\u0000${prefix}`, () => ({ operation, outcome, error, prefix }));
    if (r.ms !== undefined) this.latency.observe(this.latency.child(operation, { operation }), r.ms / 1000);
    // How much of the sample's data is still read, per key (only keys that decrypted: bounded like the token's keys).
    if (r.aadLayout) {
      const key = r.keyId ?? '';
      this.legacyDecrypts.inc(`${prefix}\u0000${key}`, () => ({ prefix, key }));
    }
  }

  observeHsmCall(call: string, seconds: number): void {
    this.hsmLatency.observe(this.hsmLatency.child(call, { call }), seconds);
  }
}

function credentialSince(c: { created?: string | undefined; secret: SecretRef }, configFile: string): number | undefined {
  if (c.created) return Date.parse(c.created);
  if ('file' in c.secret) {
    try {
      return statSync(resolve(dirname(configFile), c.secret.file)).mtimeMs;
    } catch {
      return undefined;
    }
  }
  return undefined;
}
