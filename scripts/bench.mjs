// `npm run bench` (after `npm run build`): the proxy on a temporary SoftHSM token, in its own process, against two
// ceilings measured in the same run on the same machine:
//   - bare:   a node:http server that parses the same JSON and does AES-256-GCM in node:crypto (scripts/bench/bare-server.mjs)
//   - pkcs11: a synchronous pkcs11js loop on a token key (scripts/bench/pkcs11-loop.mjs)
// Closed loop (autocannon, keep-alive, pre-signed SigV4 requests): requests/s and latency, proxy/bare ratio.
// Open loop (fixed rate, KMS's default quota of 1,800 req/s): latency from the scheduled send time.
//
// Each comparison alternates bare and proxy rounds and keeps each target's best round (see alternate()); every round
// is in the results file, with the CPU used by the server, by this process (the load generator) and by anything else.
//
// Environment (defaults in brackets):
//   BENCH_SECONDS [8]        closed-loop seconds per target, split into BENCH_ROUNDS [2] alternating rounds
//   BENCH_OPEN_SECONDS [10]  open-loop seconds per target, split the same way
//   BENCH_WARMUP [1.5]       warm-up seconds per target (open loop: at most 1)
//   BENCH_CONNECTIONS [32]   autocannon connections          BENCH_RATE [1800]     open-loop requests/s
//   BENCH_SOCKETS [64]       open-loop keep-alive sockets    BENCH_POOL [256]      distinct signed requests per kind
//   BENCH_HSM_SECONDS [1.5]  per pkcs11js loop variant       BENCH_LOG_LEVEL [info] the proxy's log level
//   BENCH_WORKERS [1]        proxy worker processes (xks serve --workers)
//   BENCH_HSM_CONFIG         JSON merged into the proxy's hsm config, e.g. '{"callMode":"async"}'
//   BENCH_ONLY               closed or open: skip the other half
//   BENCH_QUIET_WAIT [0]     on a shared machine, seconds (in all) to wait for other work to stop before each group
//   BENCH_PROXY_ARGS         extra node options for the proxy (e.g. --trace-gc); its output then goes to bench-proxy.log
//   BENCH_PROFILE=1          run both servers under --cpu-prof, keep the profiles next to BENCH_OUT, summarise them
//   BENCH_OUT [./bench-results.json]   BENCH_STRICT=1: exit 2 when a target is missed (1 on any error response)
import { spawn, fork, execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, mkdtempSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import autocannon from 'autocannon';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import { openLoop, rawRequest } from './bench/open-loop.mjs';
import { summarise } from './bench/profile-summary.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'dist/cli/main.js');
const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';
const env = (name, dflt) => (process.env[name] !== undefined && process.env[name] !== '' ? Number(process.env[name]) : dflt);
const SECONDS = env('BENCH_SECONDS', 8);
const WARMUP = env('BENCH_WARMUP', 1.5);
const CONNECTIONS = env('BENCH_CONNECTIONS', 32);
const RATE = env('BENCH_RATE', 1800);
const OPEN_SECONDS = env('BENCH_OPEN_SECONDS', 10);
const SOCKETS = env('BENCH_SOCKETS', 64);
const POOL = env('BENCH_POOL', 256);
const ROUNDS = Math.max(1, env('BENCH_ROUNDS', 2));
const QUIET_WAIT = env('BENCH_QUIET_WAIT', 0);
const NOISY_PCT = 25; // other work on the machine above this share of one core makes a round suspect
const HSM_SECONDS = env('BENCH_HSM_SECONDS', 1.5);
// info, as in production: one log line per request is part of the cost being measured.
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL || 'info';
// Proxy worker processes (xks serve --workers). The bare ceiling is one process; compare like with like by default.
const WORKERS = Number(process.env.BENCH_WORKERS || 1);
const OUT = resolve(process.env.BENCH_OUT || join(ROOT, 'bench-results.json'));
const PROFILE = process.env.BENCH_PROFILE === '1';
const ONLY = process.env.BENCH_ONLY || '';
const HSM_OVERRIDES = JSON.parse(process.env.BENCH_HSM_CONFIG || '{}'); // e.g. {"callMode":"async"}

const ACCESS_KEY_ID = 'BENCHACCESSKEYID234567ABCD';
const SECRET = randomBytes(36).toString('base64'); // 48 characters of A-Za-z0-9+/
const PREFIX = 'bench/xks';
const REGION = 'us-east-1';
const KEY_ID = 'bench';
const TOKEN_LABEL = 'xks-bench';

const children = new Set();
/** Requests each server answered over its life (set-up, warm-ups and measurements), to turn profiles into us/request. */
const served = new Map();
const count = (port, n) => served.set(port, (served.get(port) ?? 0) + n);
let tmp;
const started = performance.now();
const log = (msg) => process.stdout.write(`[${((performance.now() - started) / 1000).toFixed(1).padStart(5)}s] ${msg}\n`);

// ---- processes ---------------------------------------------------------------------------------------------------

function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function stopChild(child, ms = 10_000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const force = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('exit', () => {
      clearTimeout(force);
      res();
    });
    child.kill('SIGTERM');
  });
}

function cleanup() {
  for (const c of children) c.kill('SIGKILL');
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup();
    process.exit(130);
  });
}

function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/**
 * CPU seconds (user + system) a process and its children (`--workers`) have used so far, from /proc (Linux);
 * undefined elsewhere.
 */
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    let total = (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100 on Linux)
    for (const child of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean)) {
      total += cpuSeconds(Number(child)) ?? 0;
    }
    return total;
  } catch {
    return undefined;
  }
}

/** Jiffies the whole machine spent busy (everything but idle and iowait), from /proc/stat. */
function machineBusySeconds() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = f;
    return (user + nice + system + irq + softirq + steal) / 100;
  } catch {
    return undefined;
  }
}

/**
 * Measures what a phase costs: the server's CPU, the generator's (this process), and everything else on the machine
 * (other processes, and kernel work not charged to a process), so a run on a busy machine says so.
 */
function cpuMeter(pid) {
  const s0 = cpuSeconds(pid);
  const g0 = process.cpuUsage();
  const m0 = machineBusySeconds();
  const t0 = performance.now();
  return () => {
    const secs = (performance.now() - t0) / 1000;
    const server = cpuSeconds(pid) - s0;
    const g = process.cpuUsage(g0);
    const generator = (g.user + g.system) / 1e6;
    const machine = machineBusySeconds() - m0;
    const p = (x) => (Number.isFinite(x) ? Math.round((x / secs) * 100) : undefined);
    return { serverCpuPct: p(server), generatorCpuPct: p(generator), otherCpuPct: p(machine - server - generator), serverCpuSeconds: server };
  };
}

async function waitFor(fn, what, ms = 15_000) {
  const until = Date.now() + ms;
  for (;;) {
    try {
      if (await fn()) return;
    } catch {
      // not yet
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---- HTTP helpers for set-up (not measured) ------------------------------------------------------------------------

const setupAgent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function post(port, req) {
  return new Promise((res, rej) => {
    const body = Buffer.from(req.body);
    const r = http.request(
      { host: '127.0.0.1', port, path: req.path, method: req.method ?? 'POST', agent: setupAgent, headers: { ...req.headers, 'content-length': body.length } },
      (resp) => {
        const chunks = [];
        resp.on('data', (c) => chunks.push(c));
        resp.on('end', () => res({ status: resp.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    r.on('error', rej);
    r.end(req.method === 'GET' ? undefined : body);
  });
}

function ping(port) {
  return new Promise((res) => {
    const r = http.get({ host: '127.0.0.1', port, path: '/ping', agent: false }, (resp) => {
      resp.resume();
      res(resp.statusCode === 200);
    });
    r.on('error', () => res(false));
  });
}

// ---- requests ------------------------------------------------------------------------------------------------------

const signer = new SignatureV4({
  credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET },
  region: REGION,
  service: 'kms-xks-proxy',
  sha256: Sha256,
});

const metadata = (op) => ({
  awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
  kmsKeyArn: 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
  kmsOperation: op,
  kmsRequestId: randomUUID(),
  kmsViaService: 'ebs',
});

/** A request signed as KMS signs it (host and x-amz-date, plus the payload hash smithy adds); valid for 5 minutes. */
async function signed(port, op, fields) {
  const path = `/${PREFIX}/kms/xks/v1/keys/${KEY_ID}/${op}`;
  const body = JSON.stringify({ requestMetadata: metadata(op === 'encrypt' ? 'Encrypt' : 'Decrypt'), ...fields });
  const s = await signer.sign({ method: 'POST', protocol: 'http:', hostname: '127.0.0.1', port, path, headers: { host: `127.0.0.1:${port}` }, body });
  return { method: 'POST', path, headers: { ...s.headers, 'content-type': 'application/json' }, body };
}

/**
 * Pools of distinct signed requests: encrypts (32-byte plaintext, like a data key, with AAD), and decrypts of real
 * ciphertexts from the target that will decrypt them (the proxy's key for the proxy, the bare server's for it).
 */
async function makePools(proxyPort, barePort) {
  const t = performance.now();
  const encrypt = [];
  for (let i = 0; i < POOL; i++) {
    encrypt.push(
      await signed(proxyPort, 'encrypt', {
        plaintext: randomBytes(32).toString('base64'),
        encryptionAlgorithm: 'AES_GCM',
        additionalAuthenticatedData: randomBytes(24).toString('base64'),
      }),
    );
  }
  const decryptFor = async (port) => {
    const answers = await Promise.all(encrypt.map((r) => post(port, r)));
    count(port, answers.length + 1);
    const out = [];
    for (let i = 0; i < answers.length; i++) {
      const a = answers[i];
      if (a.status !== 200) throw new Error(`set-up encrypt on port ${port} answered ${a.status}: ${a.text}`);
      const e = JSON.parse(a.text);
      out.push(
        await signed(proxyPort, 'decrypt', {
          ciphertext: e.ciphertext,
          encryptionAlgorithm: 'AES_GCM',
          additionalAuthenticatedData: JSON.parse(encrypt[i].body).additionalAuthenticatedData,
          ciphertextMetadata: e.ciphertextMetadata,
          initializationVector: e.initializationVector,
          authenticationTag: e.authenticationTag,
        }),
      );
    }
    return out;
  };
  const pools = { encrypt, decrypt: await decryptFor(proxyPort), bareDecrypt: await decryptFor(barePort), signedAt: Date.now() };
  // Both decrypt pools must decrypt before anything is measured.
  for (const [port, pool] of [
    [proxyPort, pools.decrypt],
    [barePort, pools.bareDecrypt],
  ]) {
    const a = await post(port, pool[0]);
    if (a.status !== 200) throw new Error(`set-up decrypt on port ${port} answered ${a.status}: ${a.text}`);
  }
  for (const p of [pools.encrypt, pools.decrypt, pools.bareDecrypt]) p.raw = p.map(rawRequest);
  log(`signed ${POOL} encrypt and ${2 * POOL} decrypt requests in ${Math.round(performance.now() - t)} ms`);
  return pools;
}

// ---- measurements --------------------------------------------------------------------------------------------------

const acOpts = (port, requests) => ({
  url: `http://127.0.0.1:${port}`,
  connections: CONNECTIONS,
  pipelining: 1,
  timeout: 10,
  requests: requests.map((r) => ({ ...r })),
});

/** One closed-loop measurement of `seconds`. */
async function closedLoop(name, round, port, requests, pid, seconds) {
  const meter = cpuMeter(pid);
  const r = await autocannon({ ...acOpts(port, requests), duration: seconds });
  const cpu = meter();
  count(port, r.requests.total);
  const total = r.requests.total;
  const result = {
    name,
    round,
    seconds,
    rps: Math.round(total / seconds),
    latencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max },
    total,
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    serverCpuUsPerReq: Math.round((cpu.serverCpuSeconds * 1e6) / total),
    serverCpuPct: cpu.serverCpuPct,
    generatorCpuPct: cpu.generatorCpuPct,
    otherCpuPct: cpu.otherCpuPct,
  };
  log(
    `closed ${`${name} #${round}`.padEnd(17)} ${String(result.rps).padStart(6)} req/s  p50 ${result.latencyMs.p50}  p99 ${result.latencyMs.p99} ms  ` +
      `non-2xx ${result.non2xx}  errors ${result.errors}  CPU: server ${result.serverCpuPct}% (${result.serverCpuUsPerReq} us/req), ` +
      `generator ${result.generatorCpuPct}%, other ${result.otherCpuPct}%`,
  );
  return result;
}

/** One open-loop measurement at RATE for `seconds`. */
async function fixedRate(name, round, port, raw, pid, seconds) {
  const meter = cpuMeter(pid);
  const r = { name, round, ...(await openLoop({ port, requests: raw, rate: RATE, seconds, sockets: SOCKETS })) };
  count(port, r.completed);
  const { serverCpuSeconds, ...cpu } = meter();
  Object.assign(r, cpu);
  const l = r.latencyMs;
  log(
    `open   ${`${name} #${round}`.padEnd(17)} ${RATE} req/s  p50 ${l.p50}  p90 ${l.p90}  p99 ${l.p99}  max ${l.max} ms  ` +
      `non-2xx ${r.non2xx}  errors ${r.errors + r.missing}  send lag p99 ${r.sendLagMs.p99} ms  ` +
      `stalls>2ms ${r.stallsOver2ms.length} (worst ${Math.max(0, ...r.stallsOver2ms.map((x) => x.maxMs))} ms)  ` +
      `CPU: server ${r.serverCpuPct}%, other ${r.otherCpuPct}%`,
  );
  return r;
}

/**
 * The bare server and the proxy measured in alternating rounds (bare, proxy, bare, proxy...) after a warm-up of each,
 * so that both see the same machine; each target keeps its best round (highest req/s closed, lowest p99 open), which
 * damps bursts of unrelated work on a shared machine. Every round is kept in the results file.
 */
let quietBudget = QUIET_WAIT * 1000;
/** On a shared machine: wait (within BENCH_QUIET_WAIT in all) until other work uses under 15% of a core. */
async function waitForQuiet() {
  const t = performance.now();
  while (quietBudget > 0) {
    const m0 = machineBusySeconds();
    await new Promise((r) => setTimeout(r, 500));
    const other = ((machineBusySeconds() - m0) / 0.5) * 100;
    if (!(other > 15)) break;
    quietBudget -= 500;
  }
  const waited = performance.now() - t;
  if (QUIET_WAIT > 0 && waited > 1000) log(`waited ${(waited / 1000).toFixed(1)} s for other work on the machine to stop`);
}

async function alternate(kind, targets) {
  await waitForQuiet();
  const perRound = (kind === 'closed' ? SECONDS : OPEN_SECONDS) / ROUNDS;
  for (const t of targets) {
    if (WARMUP <= 0) break;
    if (kind === 'closed') count(t.port, (await autocannon({ ...acOpts(t.port, t.requests), duration: WARMUP })).requests.total);
    else count(t.port, (await openLoop({ port: t.port, requests: t.requests, rate: RATE, seconds: Math.min(WARMUP, 1), sockets: SOCKETS })).completed);
  }
  const rounds = targets.map(() => []);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [i, t] of targets.entries()) {
      rounds[i].push(
        kind === 'closed'
          ? await closedLoop(t.name, round, t.port, t.requests, t.pid, perRound)
          : await fixedRate(t.name, round, t.port, t.requests, t.pid, perRound),
      );
    }
  }
  return rounds.map((rs) => {
    const best = rs.reduce((a, b) => (kind === 'closed' ? (b.rps > a.rps ? b : a) : b.latencyMs.p99 < a.latencyMs.p99 ? b : a));
    // Errors count in every round, not only the best.
    const sum = (f) => rs.reduce((n, r) => n + (f(r) ?? 0), 0);
    return { ...best, non2xx: sum((r) => r.non2xx), errors: sum((r) => r.errors), missing: sum((r) => r.missing), otherCpuPctMax: Math.max(...rs.map((r) => r.otherCpuPct ?? 0)), rounds: rs };
  });
}

// ---- main ----------------------------------------------------------------------------------------------------------

async function main() {
  tmp = mkdtempSync(join(tmpdir(), 'xks-bench-'));
  mkdirSync(join(tmp, 'tokens'));
  const softhsmConf = join(tmp, 'softhsm2.conf');
  const template = readFileSync(join(ROOT, 'softhsm-config/softhsm2.conf.template'), 'utf8');
  writeFileSync(softhsmConf, template.replaceAll('@TOKENDIR@', join(tmp, 'tokens')));
  process.env.SOFTHSM2_CONF = softhsmConf; // before the module is loaded; inherited by every child
  const userPin = randomBytes(8).toString('hex');
  const { initToken } = await import('../dist/hsm/token-init.js');
  initToken({ modulePath: SOFTHSM_MODULE, label: TOKEN_LABEL, soPin: randomBytes(8).toString('hex'), userPin });

  const proxyPort = await freePort();
  writeFileSync(join(tmp, 'pin'), userPin, { mode: 0o600 });
  writeFileSync(join(tmp, 'secret'), SECRET, { mode: 0o600 });
  const config = join(tmp, 'config.json'); // YAML is a superset of JSON
  writeFileSync(
    config,
    JSON.stringify({
      hsm: { profile: 'softhsm2', tokenLabel: TOKEN_LABEL, pin: { file: 'pin' }, ...HSM_OVERRIDES },
      listeners: { http: { host: '127.0.0.1', port: proxyPort } },
      prefixes: [{ path: PREFIX, region: REGION, credentials: [{ accessKeyId: ACCESS_KEY_ID, secret: { file: 'secret' } }] }],
      log: { level: LOG_LEVEL },
    }),
  );
  const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'keys', 'create', KEY_ID, '--config', config]);
  log(`token ${TOKEN_LABEL} in ${tmp}; ${stdout.trim()}`);

  // Ceiling 2 first, alone on the machine: raw pkcs11js on the same token key.
  const hsmOut = await promisify(execFile)(
    process.execPath,
    [join(ROOT, 'scripts/bench/pkcs11-loop.mjs'), SOFTHSM_MODULE, TOKEN_LABEL, KEY_ID, String(HSM_SECONDS)],
    { env: { ...process.env, BENCH_PIN: userPin } },
  );
  const pkcs11 = JSON.parse(hsmOut.stdout.trim().split('\n').pop());
  log(
    `pkcs11js loop: ${pkcs11.encryptOpsPerSec} encrypt/s (Init+Encrypt), ${pkcs11.encryptWithRandomIvOpsPerSec}/s with ` +
      `C_GenerateRandom IV, ${pkcs11.decryptOpsPerSec} decrypt/s`,
  );

  // The servers, each in its own process.
  const prof = (who) => (PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${join(tmp, `prof-${who}`)}`] : []);
  const extra = (process.env.BENCH_PROXY_ARGS || '').split(' ').filter(Boolean); // e.g. --trace-gc
  const heap = extra.some((a) => a.startsWith('--max-semi-space-size')) ? [] : ['--max-semi-space-size=32', '--no-allocation-site-pretenuring'];
  // The V8 heap flags `xks serve` gives its workers (src/cli/serve.ts), passed here so that --workers 1 stays one
  // process (to profile).
  const proxyArgs = [...prof('proxy'), ...heap, ...extra, CLI, 'serve', '--config', config, '--workers', String(WORKERS)];
  // The request log goes to a file (or /dev/null), as in production, not through a pipe this load generator must read.
  const proxyLog = extra.length ? join(dirname(OUT), 'bench-proxy.log') : '/dev/null';
  const proxyOut = openSync(proxyLog, 'w');
  const proxy = track(spawn(process.execPath, proxyArgs, { stdio: ['ignore', proxyOut, 'pipe'] }));
  closeSync(proxyOut);
  let proxyErr = '';
  if (extra.length) log(`proxy output (node ${extra.join(' ')}) goes to ${proxyLog}`);
  proxy.stderr.on('data', (c) => (proxyErr += c));
  proxy.once('exit', (code, sig) => {
    if (!stopping) log(`proxy exited early (${code ?? sig}): ${proxyErr.trim()}`);
  });
  const bare = track(fork(join(ROOT, 'scripts/bench/bare-server.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: prof('bare') }));
  const barePort = await new Promise((res, rej) => {
    bare.once('message', (m) => res(m.port));
    bare.once('exit', (code) => rej(new Error(`bare server exited (${code})`)));
  });
  await waitFor(() => ping(proxyPort), 'the proxy to answer /ping');
  log(`proxy pid ${proxy.pid} on :${proxyPort} (log level ${LOG_LEVEL}${PROFILE ? ', --cpu-prof' : ''}${Object.keys(HSM_OVERRIDES).length ? `, hsm ${JSON.stringify(HSM_OVERRIDES)}` : ''}); bare pid ${bare.pid} on :${barePort}`);

  let pools = await makePools(proxyPort, barePort);
  const fresh = async () => {
    if (Date.now() - pools.signedAt > 240_000) pools = await makePools(proxyPort, barePort); // signatures last 5 minutes
    return pools;
  };

  const closed = {};
  if (ONLY !== 'open') {
    let p = await fresh();
    [closed.bareEncrypt, closed.proxyEncrypt] = await alternate('closed', [
      { name: 'bare encrypt', port: barePort, requests: p.encrypt, pid: bare.pid },
      { name: 'proxy encrypt', port: proxyPort, requests: p.encrypt, pid: proxy.pid },
    ]);
    p = await fresh();
    [closed.bareDecrypt, closed.proxyDecrypt] = await alternate('closed', [
      { name: 'bare decrypt', port: barePort, requests: p.bareDecrypt, pid: bare.pid },
      { name: 'proxy decrypt', port: proxyPort, requests: p.decrypt, pid: proxy.pid },
    ]);
  }
  const open = {};
  if (ONLY !== 'closed') {
    let p = await fresh();
    [open.bareEncrypt, open.proxyEncrypt] = await alternate('open', [
      { name: 'bare encrypt', port: barePort, requests: p.encrypt.raw, pid: bare.pid },
      { name: 'proxy encrypt', port: proxyPort, requests: p.encrypt.raw, pid: proxy.pid },
    ]);
    p = await fresh();
    [open.bareDecrypt, open.proxyDecrypt] = await alternate('open', [
      { name: 'bare decrypt', port: barePort, requests: p.bareDecrypt.raw, pid: bare.pid },
      { name: 'proxy decrypt', port: proxyPort, requests: p.decrypt.raw, pid: proxy.pid },
    ]);
  }

  stopping = true;
  await Promise.all([stopChild(proxy), stopChild(bare)]);
  setupAgent.destroy();

  const profile = {};
  if (PROFILE) {
    for (const [who, port] of [
      ['proxy', proxyPort],
      ['bare', barePort],
    ]) {
      const dir = join(tmp, `prof-${who}`);
      const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
      if (!file) continue;
      const keep = join(dirname(OUT), `bench-${who}.cpuprofile`);
      writeFileSync(keep, readFileSync(join(dir, file)));
      const requests = served.get(port) ?? 0;
      const s = summarise(keep, 25);
      const us = (ms) => Math.round((ms * 1000) / requests);
      profile[who] = {
        file: keep,
        requests,
        busyUsPerReq: us(s.busyMs),
        functions: s.functions.map((r) => ({ ...r, usPerReq: us(r.ms) })),
        files: s.files.map((r) => ({ ...r, usPerReq: us(r.ms) })),
      };
    }
  }

  // ---- verdicts and summary ----
  const checks = [];
  const check = (ok, text) => checks.push({ ok, text });
  const ratio = (a, b) => (a && b ? Math.round((a / b) * 1000) / 1000 : undefined);
  const ratios = {};
  if (closed.proxyEncrypt) {
    ratios.encryptVsBare = ratio(closed.proxyEncrypt.rps, closed.bareEncrypt.rps);
    ratios.decryptVsBare = ratio(closed.proxyDecrypt.rps, closed.bareDecrypt.rps);
    ratios.encryptVsPkcs11 = ratio(closed.proxyEncrypt.rps, pkcs11.encryptWithRandomIvOpsPerSec);
    ratios.decryptVsPkcs11 = ratio(closed.proxyDecrypt.rps, pkcs11.decryptOpsPerSec);
    check(ratios.encryptVsBare >= 0.6, `encrypt throughput ${closed.proxyEncrypt.rps} req/s = ${pct(ratios.encryptVsBare)} of bare ${closed.bareEncrypt.rps} (target >= 60%)`);
    check(
      closed.proxyEncrypt.non2xx === 0 && closed.proxyDecrypt.non2xx === 0 && closed.proxyEncrypt.errors === 0 && closed.proxyDecrypt.errors === 0,
      `proxy closed loop: ${closed.proxyEncrypt.non2xx + closed.proxyDecrypt.non2xx} non-2xx, ${closed.proxyEncrypt.errors + closed.proxyDecrypt.errors} errors (target 0)`,
    );
  }
  if (open.proxyEncrypt) {
    for (const op of ['Encrypt', 'Decrypt']) {
      const p = open[`proxy${op}`];
      const b = open[`bare${op}`];
      ratios[`p99${op}VsBare`] = ratio(p.latencyMs.p99, b.latencyMs.p99);
      check(
        p.latencyMs.p99 <= 2 * b.latencyMs.p99 && p.latencyMs.p99 < 25,
        `${op.toLowerCase()} at ${RATE} req/s: p99 ${p.latencyMs.p99} ms vs bare ${b.latencyMs.p99} ms = ${ratios[`p99${op}VsBare`]}x (target <= 2x and < 25 ms)`,
      );
      check(p.non2xx === 0 && p.errors === 0 && p.missing === 0, `${op.toLowerCase()} at ${RATE} req/s: ${p.non2xx} non-2xx, ${p.errors + p.missing} errors or unanswered (target 0)`);
    }
  }

  const results = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
    settings: { hsm: HSM_OVERRIDES, rounds: ROUNDS, seconds: SECONDS, warmup: WARMUP, connections: CONNECTIONS, rate: RATE, openSeconds: OPEN_SECONDS, sockets: SOCKETS, pool: POOL, logLevel: LOG_LEVEL },
    pkcs11,
    closed,
    open,
    ratios,
    checks,
    ...(PROFILE ? { profile } : {}),
    elapsedSeconds: Math.round((performance.now() - started) / 100) / 10,
  };
  writeFileSync(OUT, `${JSON.stringify(results, null, 2)}\n`);

  console.log(
    '\n== closed loop (autocannon, %d connections, keep-alive; best of %d alternating rounds of %s s) ==',
    CONNECTIONS,
    ROUNDS,
    SECONDS / ROUNDS,
  );
  table(
    ['target', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx/err', 'server CPU', 'us/req', 'other CPU'],
    Object.values(closed).map((r) => [r.name, r.rps, r.latencyMs.p50, r.latencyMs.p99, r.non2xx + r.errors, `${r.serverCpuPct}%`, r.serverCpuUsPerReq, `${r.otherCpuPctMax}%`]),
  );
  if (closed.proxyEncrypt) {
    console.log(
      `proxy/bare: encrypt ${pct(ratios.encryptVsBare)}, decrypt ${pct(ratios.decryptVsBare)}; ` +
        `proxy/pkcs11js loop: encrypt ${pct(ratios.encryptVsPkcs11)} of ${pkcs11.encryptWithRandomIvOpsPerSec}/s, decrypt ${pct(ratios.decryptVsPkcs11)} of ${pkcs11.decryptOpsPerSec}/s`,
    );
  }
  console.log(`pkcs11js loop (1 thread): Init+Encrypt ${pkcs11.encryptOpsPerSec}/s, +GenerateRandom ${pkcs11.encryptWithRandomIvOpsPerSec}/s, Init+Decrypt ${pkcs11.decryptOpsPerSec}/s`);
  if (open.proxyEncrypt) {
    console.log(
      '\n== open loop (%d req/s, %d sockets, latency from the scheduled send; best of %d alternating rounds of %s s) ==',
      RATE,
      SOCKETS,
      ROUNDS,
      OPEN_SECONDS / ROUNDS,
    );
    table(
      ['target', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'non-2xx/err', 'send lag p99', 'server CPU', 'other CPU'],
      Object.values(open).map((r) => [
        r.name,
        r.latencyMs.p50,
        r.latencyMs.p90,
        r.latencyMs.p99,
        r.latencyMs.p999,
        r.latencyMs.max,
        r.non2xx + r.errors + r.missing,
        r.sendLagMs.p99,
        `${r.serverCpuPct}%`,
        `${r.otherCpuPctMax}%`,
      ]),
    );
  }
  for (const [who, p] of Object.entries(profile)) {
    console.log(`\n== ${who} CPU profile: ${p.busyUsPerReq} us busy per request over ${p.requests} requests (${p.file}) ==`);
    const row = (r) => `${String(r.usPerReq).padStart(5)} us ${String(r.pct).padStart(5)}%  ${r.name}`;
    console.log('self time by function:');
    for (const r of p.functions.slice(0, 15)) console.log(row(r));
    console.log('self time by file or package:');
    for (const r of p.files.slice(0, 12)) console.log(row(r));
  }
  const noisy = [...Object.values(closed), ...Object.values(open)].filter((r) => r.otherCpuPctMax > NOISY_PCT);
  if (noisy.length) {
    console.log(
      `\nWARNING: other work used up to ${Math.max(...noisy.map((r) => r.otherCpuPctMax))}% of a core during ${noisy.length} measurement(s) ` +
        `(see "other CPU"): figures from a busy machine understate both servers; run again when it is quiet.`,
    );
  }
  results.noisy = noisy.length > 0;
  writeFileSync(OUT, `${JSON.stringify(results, null, 2)}\n`);
  console.log('');
  for (const c of checks) console.log(`${c.ok ? 'PASS' : 'FAIL'}  ${c.text}`);
  console.log(`\nresults: ${OUT} (${results.elapsedSeconds} s)`);
  const errorsSeen = checks.some((c) => !c.ok && /non-2xx/.test(c.text));
  if (errorsSeen) process.exitCode = 1;
  else if (process.env.BENCH_STRICT === '1' && checks.some((c) => !c.ok)) process.exitCode = 2;
}

let stopping = false;

function pct(x) {
  return x === undefined ? 'n/a' : `${Math.round(x * 1000) / 10}%`;
}

function table(head, rows) {
  const all = [head, ...rows.map((r) => r.map((c) => String(c ?? '')))];
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  for (const [n, r] of all.entries()) {
    console.log(r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  '));
    if (n === 0) console.log(w.map((x) => '-'.repeat(x)).join('  '));
  }
}

main()
  .catch((e) => {
    console.error(`bench failed: ${e?.stack ?? e}`);
    process.exitCode = 1;
  })
  .finally(cleanup);
