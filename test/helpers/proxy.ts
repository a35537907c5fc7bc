// Starts the real proxy (real listeners on loopback ports, a real token of the kind under test) inside the test process.
import type { RunningProxy } from '../../src/proxy.js';
import type { TestToken } from './test-token.js';

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
  /** Keys to create before the tests run: id -> usage. */
  keys?: Record<string, { encrypt: boolean; decrypt: boolean }>;
}

export async function startTestProxy(opts: TestProxyOptions = {}): Promise<TestProxy> {
  // proxy-on-token.ts writes the config and starts the proxy; this is its common case on a fresh token.
  const { startProxyOnToken } = await import('./proxy-on-token.js');
  return startProxyOnToken({
    keys: opts.keys,
    config: {
      ...(opts.hsm ? { hsm: opts.hsm } : {}),
      listeners: {
        http: { host: '127.0.0.1', port: 0 },
        ...(opts.https ? { https: { host: '127.0.0.1', port: 0, ...opts.https } } : {}),
      },
    },
  });
}

export const DEMO_KEYS = {
  foo: { encrypt: true, decrypt: true },
  encrypt_only_key: { encrypt: true, decrypt: false },
  decrypt_only_key: { encrypt: false, decrypt: true },
  impotent_key: { encrypt: false, decrypt: false },
};
