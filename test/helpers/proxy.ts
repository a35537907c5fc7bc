// Starts the real proxy (real listeners on loopback ports, real SoftHSM token) inside the test process.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/obs/logger.js';
import { startProxy, type RunningProxy } from '../../src/proxy.js';
import { createTestToken, type TestToken } from './softhsm.js';

export const ACCESS_KEY_ID = 'BETWEEN2TENAND3TENCHARACTERS';
export const SECRET = 'PleaseReplaceThisWithSomeSecretOfLength43To64';
export const SECOND_ACCESS_KEY_ID = 'ROTATEDCREDENTIAL234567ABC';
export const SECOND_SECRET = 'AnotherSecretForRotation0123456789abcdefABCDEF';
export const PREFIX = 'example/uri/path/prefix';
export const REGION = 'us-east-1';

export interface TestProxy {
  token: TestToken;
  proxy: RunningProxy;
  httpUrl: string;
  httpsUrl?: string;
  /** Every log line the proxy wrote. */
  logs: string[];
  configFile: string;
  stop(): Promise<void>;
}

export interface TestProxyOptions {
  https?: { certFile: string; keyFile: string; mtls?: { clientCaFile: string; allowedSubjects: string[] } };
  hsm?: Record<string, unknown>;
  extraPrefixes?: unknown[];
  bodyBytes?: number;
  /** Keys to create before the server starts: id -> usage. */
  keys?: Record<string, { encrypt: boolean; decrypt: boolean }>;
}

export async function startTestProxy(opts: TestProxyOptions = {}): Promise<TestProxy> {
  const token = createTestToken();
  const dir = join(token.dir, 'conf');
  mkdirSync(dir);
  writeFileSync(join(dir, 'pin'), token.userPin, { mode: 0o600 });
  writeFileSync(join(dir, 'secret1'), SECRET, { mode: 0o600 });
  process.env.XKS_TEST_SECOND_SECRET = SECOND_SECRET;
  const config = {
    hsm: { profile: 'softhsm2', tokenLabel: token.label, pin: { file: 'pin' }, ...opts.hsm },
    listeners: {
      http: { host: '127.0.0.1', port: 0 },
      ...(opts.https ? { https: { host: '127.0.0.1', port: 0, ...opts.https } } : {}),
    },
    ...(opts.bodyBytes ? { limits: { bodyBytes: opts.bodyBytes } } : {}),
    prefixes: [
      {
        path: PREFIX,
        region: REGION,
        credentials: [
          { accessKeyId: ACCESS_KEY_ID, secret: { file: 'secret1' } },
          { accessKeyId: SECOND_ACCESS_KEY_ID, secret: { env: 'XKS_TEST_SECOND_SECRET' } },
        ],
      },
      ...(opts.extraPrefixes ?? []),
    ],
    log: { level: 'info' },
  };
  const configFile = join(dir, 'config.yaml');
  writeFileSync(configFile, stringify(config));
  const loaded = loadConfig(configFile);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      cb();
    },
  });
  const logger = createLogger('info', sink);
  const proxy = await startProxy(loaded, logger);
  for (const [id, usage] of Object.entries(opts.keys ?? {})) await proxy.catalogue.create(id, usage);
  const { http, https } = proxy.listening;
  return {
    token,
    proxy,
    httpUrl: `http://127.0.0.1:${http!.port}`,
    ...(https ? { httpsUrl: `https://127.0.0.1:${https.port}` } : {}),
    logs,
    configFile,
    stop: async () => {
      await proxy.stop();
      token.cleanup();
    },
  };
}

export const DEMO_KEYS = {
  foo: { encrypt: true, decrypt: true },
  encrypt_only_key: { encrypt: true, decrypt: false },
  decrypt_only_key: { encrypt: false, decrypt: true },
  impotent_key: { encrypt: false, decrypt: false },
};
