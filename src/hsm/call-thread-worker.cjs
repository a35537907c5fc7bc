// @ts-check
// The PKCS#11 call thread (callMode: thread; see call-thread.ts). It runs AES-GCM Init + Encrypt/Decrypt pairs,
// synchronously and in order, on sessions and keys the main thread opened: the library is loaded here again only to
// reach its function list (the same library in the same process, already initialised); C_Initialize, C_Finalize,
// logins and sessions stay on the main thread. Plain CommonJS so that it runs as is from src/ (tests) and dist/.
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const pkcs11js = require('pkcs11js');

if (!parentPort) throw new Error('call-thread-worker runs only as a worker thread');
const port = parentPort;
const mod = new pkcs11js.PKCS11();
mod.load(workerData.modulePath); // dlopen + C_GetFunctionList only

const FIELDS = 9; // per call in `meta`: id, op, offset, handle bytes, iv bytes, aad bytes, data bytes, out bytes, tag bits
const ENCRYPT = 0;

/**
 * One batch: `meta` describes each call; `bytes` holds, per call, session handle, key handle, IV, AAD and data, in
 * that order from `offset`. Answers with every call's outcome and one buffer holding every output.
 * @param {{ meta: number[]; bytes: ArrayBuffer }} batch
 */
function run(batch) {
  const { bytes } = batch;
  const meta = batch.meta;
  const at_ = (/** @type {number} */ i) => /** @type {number} */ (meta[i]);
  const n = meta.length / FIELDS;
  let outTotal = 0;
  for (let i = 0; i < n; i++) outTotal += at_(i * FIELDS + 7);
  const out = new ArrayBuffer(outTotal);
  /** @type {number[]} id, output length (or -1 on error), per call */
  const results = [];
  /** @type {Record<number, { message: string, code: number | undefined }>} */
  const errors = {};
  let outOffset = 0;
  for (let i = 0; i < n; i++) {
    const f = i * FIELDS;
    const id = at_(f), op = at_(f + 1), handleBytes = at_(f + 3), ivBytes = at_(f + 4), aadBytes = at_(f + 5);
    const dataBytes = at_(f + 6), outBytes = at_(f + 7), tagBits = at_(f + 8);
    let at = at_(f + 2);
    const view = (/** @type {number} */ len) => {
      const b = Buffer.from(bytes, at, len);
      at += len;
      return b;
    };
    const session = view(handleBytes);
    const key = view(handleBytes);
    const iv = view(ivBytes);
    const aad = view(aadBytes);
    const data = view(dataBytes);
    const target = Buffer.from(out, outOffset, outBytes);
    outOffset += outBytes;
    const mechanism = {
      mechanism: pkcs11js.CKM_AES_GCM,
      parameter: { type: pkcs11js.CK_PARAMS_AES_GCM_v240, iv, ivBits: ivBytes * 8, aad, tagBits },
    };
    try {
      if (op === ENCRYPT) {
        mod.C_EncryptInit(session, mechanism, key);
        results.push(id, mod.C_Encrypt(session, data, target).length);
      } else {
        mod.C_DecryptInit(session, mechanism, key);
        results.push(id, mod.C_Decrypt(session, data, target).length);
      }
    } catch (e) {
      results.push(id, -1);
      // The CKR name and code only: pkcs11js messages carry nothing else of use, and never data. The code names what
      // pkcs11js calls CKR_VENDOR_DEFINED (errors.ts ckrName).
      errors[id] = {
        message: e instanceof Error ? e.message.split('\n')[0] ?? 'PKCS#11 call failed' : 'PKCS#11 call failed',
        code: e instanceof Error && 'code' in e && typeof e.code === 'number' ? e.code : undefined,
      };
    }
  }
  port.postMessage({ results, errors, out }, [out]);
}

port.on('message', run);
port.postMessage('ready'); // the library loaded: calls can come
