// The PKCS#11 HSM emulator (test/emulator/pkcs11-emulator.c) in front of a real SoftHSM token: each vendor's
// behaviour, the latency and the control-file faults. Every test fails when the behaviour it names is missing.
// Ciphertexts the emulated vendors produce are checked twice: with node:crypto under a key whose value the test
// knows, and through plain forwarding (vendor=none) under a generated, sensitive key.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initToken } from '../../src/hsm/token-init.js';
import { buildEmulator, emulatorControl, EMULATOR, type EmulatorControl } from '../helpers/emulator.js';
import { createTestToken, SOFTHSM_MODULE } from '../helpers/softhsm.js';
import { TOKEN_KIND } from '../helpers/test-token.js';

const P = pkcs11js;
type Handle = pkcs11js.Handle;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const KWP = 0x210b; // PKCS#11 v3.0 CKM_AES_KEY_WRAP_KWP (RFC 5649), Luna's number
const SOFTHSM_KWP = 0x210a; // SoftHSM's CKM_AES_KEY_WRAP_PAD, its number for RFC 5649
const KNOWN_KEY = Buffer.from('8f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff', 'hex');
const ENV_NAMES = ['XKS_EMULATOR_TARGET', 'XKS_EMULATOR_VENDOR', 'XKS_EMULATOR_LATENCY_US', 'XKS_EMULATOR_CONTROL'];

interface EmulatorToken {
  label: string;
  userPin: string;
  cleanup(): void;
}

let token: EmulatorToken;
let mod: pkcs11js.PKCS11;
let ctlDir: string;
let ctl: EmulatorControl;
let ctlFile: string;
let initialized = false;
let session: Handle;
let genKey: Handle; // generated: sensitive, non-extractable, token object
let knownKey: Handle; // KNOWN_KEY's value, token object, so node:crypto can check the bytes

/** Ciphertexts made under emulated vendors, decrypted through plain forwarding at the end. */
const crossChecks: { vendor: string; iv: Buffer; ct: Buffer; aad: Buffer; pt: Buffer }[] = [];

/**
 * pkcs11js 2.1.7 drops the last character of libraryParameters (it sizes its copy without room for the NUL that
 * napi_get_value_string_utf8 writes): a trailing space keeps the real settings whole.
 */
function params_(s: string): string {
  return `${s} `;
}

function start(params: string) {
  if (initialized) mod.C_Finalize();
  initialized = false;
  mod.C_Initialize({ flags: 2, libraryParameters: params_(`control=${ctlFile} ${params}`) });
  initialized = true;
  const slot = mod.C_GetSlotList(true).find((s) => mod.C_GetTokenInfo(s).label.trim() === token.label);
  if (slot === undefined) throw new Error('test token not found through the emulator');
  session = mod.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
  mod.C_Login(session, P.CKU_USER, token.userPin);
  genKey = findKey('emu-generated');
  knownKey = findKey('emu-known');
}

function findKey(label: string): Handle {
  mod.C_FindObjectsInit(session, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_LABEL, value: label },
  ]);
  const found = mod.C_FindObjects(session, 2);
  mod.C_FindObjectsFinal(session);
  if (found.length !== 1) throw new Error(`expected one key "${label}", found ${found.length}`);
  return found[0]!;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Replaces the control file atomically, then waits past the emulator's 2 ms stat interval. */
const control = (text: string) => ctl.set(text);

/** AES-GCM with the v2.40 CK_GCM_PARAMS (ulIvBits set), as the proxy passes it. pkcs11js points pIv into `iv`. */
function gcm(iv: Buffer, aad: Buffer): pkcs11js.Mechanism {
  const parameter: pkcs11js.GcmParams = { type: P.CK_PARAMS_AES_GCM_v240, iv, ivBits: iv.length * 8, aad, tagBits: 128 };
  return { mechanism: P.CKM_AES_GCM, parameter };
}

function encrypt(key: Handle, iv: Buffer, pt: Buffer, aad: Buffer, extra = 0): Buffer {
  mod.C_EncryptInit(session, gcm(iv, aad), key);
  return Buffer.from(mod.C_Encrypt(session, pt, Buffer.alloc(pt.length + 16 + extra)));
}

function decrypt(key: Handle, iv: Buffer, ctAndTag: Buffer, aad: Buffer): Buffer {
  mod.C_DecryptInit(session, gcm(iv, aad), key);
  return Buffer.from(mod.C_Decrypt(session, ctAndTag, Buffer.alloc(ctAndTag.length)));
}

function nodeDecrypt(iv: Buffer, ctAndTag: Buffer, aad: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', KNOWN_KEY, iv, { authTagLength: 16 });
  d.setAAD(aad);
  d.setAuthTag(ctAndTag.subarray(ctAndTag.length - 16));
  return Buffer.concat([d.update(ctAndTag.subarray(0, ctAndTag.length - 16)), d.final()]);
}

function nodeEncrypt(iv: Buffer, pt: Buffer, aad: Buffer): Buffer {
  const c = createCipheriv('aes-256-gcm', KNOWN_KEY, iv, { authTagLength: 16 });
  c.setAAD(aad);
  return Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
}

function ckrOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    // pkcs11js says "CKR_NAME", or "CKR_NAME:code" for codes it has no name for in some paths.
    return /CKR_[A-Z0-9_]+/.exec((e as Error).message)?.[0] ?? (e as Error).message;
  }
  return 'no error';
}

function description(): string {
  return mod.C_GetInfo().libraryDescription.trim();
}

function timed(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

/**
 * The emulator forwards to SoftHSM whatever token kind this run tests (XKS_TEST_TOKEN): the kind's own token when it
 * is SoftHSM, else a SoftHSM token made here the same way.
 */
function softhsmToken(label: string): EmulatorToken {
  if (TOKEN_KIND === 'softhsm') return createTestToken(label);
  const dir = mkdtempSync(join(tmpdir(), 'xks-emulator-softhsm-'));
  mkdirSync(join(dir, 'tokens'));
  const conf = join(dir, 'softhsm2.conf');
  const template = readFileSync(join(ROOT, 'softhsm-config/softhsm2.conf.template'), 'utf8');
  writeFileSync(conf, template.replaceAll('@TOKENDIR@', join(dir, 'tokens')));
  process.env.SOFTHSM2_CONF = conf;
  const userPin = randomBytes(8).toString('hex');
  initToken({ modulePath: SOFTHSM_MODULE, label, soPin: randomBytes(8).toString('hex'), userPin });
  return { label, userPin, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

beforeAll(() => {
  buildEmulator();
  for (const name of ENV_NAMES) delete process.env[name];
  token = softhsmToken('xks-emulator');
  ctlDir = mkdtempSync(join(tmpdir(), 'xks-emulator-ctl-'));
  ctl = emulatorControl({ dir: ctlDir });
  ctlFile = ctl.path;
  mod = new pkcs11js.PKCS11();
  mod.load(EMULATOR);
  mod.C_Initialize({ flags: 2, libraryParameters: params_(`control=${ctlFile} vendor=none`) });
  initialized = true;
  const slot = mod.C_GetSlotList(true).find((s) => mod.C_GetTokenInfo(s).label.trim() === token.label)!;
  session = mod.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
  mod.C_Login(session, P.CKU_USER, token.userPin);
  mod.C_GenerateKey(session, { mechanism: P.CKM_AES_KEY_GEN }, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_VALUE_LEN, value: 32 },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_ENCRYPT, value: true },
    { type: P.CKA_DECRYPT, value: true },
    { type: P.CKA_LABEL, value: 'emu-generated' },
  ]);
  mod.C_CreateObject(session, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_VALUE, value: KNOWN_KEY },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_ENCRYPT, value: true },
    { type: P.CKA_DECRYPT, value: true },
    { type: P.CKA_LABEL, value: 'emu-known' },
  ]);
  genKey = findKey('emu-generated');
  knownKey = findKey('emu-known');
});

afterAll(() => {
  for (const name of ENV_NAMES) delete process.env[name];
  if (initialized) mod?.C_Finalize();
  if (ctlDir) rmSync(ctlDir, { recursive: true, force: true });
  token?.cleanup();
});

describe('vendor=none (pure forwarding)', () => {
  it('says what it is in C_GetInfo and forwards AES-GCM byte for byte', () => {
    expect(description()).toBe('xks emulator (none)');
    expect(mod.C_GetInfo().libraryDescription).toHaveLength(32);
    const iv = randomBytes(12);
    const aad = Buffer.from('aad-none');
    const pt = Buffer.from('forwarded as it is');
    const out = encrypt(knownKey, iv, pt, aad);
    expect(out).toEqual(nodeEncrypt(iv, pt, aad));
    expect(decrypt(knownKey, iv, out, aad)).toEqual(pt);
    // The caller's IV is left alone.
    const zero = Buffer.alloc(12);
    mod.C_EncryptInit(session, gcm(zero, aad), genKey);
    expect(zero.equals(Buffer.alloc(12))).toBe(true);
    mod.C_Encrypt(session, pt, Buffer.alloc(pt.length + 16));
  });

  it('lists SoftHSM mechanisms unchanged (0x210A, no 0x210B)', () => {
    const slot = mod.C_GetSessionInfo(session).slotID;
    const list = mod.C_GetMechanismList(slot);
    expect(list).toContain(SOFTHSM_KWP);
    expect(list).not.toContain(KWP);
  });

  it('environment variables override libraryParameters', () => {
    process.env.XKS_EMULATOR_VENDOR = 'luna';
    try {
      start('vendor=none');
      expect(description()).toBe('xks emulator (luna)');
    } finally {
      delete process.env.XKS_EMULATOR_VENDOR;
    }
    start('vendor=none');
    expect(description()).toBe('xks emulator (none)');
  });

  it('refuses an unknown setting', () => {
    mod.C_Finalize();
    initialized = false;
    expect(() => mod.C_Initialize({ flags: 2, libraryParameters: params_('vendor=acme') })).toThrow('CKR_ARGUMENTS_BAD');
    expect(() => mod.C_Initialize({ flags: 2, libraryParameters: params_('colour=blue') })).toThrow('CKR_ARGUMENTS_BAD');
    start('vendor=none');
  });
});

describe('vendor=cloudhsm', () => {
  beforeAll(() => start('vendor=cloudhsm'));

  it('reports the vendor', () => {
    expect(description()).toBe('xks emulator (cloudhsm)');
  });

  it('C_SetAttributeValue: CKA_ID is read-only, CKA_LABEL may change', () => {
    const k = mod.C_GenerateKey(session, { mechanism: P.CKM_AES_KEY_GEN }, [
      { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
      { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
      { type: P.CKA_VALUE_LEN, value: 32 },
      { type: P.CKA_TOKEN, value: false },
      { type: P.CKA_ENCRYPT, value: true },
      { type: P.CKA_ID, value: Buffer.from('id-1') },
      { type: P.CKA_LABEL, value: 'attr-test' },
    ]);
    expect(ckrOf(() => mod.C_SetAttributeValue(session, k, [{ type: P.CKA_ID, value: Buffer.from('id-2') }]))).toBe(
      'CKR_ATTRIBUTE_READ_ONLY',
    );
    // Nothing changes when one attribute of the template is read-only.
    expect(
      ckrOf(() =>
        mod.C_SetAttributeValue(session, k, [
          { type: P.CKA_LABEL, value: 'should-not-stick' },
          { type: P.CKA_ID, value: Buffer.from('id-3') },
        ]),
      ),
    ).toBe('CKR_ATTRIBUTE_READ_ONLY');
    mod.C_SetAttributeValue(session, k, [{ type: P.CKA_LABEL, value: 'renamed' }]);
    const [id, label] = mod.C_GetAttributeValue(session, k, [{ type: P.CKA_ID }, { type: P.CKA_LABEL }]);
    expect(Buffer.from(id!.value as Buffer).toString()).toBe('id-1');
    expect(Buffer.from(label!.value as Buffer).toString()).toBe('renamed');
    mod.C_DestroyObject(session, k);
  });

  it('AES-GCM: the HSM writes a random 12-byte IV into the caller zero IV, and the ciphertext uses it', () => {
    const aad = Buffer.from('aad-cloudhsm');
    const pt = Buffer.from('cloudhsm makes the IV');
    const iv = Buffer.alloc(12);
    const out = encrypt(knownKey, iv, pt, aad);
    expect(iv.equals(Buffer.alloc(12))).toBe(false);
    expect(out).toHaveLength(pt.length + 16);
    expect(nodeDecrypt(iv, out, aad)).toEqual(pt);
    expect(decrypt(knownKey, iv, out, aad)).toEqual(pt);

    const iv2 = Buffer.alloc(12);
    const out2 = encrypt(genKey, iv2, pt, aad);
    expect(iv2.equals(Buffer.alloc(12))).toBe(false);
    expect(iv2.equals(iv)).toBe(false);
    expect(decrypt(genKey, iv2, out2, aad)).toEqual(pt);
    crossChecks.push({ vendor: 'cloudhsm', iv: iv2, ct: out2, aad, pt });
  });

  it('AES-GCM: a non-zero caller IV is overwritten too', () => {
    const iv = Buffer.alloc(12, 0x5a);
    const aad = Buffer.alloc(0);
    const pt = Buffer.from('ignored IV');
    const out = encrypt(knownKey, iv, pt, aad);
    expect(iv.equals(Buffer.alloc(12, 0x5a))).toBe(false);
    expect(nodeDecrypt(iv, out, aad)).toEqual(pt);
  });

  it('AES-GCM: the IV write-back is visible with C_EncryptAsync', async () => {
    const iv = Buffer.alloc(12);
    const aad = Buffer.from('async');
    const pt = Buffer.from('async encrypt');
    mod.C_EncryptInit(session, gcm(iv, aad), knownKey);
    expect(iv.equals(Buffer.alloc(12))).toBe(false);
    const out = Buffer.from(await mod.C_EncryptAsync(session, pt, Buffer.alloc(pt.length + 16)));
    expect(nodeDecrypt(iv, out, aad)).toEqual(pt);
  });

  it('AES-GCM: an IV buffer other than 12 bytes is refused', () => {
    expect(ckrOf(() => mod.C_EncryptInit(session, gcm(Buffer.alloc(16), Buffer.alloc(0)), knownKey))).toBe(
      'CKR_MECHANISM_PARAM_INVALID',
    );
  });

  it('AES-GCM: over 16 KiB is CKR_DATA_LEN_RANGE, and the operation ends', () => {
    const aad = Buffer.alloc(0);
    expect(ckrOf(() => encrypt(genKey, Buffer.alloc(12), Buffer.alloc(16 * 1024 + 1), aad))).toBe('CKR_DATA_LEN_RANGE');
    const iv = Buffer.alloc(12);
    const big = randomBytes(16 * 1024);
    const out = encrypt(genKey, iv, big, aad); // a new operation starts: the refused one ended
    expect(out).toHaveLength(16 * 1024 + 16);
    // Decrypt input is ciphertext || tag: 16 KiB of plaintext makes an input over the limit.
    expect(ckrOf(() => decrypt(genKey, iv, out, aad))).toBe('CKR_DATA_LEN_RANGE');
    const small = Buffer.from('small again');
    const iv2 = Buffer.alloc(12);
    expect(decrypt(genKey, iv2, encrypt(genKey, iv2, small, aad), aad)).toEqual(small);
  });

  it('throttle in the control file fails C_GetAttributeValue until the line goes', async () => {
    const read = () => mod.C_GetAttributeValue(session, genKey, [{ type: P.CKA_LABEL }]);
    expect(Buffer.from(read()[0]!.value as Buffer).toString()).toBe('emu-generated');
    await control('# CloudHSM is over capacity\nthrottle\n');
    expect(ckrOf(read)).toBe('CKR_DEVICE_ERROR');
    expect(ckrOf(read)).toBe('CKR_DEVICE_ERROR');
    await control('');
    expect(Buffer.from(read()[0]!.value as Buffer).toString()).toBe('emu-generated');
    await control('throttle CKR_FUNCTION_FAILED\n');
    expect(ckrOf(read)).toBe('CKR_FUNCTION_FAILED');
    rmSync(ctlFile);
    await sleep(5);
    expect(ckrOf(read)).toBe('no error');
  });
});

describe('vendor=luna', () => {
  beforeAll(() => start('vendor=luna'));

  it('AES-GCM: output is ciphertext || tag || 12-byte IV, and the appended IV decrypts it', () => {
    expect(description()).toBe('xks emulator (luna)');
    const aad = Buffer.from('aad-luna');
    const pt = Buffer.from('luna appends the IV');
    const callerIv = Buffer.alloc(12);
    const out = encrypt(knownKey, callerIv, pt, aad, 12);
    expect(out).toHaveLength(pt.length + 16 + 12);
    expect(callerIv.equals(Buffer.alloc(12))).toBe(true); // Luna does not write into the parameter
    const iv = out.subarray(pt.length + 16);
    expect(iv.equals(Buffer.alloc(12))).toBe(false);
    const ctAndTag = out.subarray(0, pt.length + 16);
    expect(nodeDecrypt(iv, ctAndTag, aad)).toEqual(pt);
    expect(decrypt(knownKey, Buffer.from(iv), ctAndTag, aad)).toEqual(pt);

    const out2 = encrypt(genKey, Buffer.alloc(12), pt, aad, 12);
    const iv2 = Buffer.from(out2.subarray(pt.length + 16));
    expect(iv2.equals(iv)).toBe(false);
    crossChecks.push({ vendor: 'luna', iv: iv2, ct: Buffer.from(out2.subarray(0, pt.length + 16)), aad, pt });
  });

  it('AES-GCM: too small a buffer is CKR_BUFFER_TOO_SMALL and the operation stays active', () => {
    const aad = Buffer.alloc(0);
    const pt = Buffer.from('sized for the IV');
    mod.C_EncryptInit(session, gcm(Buffer.alloc(12), aad), knownKey);
    expect(ckrOf(() => mod.C_Encrypt(session, pt, Buffer.alloc(pt.length + 16)))).toBe('CKR_BUFFER_TOO_SMALL');
    const out = Buffer.from(mod.C_Encrypt(session, pt, Buffer.alloc(pt.length + 16 + 12)));
    expect(out).toHaveLength(pt.length + 28);
    expect(nodeDecrypt(out.subarray(pt.length + 16), out.subarray(0, pt.length + 16), aad)).toEqual(pt);
  });

  it('the mechanism list has 0x210B instead of 0x210A', () => {
    const slot = mod.C_GetSessionInfo(session).slotID;
    const list = mod.C_GetMechanismList(slot);
    expect(list).toContain(KWP);
    expect(list).not.toContain(SOFTHSM_KWP);
    expect(new Set(list).size).toBe(list.length);
    expect(mod.C_GetMechanismInfo(slot, KWP).flags & P.CKF_WRAP).toBeTruthy();
    expect(ckrOf(() => mod.C_GetMechanismInfo(slot, SOFTHSM_KWP))).toBe('CKR_MECHANISM_INVALID');
  });

  it('wraps with 0x210B as RFC 5649 and unwraps it again; 0x210A is invalid', () => {
    const kekValue = randomBytes(32);
    const kek = mod.C_CreateObject(session, [
      { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
      { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
      { type: P.CKA_VALUE, value: kekValue },
      { type: P.CKA_TOKEN, value: false },
      { type: P.CKA_WRAP, value: true },
      { type: P.CKA_UNWRAP, value: true },
    ]);
    const rfc5649 = (v: Buffer) => {
      const c = createCipheriv('id-aes256-wrap-pad', kekValue, Buffer.from('a65959a6', 'hex'));
      return Buffer.concat([c.update(v), c.final()]);
    };
    const unwrapTemplate = [
      { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
      { type: P.CKA_KEY_TYPE, value: P.CKK_GENERIC_SECRET },
      { type: P.CKA_TOKEN, value: false },
      { type: P.CKA_SENSITIVE, value: false },
      { type: P.CKA_EXTRACTABLE, value: true },
    ];
    const valueOf = (h: Handle) => Buffer.from(mod.C_GetAttributeValue(session, h, [{ type: P.CKA_VALUE }])[0]!.value as Buffer);

    const secretValue = randomBytes(32);
    const secret = mod.C_CreateObject(session, [
      { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
      { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
      { type: P.CKA_VALUE, value: secretValue },
      { type: P.CKA_TOKEN, value: false },
      { type: P.CKA_EXTRACTABLE, value: true },
      { type: P.CKA_SENSITIVE, value: false },
    ]);
    const wrapped = Buffer.from(mod.C_WrapKey(session, { mechanism: KWP }, kek, secret, Buffer.alloc(256)));
    expect(wrapped).toEqual(rfc5649(secretValue));
    const back = mod.C_UnwrapKey(session, { mechanism: KWP }, kek, wrapped, unwrapTemplate);
    expect(valueOf(back)).toEqual(secretValue);
    // A length that is not a multiple of 8 needs the padding of RFC 5649.
    const odd = randomBytes(20);
    const oddKey = mod.C_UnwrapKey(session, { mechanism: KWP }, kek, rfc5649(odd), unwrapTemplate);
    expect(valueOf(oddKey)).toEqual(odd);

    expect(ckrOf(() => mod.C_WrapKey(session, { mechanism: SOFTHSM_KWP }, kek, secret, Buffer.alloc(256)))).toBe(
      'CKR_MECHANISM_INVALID',
    );
    expect(ckrOf(() => mod.C_UnwrapKey(session, { mechanism: SOFTHSM_KWP }, kek, wrapped, unwrapTemplate))).toBe(
      'CKR_MECHANISM_INVALID',
    );
    for (const h of [oddKey, back, secret, kek]) mod.C_DestroyObject(session, h);
  });
});

describe('vendor=nshield', () => {
  beforeAll(() => start('vendor=nshield'));

  it('AES-GCM: the HSM writes the IV into the caller zero IV', () => {
    expect(description()).toBe('xks emulator (nshield)');
    const aad = Buffer.from('aad-nshield');
    const pt = Buffer.from('nshield writes the IV back');
    const iv = Buffer.alloc(12);
    const out = encrypt(knownKey, iv, pt, aad);
    expect(iv.equals(Buffer.alloc(12))).toBe(false);
    expect(nodeDecrypt(iv, out, aad)).toEqual(pt);
    const iv2 = Buffer.alloc(12);
    const out2 = encrypt(genKey, iv2, pt, aad);
    expect(iv2.equals(Buffer.alloc(12))).toBe(false);
    crossChecks.push({ vendor: 'nshield', iv: iv2, ct: out2, aad, pt });
  });

  it('AES-GCM decrypt with a tampered tag answers CKR_FUNCTION_FAILED', () => {
    const aad = Buffer.from('aad');
    const pt = Buffer.from('tamper with me');
    const iv = Buffer.alloc(12);
    const out = encrypt(genKey, iv, pt, aad);
    const bad = Buffer.from(out);
    bad[bad.length - 1]! ^= 1;
    expect(ckrOf(() => decrypt(genKey, iv, bad, aad))).toBe('CKR_FUNCTION_FAILED');
    expect(decrypt(genKey, iv, out, aad)).toEqual(pt); // the failed operation ended; the session works
  });
});

describe('latency and faults (vendor=none)', () => {
  beforeAll(async () => {
    await control('');
    start('vendor=none');
  });

  it('latency_us delays every C_Encrypt', () => {
    start('vendor=none latency_us=20000');
    const aad = Buffer.alloc(0);
    const ms = timed(() => {
      for (let i = 0; i < 5; i++) encrypt(genKey, randomBytes(12), Buffer.from('x'), aad);
    });
    expect(ms).toBeGreaterThanOrEqual(100);
    start('vendor=none');
    const fast = timed(() => {
      for (let i = 0; i < 5; i++) encrypt(genKey, randomBytes(12), Buffer.from('x'), aad);
    });
    expect(fast).toBeLessThan(100);
  });

  it('latency_us in the control file overrides the configured one', async () => {
    await control('latency_us 30000\n');
    expect(timed(() => mod.C_GetAttributeValue(session, genKey, [{ type: P.CKA_LABEL }]))).toBeGreaterThanOrEqual(30);
    await control('');
    expect(timed(() => mod.C_GetAttributeValue(session, genKey, [{ type: P.CKA_LABEL }]))).toBeLessThan(30);
  });

  it('fail C_Encrypt CKR_DEVICE_ERROR 2 fails exactly twice, and each failure ends the operation', async () => {
    await control('fail C_Encrypt CKR_DEVICE_ERROR 2\n');
    const aad = Buffer.from('faults');
    const pt = Buffer.from('third time lucky');
    const results: string[] = [];
    for (let i = 0; i < 4; i++) {
      const iv = randomBytes(12);
      results.push(
        ckrOf(() => {
          const out = encrypt(genKey, iv, pt, aad);
          expect(decrypt(genKey, iv, out, aad)).toEqual(pt);
        }),
      );
    }
    expect(results).toEqual(['CKR_DEVICE_ERROR', 'CKR_DEVICE_ERROR', 'no error', 'no error']);
    await control('');
  });

  it('fail without COUNT always fails; names without C_, hex codes and * work', async () => {
    await control('fail GetSessionInfo 0xB3\n');
    for (let i = 0; i < 3; i++) expect(ckrOf(() => mod.C_GetSessionInfo(session))).toBe('CKR_SESSION_HANDLE_INVALID');
    await control('fail * CKR_DEVICE_REMOVED\n');
    expect(ckrOf(() => mod.C_GetSessionInfo(session))).toBe('CKR_DEVICE_REMOVED');
    expect(ckrOf(() => mod.C_FindObjectsInit(session, []))).toBe('CKR_DEVICE_REMOVED');
    await control('');
    expect(ckrOf(() => mod.C_GetSessionInfo(session))).toBe('no error');
  });

  it('fail C_Initialize fails one initialisation, then the module starts', async () => {
    await control('fail C_Initialize CKR_DEVICE_ERROR 1\n');
    mod.C_Finalize();
    initialized = false;
    expect(() => mod.C_Initialize({ flags: 2, libraryParameters: params_(`control=${ctlFile} vendor=none`) })).toThrow('CKR_DEVICE_ERROR');
    start('vendor=none');
    expect(description()).toBe('xks emulator (none)');
    await control('');
  });

  it('fail C_OpenSession / C_Login / C_FindObjects inject their codes', async () => {
    await control('fail C_OpenSession CKR_TOKEN_NOT_PRESENT 1\nfail C_Login CKR_USER_NOT_LOGGED_IN 1\nfail C_FindObjects GENERAL_ERROR 1\n');
    const slot = mod.C_GetSessionInfo(session).slotID;
    expect(ckrOf(() => mod.C_OpenSession(slot, P.CKF_SERIAL_SESSION))).toBe('CKR_TOKEN_NOT_PRESENT');
    expect(ckrOf(() => mod.C_Login(session, P.CKU_USER, token.userPin))).toBe('CKR_USER_NOT_LOGGED_IN');
    mod.C_FindObjectsInit(session, [{ type: P.CKA_LABEL, value: 'emu-generated' }]);
    expect(ckrOf(() => mod.C_FindObjects(session, 1))).toBe('CKR_GENERAL_ERROR');
    expect(mod.C_FindObjects(session, 1)).toHaveLength(1);
    mod.C_FindObjectsFinal(session);
    await control('');
  });

  it('hang delays the function, COUNT times', async () => {
    await control('hang C_GetSessionInfo 150 1\n');
    expect(timed(() => mod.C_GetSessionInfo(session))).toBeGreaterThanOrEqual(145);
    expect(timed(() => mod.C_GetSessionInfo(session))).toBeLessThan(100);
    await control('hang C_GetSessionInfo 120\nfail C_GetSessionInfo DEVICE_ERROR\n');
    let rv = '';
    expect(timed(() => (rv = ckrOf(() => mod.C_GetSessionInfo(session))))).toBeGreaterThanOrEqual(115);
    expect(rv).toBe('CKR_DEVICE_ERROR');
    await control('');
  });

  it('count appends one line per call of the function (or of every function, with *), faults or not', async () => {
    const counted = join(ctlDir, 'counted');
    await control(`count C_FindObjectsInit ${counted}\nfail C_FindObjectsInit CKR_DEVICE_ERROR 1\n`);
    const lines = () => (existsSync(counted) ? readFileSync(counted, 'utf8').split('\n').filter(Boolean) : []);
    expect(ckrOf(() => mod.C_FindObjectsInit(session, []))).toBe('CKR_DEVICE_ERROR');
    for (let i = 0; i < 2; i++) {
      mod.C_FindObjectsInit(session, [{ type: P.CKA_LABEL, value: 'emu-generated' }]);
      mod.C_FindObjects(session, 1);
      mod.C_FindObjectsFinal(session);
    }
    mod.C_GetSessionInfo(session);
    expect(lines()).toEqual(['C_FindObjectsInit', 'C_FindObjectsInit', 'C_FindObjectsInit']);
    rmSync(counted);
    await control(`count * ${counted}\n`);
    mod.C_GetSessionInfo(session);
    mod.C_GenerateRandom(session, Buffer.alloc(8));
    expect(lines()).toEqual(['C_GetSessionInfo', 'C_GenerateRandom']);
    await control('');
    mod.C_GetSessionInfo(session);
    expect(lines()).toHaveLength(2);
  });

  it('hang delays an async call without blocking the event loop', async () => {
    await control('hang C_Encrypt 200\n');
    const aad = Buffer.alloc(0);
    const iv = randomBytes(12);
    mod.C_EncryptInit(session, gcm(iv, aad), genKey);
    const t0 = performance.now();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const out = await mod.C_EncryptAsync(session, Buffer.from('slow'), Buffer.alloc(4 + 16));
    clearInterval(timer);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(195);
    expect(ticks).toBeGreaterThan(5);
    expect(out).toHaveLength(20);
    await control('');
  });
});

describe('cross-check through plain forwarding', () => {
  beforeAll(async () => {
    await control('');
    start('vendor=none');
  });

  it('every emulated vendor ciphertext decrypts with the IV it reported', () => {
    expect(crossChecks.map((c) => c.vendor)).toEqual(['cloudhsm', 'luna', 'nshield']);
    for (const c of crossChecks) expect(decrypt(genKey, c.iv, c.ct, c.aad)).toEqual(c.pt);
  });

  it('SoftHSM itself answers a bad GCM tag with something other than CKR_FUNCTION_FAILED (nshield translates it)', () => {
    const c = crossChecks[0]!;
    const bad = Buffer.from(c.ct);
    bad[0]! ^= 1;
    const rv = ckrOf(() => decrypt(genKey, c.iv, bad, c.aad));
    expect(['CKR_GENERAL_ERROR', 'CKR_ENCRYPTED_DATA_INVALID']).toContain(rv);
  });
});
