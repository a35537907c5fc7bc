// The PKCS#11 ceiling for `npm run bench`: a synchronous pkcs11js loop on one token key, no HTTP, no JSON.
// Usage: SOFTHSM2_CONF=... BENCH_PIN=... node pkcs11-loop.mjs <module> <tokenLabel> <keyLabel> <secondsPerVariant>
// Prints one JSON line: ops/s for Init+Encrypt, for GenerateRandom(IV)+Init+Encrypt (the proxy's HSM work per
// encrypt) and for Init+Decrypt, each of 32 bytes with 8 bytes of AAD.
import pkcs11js from 'pkcs11js';

const [modulePath, tokenLabel, keyLabel, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg ?? 2);
const P = pkcs11js;
const mod = new P.PKCS11();
mod.load(modulePath);
mod.C_Initialize({ flags: 2 }); // CKF_OS_LOCKING_OK
try {
  const slot = mod.C_GetSlotList(true).find((s) => mod.C_GetTokenInfo(s).label.trim() === tokenLabel);
  if (!slot) throw new Error(`no token ${tokenLabel}`);
  const s = mod.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
  for (let i = 0; ; i++) {
    try {
      mod.C_Login(s, P.CKU_USER, process.env.BENCH_PIN);
      break;
    } catch (e) {
      if (/ALREADY_LOGGED_IN/.test(e.message)) break;
      if (i >= 5) throw e;
      await new Promise((r) => setTimeout(r, 50 * 2 ** i));
    }
  }
  mod.C_FindObjectsInit(s, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES }, // not the key's record object (docs/key-model.md)
    { type: P.CKA_LABEL, value: keyLabel },
  ]);
  const [key] = mod.C_FindObjects(s, 1);
  mod.C_FindObjectsFinal(s);
  if (!key) throw new Error(`no key ${keyLabel}`);

  const plaintext = Buffer.alloc(32, 7);
  const aad = Buffer.from([0, 0, 5, 1, 0, 0, 0, 1]);
  const iv = Buffer.alloc(12, 1);
  const out = Buffer.alloc(48);
  const gcm = (ivBuf) => ({ mechanism: P.CKM_AES_GCM, parameter: { type: P.CK_PARAMS_AES_GCM_v240, iv: ivBuf, ivBits: 96, aad, tagBits: 128 } });
  const sealed = Buffer.from((mod.C_EncryptInit(s, gcm(iv), key), mod.C_Encrypt(s, plaintext, Buffer.alloc(48))));

  const loop = (op) => {
    for (let i = 0; i < 200; i++) op(); // warm-up
    let n = 0;
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    let now = t0;
    while (now < end) {
      for (let i = 0; i < 500; i++) op();
      n += 500;
      now = performance.now();
    }
    return Math.round((n * 1000) / (now - t0));
  };
  const result = {
    encryptOpsPerSec: loop(() => {
      mod.C_EncryptInit(s, gcm(iv), key);
      mod.C_Encrypt(s, plaintext, out);
    }),
    encryptWithRandomIvOpsPerSec: loop(() => {
      const fresh = mod.C_GenerateRandom(s, Buffer.allocUnsafe(12));
      mod.C_EncryptInit(s, gcm(fresh), key);
      mod.C_Encrypt(s, plaintext, out);
    }),
    decryptOpsPerSec: loop(() => {
      mod.C_DecryptInit(s, gcm(iv), key);
      mod.C_Decrypt(s, sealed, out);
    }),
  };
  mod.C_CloseSession(s);
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  mod.C_Finalize();
}
