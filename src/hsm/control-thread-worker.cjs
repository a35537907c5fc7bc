// @ts-check
// The PKCS#11 control thread (see control-thread.ts): every PKCS#11 call the proxy makes other than AES-GCM on the hot
// path (finding objects, reading attributes, sessions, logins, key management, re-initialisation) runs here, one at a
// time, so that an HSM that hangs holds this thread and never the event loop. The library is loaded here again only to
// reach its function list: it is the same library in the same process. Plain CommonJS so that it runs as is from src/
// (tests) and dist/.
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const pkcs11js = require('pkcs11js');

if (!parentPort) throw new Error('control-thread-worker runs only as a worker thread');
const port = parentPort;
const mod = new pkcs11js.PKCS11();
mod.load(workerData.modulePath); // dlopen + C_GetFunctionList only

/**
 * Structured cloning turns Buffers into Uint8Arrays; pkcs11js takes Buffers.
 * @param {unknown} v
 * @returns {unknown}
 */
function toBuffers(v) {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(toBuffers);
  if (v !== null && typeof v === 'object' && !(v instanceof Date)) {
    /** @type {Record<string, unknown>} */
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = toBuffers(x);
    return o;
  }
  return v;
}

/** Composite calls: a whole search in one message. */
const composite = {
  /** C_FindObjectsInit + C_FindObjects until empty + C_FindObjectsFinal. */
  findAll(/** @type {Buffer} */ session, /** @type {pkcs11js.Template} */ template) {
    mod.C_FindObjectsInit(session, template);
    /** @type {Buffer[]} */
    const handles = [];
    try {
      for (;;) {
        const batch = mod.C_FindObjects(session, 64);
        if (batch.length === 0) break;
        handles.push(...batch);
      }
    } finally {
      mod.C_FindObjectsFinal(session);
    }
    return handles;
  },
};

port.on('message', (/** @type {{ id: number; fn: string; args: unknown[] }} */ m) => {
  try {
    const args = /** @type {unknown[]} */ (toBuffers(m.args));
    const f = m.fn in composite ? /** @type {any} */ (composite)[m.fn] : /** @type {any} */ (mod)[m.fn];
    if (typeof f !== 'function' || !m.fn.match(/^(C_[A-Za-z]+|findAll)$/)) throw new Error(`not a PKCS#11 call: ${m.fn}`);
    const value = m.fn in composite ? f(...args) : f.apply(mod, args);
    port.postMessage({ id: m.id, value });
  } catch (e) {
    const err = /** @type {{ message?: string; code?: unknown }} */ (e);
    // The CKR name and code only: pkcs11js messages carry nothing else of use, and never data.
    port.postMessage({ id: m.id, error: { message: String(err?.message ?? 'PKCS#11 call failed').split('\n')[0], code: typeof err?.code === 'number' ? err.code : undefined } });
  }
});
port.postMessage('ready');
