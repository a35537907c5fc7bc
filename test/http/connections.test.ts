// Idle and half-open connections cannot starve the XKS listener (issue 14, finding 11): a connection that sends nothing,
// or stops halfway through its headers, is closed within the header timeout; beyond the connection limit a new one is
// closed at once; connections already serving (KMS reuses its connections) keep serving through a flood; and once the
// flood's connections have timed out, new connections are served again, even when the attacker never closes its side.
// Real sockets against a real proxy (in this process, and an `xks serve` child with a low descriptor limit).
import { spawn } from 'node:child_process';
import http from 'node:http';
import type https from 'node:https';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MAIN, ROOT, ensureBuilt } from '../helpers/built-cli.js';
import { createTestPki, type TestPki } from '../helpers/pki.js';
import { freePort } from '../helpers/serve-process.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken, writeTestConfig } from '../helpers/proxy-on-token.js';
import { createTestToken, type TestToken } from '../helpers/test-token.js';
import { xksClient } from '../helpers/xks-client.js';

interface Probe {
  socket: net.Socket;
  /** ms from opening until the server closed it; undefined while open. */
  closedAfter: number | undefined;
}

/** Opens `n` sockets that send `prefix` (or nothing) and then nothing more; never closes them itself. */
function flood(port: number, n: number, prefix = ''): Promise<Probe[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Probe>((resolve) => {
          const t0 = performance.now();
          const socket = net.connect(port, '127.0.0.1');
          const probe: Probe = { socket, closedAfter: undefined };
          // Read whatever the server says (a 408), so that its close is seen.
          socket.on('data', () => undefined);
          socket.on('error', () => undefined);
          socket.on('close', () => {
            probe.closedAfter = performance.now() - t0;
            resolve(probe);
          });
          socket.on('connect', () => {
            if (prefix) socket.write(prefix);
            resolve(probe);
          });
        }),
    ),
  );
}

const until = async (pred: () => boolean, ms: number) => {
  const end = Date.now() + ms;
  while (!pred() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return pred();
};

const HALF_HEADERS = 'POST /example/uri/path/prefix/kms/xks/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Date: 2';

describe('an XKS listener with the default timeouts', () => {
  let t: TestProxy;
  const probes: Probe[] = [];
  beforeAll(async () => {
    t = await startProxyOnToken({});
  });
  afterEach(() => probes.splice(0).forEach((p) => p.socket.destroy()));
  afterAll(async () => t?.stop());

  it('closes connections that send nothing or stop halfway through their headers within the 2 s header timeout, and serves meanwhile', async () => {
    const port = Number(new URL(t.httpUrl).port);
    probes.push(...(await flood(port, 20)), ...(await flood(port, 20, HALF_HEADERS)));
    const xks = xksClient(t.httpUrl);
    expect((await xks.health()).status).toBe(200);
    // 2 s, checked every 500 ms; a little more for a busy machine.
    expect(await until(() => probes.every((p) => p.closedAfter !== undefined), 4_000), 'connections left open').toBe(true);
    for (const p of probes) expect(p.closedAfter!).toBeGreaterThanOrEqual(1_900);
    expect((await xks.health()).status).toBe(200);
  }, 20_000);
});

describe('an HTTPS XKS listener with the default timeouts', () => {
  let t: TestProxy;
  let pki: TestPki;
  const probes: Probe[] = [];
  beforeAll(async () => {
    pki = createTestPki();
    t = await startTestProxy({ https: { certFile: pki.server.cert, keyFile: pki.server.key } });
  });
  afterAll(async () => {
    probes.forEach((p) => p.socket.destroy());
    await t?.stop();
    pki?.cleanup();
  });

  it('closes a connection that never starts its TLS handshake, or stops halfway through it, within the header timeout', async () => {
    const port = Number(new URL(t.httpsUrl!).port);
    // The first bytes of a TLS record header (a ClientHello would follow), then nothing.
    probes.push(...(await flood(port, 10)), ...(await flood(port, 10, '\x16\x03\x01')));
    expect(await until(() => probes.every((p) => p.closedAfter !== undefined), 4_000), 'connections left open').toBe(true);
  }, 20_000);
});

describe('an XKS listener at its connection limit', () => {
  let t: TestProxy;
  const probes: Probe[] = [];
  beforeAll(async () => {
    t = await startProxyOnToken({
      config: { listeners: { http: { host: '127.0.0.1', port: 0 }, maxConnections: 20, headersTimeoutMs: 600 } },
    });
  });
  afterAll(async () => {
    probes.forEach((p) => p.socket.destroy());
    await t?.stop();
  });

  it('closes connections beyond the limit at once, keeps serving the connections it has, and serves new ones once the flood timed out', async () => {
    const port = Number(new URL(t.httpUrl).port);
    // KMS's connection, made before the flood and reused through it.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const kms = xksClient(t.httpUrl, { agent: agent as unknown as https.Agent });
    expect((await kms.health()).status).toBe(200);

    // 60 connections that never send a byte and are never closed by their side (an attacker that vanished).
    probes.push(...(await flood(port, 60)));
    const server = t.proxy.listening.servers[0]!;
    const count = () => new Promise<number>((resolve, reject) => server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
    expect(await until(() => probes.filter((p) => p.closedAfter !== undefined).length >= 40, 1_000), 'connections beyond the limit closed at once').toBe(true);
    expect(await count()).toBeLessThanOrEqual(20);
    expect(probes.filter((p) => p.closedAfter !== undefined && p.closedAfter < 300).length).toBeGreaterThanOrEqual(40);
    // The connection KMS already has still serves during the flood.
    for (let i = 0; i < 5; i++) expect((await kms.health()).status).toBe(200);

    // The attacker's remaining connections time out; then a new connection is served.
    expect(await until(() => probes.every((p) => p.closedAfter !== undefined), 3_000), 'flood connections left open').toBe(true);
    expect((await xksClient(t.httpUrl).health()).status).toBe(200);
    expect((await kms.health()).status).toBe(200);
    agent.destroy();
    expect(t.logs.some((l) => l.includes('connection limit reached'))).toBe(true);
  }, 20_000);
});

describe('an xks serve process at a low descriptor limit, flooded with idle connections', () => {
  let token: TestToken;
  let child: ReturnType<typeof spawn> | undefined;
  const sockets: net.Socket[] = [];
  beforeAll(() => {
    ensureBuilt();
    token = createTestToken('fd-flood');
  }, 120_000);
  afterAll(async () => {
    sockets.forEach((s) => s.destroy());
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child!.once('exit', r));
    }
    token?.cleanup();
  });

  it('keeps its descriptors below the limit and serves again once the flood has timed out, though the attacker never closes', async () => {
    const port = await freePort();
    const file = writeTestConfig(token, { listeners: { http: { host: '127.0.0.1', port } } });
    // `ulimit -n` sets the soft and hard limits: node cannot raise them again.
    child = spawn('bash', ['-c', `ulimit -n 256 && exec node ${MAIN} serve --workers 1 --config ${file}`], {
      cwd: ROOT,
      env: { ...process.env, ...token.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    expect(await until(() => out.includes('xks proxy listening'), 30_000), out).toBe(true);
    const url = `http://127.0.0.1:${port}`;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const kms = xksClient(url, { agent: agent as unknown as https.Agent });
    expect((await kms.health()).status).toBe(200);

    // Far more connections than the process has descriptors, none of them ever sending or closing.
    const open: Probe[] = [];
    for (let i = 0; i < 8; i++) open.push(...(await flood(port, 50)));
    sockets.push(...open.map((p) => p.socket));
    expect((await kms.health()).status, 'the connection KMS has serves during the flood').toBe(200);
    // Once the flood's accepted connections reach the header timeout, a new connection is served.
    expect(await until(() => open.every((p) => p.closedAfter !== undefined), 5_000), 'flood connections left open').toBe(true);
    const fresh = await xksClient(url).health();
    expect(fresh.status, out.slice(-2000)).toBe(200);
    agent.destroy();
    expect(out).not.toMatch(/EMFILE/);
  }, 90_000);
});
