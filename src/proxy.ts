// Wires one proxy process together from a loaded configuration: HSM connection, key catalogue, health, listeners.
import { readFileSync } from 'node:fs';
import type { LoadedConfig } from './config/load.js';
import { HsmConnection } from './hsm/hsm-connection.js';
import { loadProfile, resolveModulePath } from './hsm/profile.js';
import { createAdminHandler } from './http/admin-handler.js';
import { createXksHandler } from './http/xks-handler.js';
import { startListeners, type Listening } from './http/listeners.js';
import { KeyCatalogue } from './keys/catalogue.js';
import { KeyLifecycle } from './keys/lifecycle.js';
import type { Logger } from './obs/logger.js';
import { HealthChecker } from './xks/health.js';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export async function openHsm(loaded: LoadedConfig, logger?: Logger): Promise<HsmConnection> {
  const h = loaded.config.hsm;
  const profile = loadProfile(h.profile);
  return HsmConnection.open({
    modulePath: resolveModulePath(profile, h.module),
    profile,
    tokenLabel: h.tokenLabel,
    tokenSerial: h.tokenSerial,
    pin: loaded.pin,
    poolSize: h.sessionPoolSize,
    acquireTimeoutMs: h.acquireTimeoutMs,
    maxQueue: h.maxQueue,
    operationTimeoutMs: h.operationTimeoutMs,
    ivMode: h.ivMode,
    callMode: h.callMode,
    onEvent: (event, detail) => logger?.warn(detail, event),
  });
}

export function openCatalogue(hsm: HsmConnection, loaded: LoadedConfig): KeyCatalogue {
  return new KeyCatalogue(hsm, {
    ttlMs: loaded.config.hsm.keyCacheTtlMs,
    negativeTtlMs: 1_000,
    reserved: new Set([loaded.config.hsm.healthKeyLabel]),
    maxEntries: 10_000,
  });
}

/** Key management on this connection; the health-check key is out of its reach. */
export function openLifecycle(hsm: HsmConnection, catalogue: KeyCatalogue, loaded: LoadedConfig, now?: () => Date): KeyLifecycle {
  return new KeyLifecycle(hsm, catalogue, { reserved: new Set([loaded.config.hsm.healthKeyLabel]), ...(now ? { now } : {}) });
}

export interface RunningProxy {
  hsm: HsmConnection;
  catalogue: KeyCatalogue;
  lifecycle: KeyLifecycle;
  health: HealthChecker;
  listening: Listening;
  /** The admin API's listener; undefined when the config has no admin section (the API is off). */
  adminListening: Listening | undefined;
  /**
   * Take new prefixes, credentials and key allow-lists, and the admin API's credentials, from a reloaded config;
   * requests in flight keep the old. The admin listener itself starts and stops only with the process.
   */
  reload(next: LoadedConfig): void;
  stop(): Promise<void>;
}

export async function startProxy(loaded: LoadedConfig, logger: Logger): Promise<RunningProxy> {
  const hsm = await openHsm(loaded, logger);
  try {
    const catalogue = openCatalogue(hsm, loaded);
    const lifecycle = openLifecycle(hsm, catalogue, loaded);
    const health = new HealthChecker(hsm, {
      keyLabel: loaded.config.hsm.healthKeyLabel,
      maxAgeMs: loaded.config.health.maxAgeMs,
      waitMs: 200,
      fleetSize: loaded.config.health.fleetSize,
      version: VERSION,
    });
    // Creates the health key if it is missing, and tells at start-up whether the HSM really works.
    const first = await health.refresh();
    logger.info({ token: hsm.info.label, serial: hsm.info.serial, status: first.status, detail: first.detail }, 'health check');
    const handler = createXksHandler({
      deps: { hsm, catalogue },
      health,
      prefixes: loaded.prefixes,
      bodyLimit: loaded.config.limits.bodyBytes,
      requestTimeoutMs: loaded.config.limits.requestTimeoutMs,
      logger: logger.child({ hsm: hsm.info.label }),
    });
    const listeners = loaded.config.listeners;
    if (listeners.https?.mtls && listeners.http) {
      logger.warn({ http: `${listeners.http.host}:${listeners.http.port}` }, 'mTLS is on for HTTPS, but the plain HTTP listener accepts any client');
    }
    const listening = await startListeners(listeners, handler, logger);
    let adminListening: Listening | undefined;
    let adminHandler: ReturnType<typeof createAdminHandler> | undefined;
    if (loaded.admin) {
      const a = loaded.admin;
      adminHandler = createAdminHandler({ lifecycle, region: a.region, credentials: a.credentials, logger: logger.child({ hsm: hsm.info.label }) });
      try {
        adminListening = await startListeners({ http: a.listener }, adminHandler, logger);
      } catch (e) {
        await listening.close();
        throw e;
      }
      const at = adminListening.http!;
      if (!isLoopback(at.address)) {
        logger.warn({ admin: `${at.address}:${at.port}` }, 'the admin API listens beyond loopback over plain HTTP; put TLS in front of it');
      }
      logger.info({ admin: `${at.address}:${at.port}`, region: a.region, accessKeyIds: [...a.credentials.keys()] }, 'admin API listening');
    }
    return {
      hsm,
      catalogue,
      lifecycle,
      health,
      listening,
      adminListening,
      reload: (next) => {
        handler.setPrefixes(next.prefixes);
        // An admin section removed on reload refuses every admin request (no credential) until the restart closes it.
        adminHandler?.setAuth(next.admin ?? { region: loaded.admin!.region, credentials: new Map() });
        if (next.admin && !adminHandler) logger.warn({}, 'the admin API was added to the configuration: it starts with the next restart');
      },
      stop: async () => {
        await Promise.all([listening.close(), adminListening?.close()]);
        await hsm.drain(2_000); // calls abandoned by a timeout may still run on the thread pool
        hsm.close();
      },
    };
  } catch (e) {
    hsm.close();
    throw e;
  }
}

function isLoopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.') || address === '::ffff:127.0.0.1';
}
