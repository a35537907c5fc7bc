// Like startTestProxy (helpers/proxy.ts), but on a token the test prepared itself (keys made with pkcs11-tool or the
// CLI), with any config section overridden (health, hsm, limits...) and any log level. Same credentials and prefix.
// useProxyOnToken is the fixture most files need: a proxy on its own token, and a client, for the file's tests.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/obs/logger.js';
import { startProxy } from '../../src/proxy.js';
import { ACCESS_KEY_ID, PREFIX, REGION, SECOND_ACCESS_KEY_ID, SECOND_SECRET, SECRET, type TestProxy } from './proxy.js';
import { ensureBuilt, runXks, type CliRun } from './built-cli.js';
import { createTestToken, type TestToken } from './test-token.js';
import { xksClient, type XksClient } from './xks-client.js';

export interface ProxyOnTokenOptions {
  /** An existing token (made in this process by createTestToken: SoftHSM's SOFTHSM2_CONF is this process's); a new one when absent. */
  token?: TestToken;
  /** Removes the token on stop() (default: true). */
  cleanupToken?: boolean;
  logLevel?: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
  /** Merged into the generated config: hsm is merged field by field, other sections replace. */
  config?: { hsm?: Record<string, unknown>; [section: string]: unknown };
  keys?: Record<string, { encrypt: boolean; decrypt: boolean }>;
}

/** The config file startTestProxy would write, for `token`, in `<token.dir>/conf`; returns its path. */
export function writeTestConfig(token: TestToken, overrides: ProxyOnTokenOptions['config'] = {}, name = 'config.yaml'): string {
  const dir = join(token.dir, 'conf');
  if (!existsSync(dir)) mkdirSync(dir);
  writeFileSync(join(dir, 'pin'), token.userPin, { mode: 0o600 });
  writeFileSync(join(dir, 'secret1'), SECRET, { mode: 0o600 });
  process.env.XKS_TEST_SECOND_SECRET = SECOND_SECRET;
  const { hsm, ...rest } = overrides;
  const config = {
    hsm: { ...token.hsmConfig(), pin: { file: 'pin' }, ...hsm },
    listeners: { http: { host: '127.0.0.1', port: 0 } },
    prefixes: [
      {
        path: PREFIX,
        region: REGION,
        credentials: [
          { accessKeyId: ACCESS_KEY_ID, secret: { file: 'secret1' } },
          { accessKeyId: SECOND_ACCESS_KEY_ID, secret: { env: 'XKS_TEST_SECOND_SECRET' } },
        ],
      },
    ],
    log: { level: 'info' },
    ...rest,
  };
  const file = join(dir, name);
  writeFileSync(file, stringify(config));
  return file;
}

export async function startProxyOnToken(opts: ProxyOnTokenOptions = {}): Promise<TestProxy> {
  const token = opts.token ?? createTestToken();
  const configFile = writeTestConfig(token, opts.config);
  const loaded = loadConfig(configFile);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      cb();
    },
  });
  const proxy = await startProxy(loaded, createLogger(opts.logLevel ?? 'info', sink));
  for (const [id, usage] of Object.entries(opts.keys ?? {})) await proxy.lifecycle.create(id, { usage });
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
      if (opts.cleanupToken !== false) token.cleanup();
    },
  };
}

export interface ProxyFixture extends TestProxy {
  /** A client of its XKS listener, usable from the start: it reads the URL when a request is made. */
  xks: XksClient;
}

/**
 * A proxy on a token for the tests of one file or describe block: started in beforeAll (after building the CLI when
 * `cli` says the tests run it), stopped in afterAll. Its fields are there once that beforeAll has run: read them in
 * tests and hooks, not while the file is being collected.
 */
export function useProxyOnToken(opts: ProxyOnTokenOptions & { cli?: boolean } = {}): ProxyFixture {
  const { cli, ...options } = opts;
  let started: TestProxy | undefined;
  const get = (): TestProxy => {
    if (!started) throw new Error('the proxy fixture was read before its beforeAll ran');
    return started;
  };
  beforeAll(async () => {
    if (cli) ensureBuilt();
    started = await startProxyOnToken(options);
  }, 120_000);
  afterAll(async () => started?.stop());
  return {
    get token() {
      return get().token;
    },
    get proxy() {
      return get().proxy;
    },
    get httpUrl() {
      return get().httpUrl;
    },
    get httpsUrl() {
      return get().httpsUrl;
    },
    get logs() {
      return get().logs;
    },
    get configFile() {
      return get().configFile;
    },
    stop: () => get().stop(),
    xks: xksClient(() => get().httpUrl),
  };
}

/** The built CLI on a token of its own and a config for it (no proxy): made in a beforeAll, removed in an afterAll. */
export interface CliFixture {
  readonly token: TestToken;
  readonly configFile: string;
  /** Runs `xks <args>` on the token with its config, and `env` over the test environment. */
  xks(args: string[], env?: Record<string, string | undefined>): Promise<CliRun>;
}

export function useCliOnToken(label: string): CliFixture {
  let made: { token: TestToken; configFile: string } | undefined;
  beforeAll(() => {
    ensureBuilt();
    const token = createTestToken(label);
    made = { token, configFile: writeTestConfig(token) };
  }, 120_000);
  afterAll(() => made?.token.cleanup());
  const get = () => {
    if (!made) throw new Error('the CLI fixture was read before its beforeAll ran');
    return made;
  };
  return {
    get token() {
      return get().token;
    },
    get configFile() {
      return get().configFile;
    },
    xks: (args, env = {}) => runXks(args, { ...get(), env }),
  };
}
