// The configuration file's shape: the single source of truth for its types. Secrets are references (env or file),
// never values, so a config file can be committed or shown without leaking a PIN or a SigV4 secret.
import { z } from 'zod';
import { CallModeSchema, IvModeSchema } from '../hsm/profile.js';
import { DEFAULT_ENCRYPTION_LIMITS, EncryptionLimitsSchema } from '../keys/encryption-limits.js';
import { KeyPolicySchema, PolicyStatementSchema } from '../keys/policy.js';

export const SecretRefSchema = z.union(
  [
    z.strictObject({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name') }),
    z.strictObject({ file: z.string().min(1) }),
  ],
  { error: 'must be { env: NAME } or { file: PATH }; secrets are never written in the config itself' },
);
export type SecretRef = z.infer<typeof SecretRefSchema>;

const port = z.number().int().min(0).max(65535);
const host = z.string().min(1).default('127.0.0.1');

export const CredentialSchema = z.strictObject({
  accessKeyId: z.string().regex(/^[A-Z2-7]{20,30}$/, 'must be 20 to 30 characters of A-Z and 2-7'),
  secret: SecretRefSchema,
  /** When the credential was made (ISO date): its age is a metric, so rotation can be alarmed on. */
  created: z.iso.date().or(z.iso.datetime()).optional(),
});

export const PrefixSchema = z
  .strictObject({
    /** The URI prefix before /kms/xks/v1, without leading or trailing slash; empty for none. */
    path: z
      .string()
      .max(116, 'must be at most 116 characters so that the path with /kms/xks/v1 stays within 128')
      .regex(/^([A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*)?$/, 'must be segments of A-Za-z0-9_- separated by single slashes, no leading or trailing slash')
      .refine((p) => !`/${p}/`.includes('/kms/xks/v1/'), 'must not contain kms/xks/v1 (the proxy adds it)'),
    region: z.string().regex(/^[a-z0-9-]{4,32}$/, 'must be an AWS region such as us-east-1'),
    credentials: z.array(CredentialSchema).min(1, 'needs at least one credential'),
    /** Optional allow-list of external key ids this key store may use; absent means every key in the token. */
    keys: z.array(z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, 'must be 1 to 128 characters of A-Za-z0-9._-')).optional(),
    /** Statements for every key of this key store (keys/policy.ts): Deny wins; with any Allow, one must match. */
    policy: z.array(PolicyStatementSchema).optional(),
    /** Per external key: the KMS keys bound to it and its own statements. */
    keyPolicies: z.record(z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, 'must be an external key id'), KeyPolicySchema).optional(),
    /** Requests per second this key store accepts (a token bucket); above it, ThrottlingException (429). */
    rateLimit: z
      .strictObject({
        requestsPerSecond: z.number().positive().max(1_000_000),
        /** Requests allowed at once above the rate (default: one second's worth). */
        burst: z.number().int().min(1).max(10_000_000).optional(),
      })
      .optional(),
  })
  .refine((p) => new Set(p.credentials.map((c) => c.accessKeyId)).size === p.credentials.length, {
    message: 'lists the same accessKeyId twice',
    path: ['credentials'],
  });

/**
 * The admin API's own credentials (http/admin-handler.ts), never shared with a key store: KMS holds the key stores'
 * secrets, and a key store credential must not be able to disable or delete keys.
 */
export const AdminCredentialSchema = z.strictObject({
  // The shape of AWS access key ids, so AWS SDKs and curl --aws-sigv4 take it as one.
  accessKeyId: z.string().regex(/^[A-Za-z0-9]{16,128}$/, 'must be 16 to 128 characters of A-Za-z0-9'),
  secret: SecretRefSchema,
});

/** Key management over HTTP (SigV4, service xks-admin). Off when absent; loopback unless told otherwise. */
export const AdminSchema = z
  .strictObject({
    listener: z.strictObject({ host, port }),
    /** The region in the credential scope the clients sign with. */
    region: z.string().regex(/^[a-z0-9-]{4,32}$/, 'must be an AWS region such as us-east-1').default('us-east-1'),
    credentials: z.array(AdminCredentialSchema).min(1, 'needs at least one credential'),
  })
  .refine((a) => new Set(a.credentials.map((c) => c.accessKeyId)).size === a.credentials.length, {
    message: 'lists the same accessKeyId twice',
    path: ['credentials'],
  });

export const ConfigSchema = z
  .strictObject({
    /**
     * A file whose settings are merged over this file's (load.ts readConfigSource): mappings key by key, anything else
     * replaced, null removes. scripts/dev.sh regenerates its config and keeps the user's overrides file.
     */
    overrides: z.string().min(1).optional(),
    hsm: z.strictObject({
      profile: z.string().default('softhsm2'),
      module: z.string().optional(),
      /** Passed to every C_Initialize (NSS softoken: configdir='sql:DIR' ...); overrides the profile's. */
      libraryParameters: z.string().min(1).optional(),
      tokenLabel: z.string().min(1).optional(),
      tokenSerial: z.string().min(1).optional(),
      pin: SecretRefSchema,
      sessionPoolSize: z.number().int().min(1).max(256).default(8),
      /** Wait for a free session at most this long, then answer ThrottlingException (KMS's budget is 250 ms). */
      acquireTimeoutMs: z.number().int().min(1).max(10_000).default(100),
      /** Budget for one HSM call in async and thread modes, then DependencyTimeoutException. */
      operationTimeoutMs: z.number().int().min(1).max(60_000).default(200),
      /** Requests waiting for a session beyond this answer ThrottlingException at once instead of queueing. */
      maxQueue: z.number().int().min(0).max(100_000).default(256),
      ivMode: IvModeSchema.optional(),
      callMode: CallModeSchema.optional(),
      /**
       * callMode thread: event-loop utilisation (0..1) from which AES-GCM calls go to the call thread; 0 (the default):
       * always. Above 0, calls made while the loop is idle run on it, which is cheaper but lets an HSM that hangs stall
       * the whole process.
       */
      callThreadBusyAt: z.number().min(0).max(1).default(0),
      healthKeyLabel: z.string().min(1).max(128).default('xks-proxy-health-check'),
      /**
       * A cached key older than this is re-read from the token in the background; one older than twice this is
       * re-read before use. A change made by another process (rotate, disable) is seen within 2 x this.
       */
      keyCacheTtlMs: z.number().int().min(100).max(600_000).default(2_000),
      /**
       * With an operations listener: how often the keys in the token are counted by state for xks_keys (one search of
       * every object, in the background; a scrape never touches the HSM). The gauge is at most this old.
       */
      keyCountIntervalMs: z.number().int().min(100).max(3_600_000).default(60_000),
    }).refine((h) => h.tokenLabel !== undefined || h.tokenSerial !== undefined, {
      message: 'needs tokenLabel or tokenSerial to choose the token',
    }),
    listeners: z
      .strictObject({
        http: z.strictObject({ host, port }).optional(),
        /** Operations: GET /metrics (Prometheus), /health (the deep check, unauthenticated, for readiness), /ping. */
        ops: z.strictObject({ host, port }).optional(),
        https: z
          .strictObject({
            host,
            port,
            certFile: z.string().min(1),
            keyFile: z.string().min(1),
            mtls: z
              .strictObject({
                clientCaFile: z.string().min(1),
                /** Accepted client subject names (CN or DNS subjectAltName), e.g. cks.kms.us-east-1.amazonaws.com. */
                allowedSubjects: z.array(z.string().min(1)).min(1),
              })
              .optional(),
          })
          .optional(),
        /**
         * Connections each XKS listener (http, https) holds at once, per worker; beyond it a new connection is closed
         * as soon as it is accepted. Default 1024; lowered at start-up to stay below the descriptor limit.
         */
        maxConnections: z.number().int().min(1).max(1_000_000).optional(),
        /**
         * A connection must deliver a request's headers within this, a new one from the moment it is accepted: one
         * that sends nothing, or stops halfway, is closed. KMS sends a request's headers in one packet. All listeners.
         */
        headersTimeoutMs: z.number().int().min(100).max(60_000).default(2_000),
        /**
         * A keep-alive connection idle this long between requests is closed (all listeners). KMS reuses its
         * connections, and a new one costs a TLS handshake out of its 250 ms: long, and above load balancers' 60 s.
         */
        idleTimeoutMs: z.number().int().min(1_000).max(3_600_000).default(65_000),
      })
      // Absent on a CLI-only host: `xks serve` needs an http or https listener (load.ts servingIssues), other commands none.
      .prefault({}),
    limits: z
      .strictObject({
        /** Request bodies above this are refused before they are read in full (KMS sends at most about 20 KB). */
        // At least 20 KiB: the spec's largest request (4300 bytes of plaintext with 8192 of AAD, in Base64) must fit.
        bodyBytes: z.number().int().min(20 * 1024).max(1 << 20).default(32 * 1024),
        /** No request is held longer: KMS gives up after 250 ms, so past this the proxy answers 503 itself. */
        requestTimeoutMs: z.number().int().min(10).max(60_000).default(240),
      })
      .default({ bodyBytes: 32 * 1024, requestTimeoutMs: 240 }),
    /** Advanced: encryptions per key version (NIST SP 800-38D's bound for random IVs; keys/encryption-blocks.ts). */
    encryptionLimits: EncryptionLimitsSchema.default(DEFAULT_ENCRYPTION_LIMITS),
    /** Bring your own key (src/import, docs/byok.md). */
    import: z
      .strictObject({
        /**
         * RSAES_OAEP_SHA_256 on an HSM whose OAEP lacks SHA-256 (SoftHSM) works only by decoding the customer's key
         * material in this process's memory: refused unless this is true (each use is logged).
         */
        allowInProcessMaterial: z.boolean().default(false),
      })
      .default({ allowInProcessMaterial: false }),
    audit: z
      .strictObject({
        /** Directory of the trail files (one per host and worker, plus one shared by CLI commands). */
        dir: z.string().min(1),
        /** A checkpoint (MAC made in the HSM) after this many lines... */
        checkpointEvery: z.number().int().min(1).max(1_000_000).default(1000),
        /** ...or this many seconds after the first unsealed line. */
        checkpointSeconds: z.number().int().min(1).max(86_400).default(60),
        /** A new file past this size (MB); the chain continues across files. */
        maxFileMB: z.number().int().min(1).max(100_000).default(100),
        /** The HSM key (CKA_LABEL) of the checkpoint MACs; made on first use. */
        keyLabel: z.string().min(1).max(128).default('xks-audit-hmac'),
        /**
         * While the trail cannot be sealed: `serve` answers as usual (health DEGRADED); `refuse` answers XKS calls and
         * admin operations with DependencyTimeoutException (503, KMS retries) until it is sealed again (health UNAVAILABLE).
         */
        onFailure: z.enum(['serve', 'refuse']).default('serve'),
      })
      .optional(),
    health: z
      .strictObject({
        maxAgeMs: z.number().int().min(0).max(60_000).default(10_000),
        fleetSize: z.number().int().min(1).max(10_000).default(1),
        /**
         * Under --workers: a worker whose health check fails this long while another worker's passes is replaced (its
         * PKCS#11 library is stuck, not the HSM).
         */
        replaceWorkerAfterSeconds: z.number().int().min(1).max(3_600).default(30),
      })
      .default({ maxAgeMs: 10_000, fleetSize: 1, replaceWorkerAfterSeconds: 30 }),
    /** The key stores; `xks serve` needs at least one, other commands none (a CLI-only host). */
    prefixes: z.array(PrefixSchema).default([]),
    xks: z
      .strictObject({
        /**
         * A decrypt without this proxy's ciphertextMetadata that does not authenticate under the spec's AAD layout is
         * tried once more under AWS's sample proxy's layout (its ciphertexts: docs/migrate-from-aws-sample.md). Costs
         * one HSM call more on a failed decrypt only; false for key stores that never ran the sample. Read at start-up.
         */
        awsSampleAadFallback: z.boolean().default(true),
      })
      .prefault({}),
    admin: AdminSchema.optional(),
    /**
     * Secret files (the PIN, SigV4 and admin secrets, the TLS key) open to other users, or to a group other than this
     * process's own: refused at load (refuse), or loaded with a warning (warn).
     */
    secretFilePermissions: z.enum(['refuse', 'warn']).default('refuse'),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /**
         * One line per incident: a warning or error repeated within this many seconds (an HSM outage fails every
         * request the same way) is counted and reported in one line with `repeated` when the window ends.
         */
        repeatWindowSeconds: z.number().int().min(1).max(3_600).default(10),
      })
      .prefault({}),
  })
  .refine((c) => new Set(c.prefixes.map((p) => p.path)).size === c.prefixes.length, {
    message: 'lists the same prefix path twice',
    path: ['prefixes'],
  })
  .superRefine((c, ctx) => {
    const xks = new Set(c.prefixes.flatMap((p) => p.credentials.map((k) => k.accessKeyId)));
    c.admin?.credentials.forEach((k, i) => {
      if (xks.has(k.accessKeyId)) {
        ctx.addIssue({ code: 'custom', message: 'is also a key store credential; the admin API needs its own', path: ['admin', 'credentials', i, 'accessKeyId'] });
      }
    });
  });

export type Config = z.infer<typeof ConfigSchema>;
export type PrefixConfig = z.infer<typeof PrefixSchema>;
export type AdminConfig = z.infer<typeof AdminSchema>;
