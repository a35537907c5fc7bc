// An open-loop load generator for `npm run bench`: request i is due at t0 + i/rate whatever happened before, and its
// latency runs from that scheduled time to the last byte of the answer, so a slow server cannot slow the generator down
// and hide its own queueing (no coordinated omission). Plain keep-alive sockets, one request in flight per socket, the
// request bytes built up front; a request due while every socket is busy waits in a queue, and that wait is counted.
import net from 'node:net';
import { Worker } from 'node:worker_threads';

// libuv timers tick in whole milliseconds, too coarse for a request every 0.56 ms: a worker thread sleeps in
// Atomics.wait (sub-millisecond) until each scheduled time and wakes the main thread with a message.
const TICKER = `
const { parentPort } = require('node:worker_threads');
const cell = new Int32Array(new SharedArrayBuffer(4));
parentPort.once('message', ({ t0, interval, total }) => {
  const base = performance.timeOrigin;
  for (let i = 0; i < total; i++) {
    const wait = t0 + i * interval - (base + performance.now());
    if (wait > 0.02) Atomics.wait(cell, 0, 0, wait);
    parentPort.postMessage(i);
  }
  parentPort.close();
});
`;

const CRLF2 = Buffer.from('\r\n\r\n');

/** The raw HTTP/1.1 request bytes for a pre-signed request. */
export function rawRequest({ method = 'POST', path, headers, body }) {
  const bodyBuf = Buffer.from(body);
  let head = `${method} ${path} HTTP/1.1\r\n`;
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() !== 'content-length') head += `${k}: ${v}\r\n`;
  head += `content-length: ${bodyBuf.length}\r\nconnection: keep-alive\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), bodyBuf]);
}

function connect(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1', noDelay: true });
    sock.once('connect', () => resolve(sock));
    sock.once('error', reject);
  });
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/**
 * Sends `rate` requests per second for `seconds`, cycling through `requests` (Buffers), over `sockets` keep-alive
 * connections. Resolves with latency percentiles (ms, from the scheduled send time) once every request has an answer
 * or `graceMs` after the last one was due.
 */
export async function openLoop({ port, requests, rate, seconds, sockets = 64, graceMs = 5000, precise = true }) {
  const total = Math.round(rate * seconds);
  const interval = 1000 / rate;
  const latencies = new Float64Array(total);
  const sendLag = new Float64Array(total);
  let done = 0;
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  let next = 0;
  let timer;
  let finish;
  const finished = new Promise((r) => (finish = r));
  const queue = [];
  let qHead = 0;
  const idle = [];
  const conns = [];
  let t0 = 0;
  let lastDone = 0;

  const byIndex = new Float64Array(total).fill(NaN);
  const complete = (job, status) => {
    const now = performance.now();
    latencies[done++] = now - job.scheduled;
    byIndex[job.i] = now - job.scheduled;
    lastDone = now;
    if (status >= 200 && status < 300) ok++;
    else if (status > 0) non2xx++;
    else errors++;
    if (done === total) finish();
  };

  const write = (conn, job) => {
    conn.job = job;
    sendLag[job.i] = performance.now() - job.scheduled;
    conn.sock.write(requests[job.i % requests.length]);
  };

  const freed = (conn) => {
    if (qHead < queue.length) {
      const job = queue[qHead];
      queue[qHead++] = undefined;
      write(conn, job);
    } else idle.push(conn);
  };

  const attach = (sock) => {
    const conn = { sock, job: undefined, buf: undefined, dead: false };
    sock.on('data', (chunk) => {
      const buf = conn.buf ? Buffer.concat([conn.buf, chunk]) : chunk;
      const end = buf.indexOf(CRLF2);
      if (end < 0) {
        conn.buf = buf;
        return;
      }
      const head = buf.toString('latin1', 0, end);
      const m = /\r\ncontent-length: *(\d+)/i.exec(head);
      if (!m) {
        // Every answer here carries a Content-Length; anything else is a failure of this run.
        conn.buf = undefined;
        const job = conn.job;
        conn.job = undefined;
        if (job) complete(job, 0);
        sock.destroy();
        return;
      }
      const need = end + 4 + Number(m[1]);
      if (buf.length < need) {
        conn.buf = buf;
        return;
      }
      conn.buf = undefined;
      const job = conn.job;
      conn.job = undefined;
      if (job) complete(job, Number(head.slice(9, 12)));
      if (/\r\nconnection: *close/i.test(head)) {
        sock.destroy();
        return;
      }
      freed(conn);
      pump();
    });
    const lost = () => {
      if (conn.dead) return;
      conn.dead = true;
      const i = idle.indexOf(conn);
      if (i >= 0) idle.splice(i, 1);
      if (conn.job) complete(conn.job, 0);
      conn.job = undefined;
      if (done < total) connect(port).then(attach, () => undefined);
    };
    sock.on('close', lost);
    sock.on('error', lost);
    conns.push(conn);
    freed(conn);
  };

  let ticker;
  const pump = () => {
    const now = performance.now();
    while (next < total) {
      const scheduled = t0 + next * interval;
      if (scheduled > now) break;
      const job = { i: next++, scheduled };
      const conn = idle.pop();
      if (conn) write(conn, job);
      else queue.push(job);
    }
    if (next < total && timer === undefined && ticker === undefined) {
      timer = setTimeout(() => {
        timer = undefined;
        pump();
      }, Math.max(0, t0 + next * interval - performance.now()));
    }
  };

  for (const s of await Promise.all(Array.from({ length: sockets }, () => connect(port)))) attach(s);
  t0 = performance.now() + 50;
  if (precise) {
    ticker = new Worker(TICKER, { eval: true });
    ticker.on('message', pump);
    ticker.unref();
    ticker.postMessage({ t0: performance.timeOrigin + t0, interval, total });
  }
  pump();
  const guard = setTimeout(() => finish(), seconds * 1000 + 20 + graceMs);
  await finished;
  clearTimeout(guard);
  clearTimeout(timer);
  await ticker?.terminate();
  for (const c of conns) {
    c.dead = true;
    c.sock.destroy();
  }

  const lat = latencies.slice(0, done).sort();
  // Stalls: runs of requests slower than STALL_MS, by scheduled time; tells periodic pauses (GC, timers) from noise.
  const STALL_MS = 2;
  const stalls = [];
  for (let i = 0; i < total; i++) {
    const l = byIndex[i];
    if (!(l > STALL_MS)) continue;
    const at = i * interval;
    const last = stalls[stalls.length - 1];
    if (last && at - last.endMs < 5) {
      last.endMs = Math.round(at);
      last.requests++;
      last.maxMs = Math.max(last.maxMs, Math.round(l * 10) / 10);
    } else stalls.push({ atMs: Math.round(at), endMs: Math.round(at), requests: 1, maxMs: Math.round(l * 10) / 10 });
  }
  const lag = sendLag.slice(0, next).sort();
  const r2 = (x) => Math.round(x * 100) / 100;
  return {
    rate,
    seconds,
    sent: next,
    completed: done,
    ok,
    non2xx,
    errors,
    missing: total - done,
    achievedRps: Math.round(done / ((lastDone - t0) / 1000)),
    latencyMs: {
      p50: r2(percentile(lat, 50)),
      p90: r2(percentile(lat, 90)),
      p99: r2(percentile(lat, 99)),
      p999: r2(percentile(lat, 99.9)),
      max: r2(lat[lat.length - 1] ?? NaN),
    },
    stallsOver2ms: stalls,
    sendLagMs: { p50: r2(percentile(lag, 50)), p99: r2(percentile(lag, 99)), max: r2(lag[lag.length - 1] ?? NaN) },
  };
}
