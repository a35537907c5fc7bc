// AWS's sample proxy (aws-samples/aws-kms-xks-proxy) for tests: the known answers of issue 11, ciphertexts made the way
// that proxy makes them (its build_full_aad layout, node:crypto's AES-256-GCM with a known key), keys made the way its
// operators make them (pkcs11-tool), and its example settings files (test/fixtures/aws-sample).
import { execFileSync } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { buildAwsSampleAad } from '../../src/xks/aad.js';
import { ROOT } from './built-cli.js';
import type { TestToken } from './test-token.js';

/** The sample's example settings files (<name>.toml), as its repository ships them. */
export const SAMPLE_SETTINGS_DIR = new URL('../fixtures/aws-sample/', import.meta.url);
export const SAMPLE_SETTINGS_EXAMPLES = ['settings', 'settings_cloudhsm', 'settings_docker', 'settings_luna', 'settings_nshield', 'settings_softhsmv2', 'settings_softhsmv2_osx'];

export const SAMPLE_KEY = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
export const SAMPLE_IV = Buffer.from(Array.from({ length: 12 }, (_, i) => i));
export const SAMPLE_PLAINTEXT = Buffer.from('Hello World!');
export const SAMPLE_AAD = Buffer.from('project=nile,department=marketing');
export const SAMPLE_CIPHERTEXT = 'D2e6d6rFlXT/LfOq';
/** The tags: with the AAD and no metadata, with metadata "v0.0.1" (djAuMC4x), with no AAD field and no metadata. */
export const SAMPLE_TAGS = { aad: 'WdOD39Mw7MOTotY7BIAKZQ==', aadAndMetadata: 'OP6HjKrcsRMadGXP9jc2ZA==', nothing: '+DX8ZJOvQVMTeK7gwOAsdg==' };

/** A ciphertext as the sample proxy returns it, under `key`, for `aad` (undefined: no AAD field) and its static metadata. */
export function sampleEncrypt(key: Buffer, plaintext: Buffer, aad: Buffer | undefined, metadata: Buffer | undefined, iv = randomBytes(12)) {
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(buildAwsSampleAad(aad, metadata));
  const ciphertext = Buffer.concat([c.update(plaintext), c.final()]);
  return {
    ciphertext: ciphertext.toString('base64'),
    initializationVector: iv.toString('base64'),
    authenticationTag: c.getAuthTag().toString('base64'),
    ...(metadata ? { ciphertextMetadata: metadata.toString('base64') } : {}),
    ...(aad ? { additionalAuthenticatedData: aad.toString('base64') } : {}),
  };
}

export interface SampleKeyOptions {
  /** aes (default) or generic-secret. */
  keyType?: 'aes' | 'generic-secret';
  /** Key length in bytes (default 32). */
  bytes?: number;
  /** Known material, as `pkcs11-tool --write-object key.bin --type secrkey` puts it in (default: generated in the token). */
  value?: Buffer;
  encrypt?: boolean;
  decrypt?: boolean;
  /** Default true (`--sensitive`); false as `pkcs11-tool --keygen` makes it on SoftHSM without the flag. */
  sensitive?: boolean;
}

/**
 * A key as the sample's operators make them with pkcs11-tool (`--keygen --key-type aes:32 --label X --sensitive`, or
 * `--write-object` for known material): a token secret key with that label and no CKA_ID of ours. Made with pkcs11js in
 * a child process, so the test's own library stays as it is.
 */
export function makeSampleKey(t: TestToken, label: string, opts: SampleKeyOptions = {}): void {
  const script = `
const P = require('pkcs11js');
const o = JSON.parse(process.env.XKS_SAMPLE_KEY);
const mod = new P.PKCS11();
mod.load(o.modulePath);
mod.C_Initialize(o.libraryParameters ? { flags: 2, libraryParameters: o.libraryParameters + ' ' } : { flags: 2 });
try {
  const slot = mod.C_GetSlotList(true).find((s) => mod.C_GetTokenInfo(s).label.replace(/[\\s\\0]+$/, '') === o.tokenLabel);
  const s = mod.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
  mod.C_Login(s, P.CKU_USER, o.pin);
  const aes = o.keyType === 'aes';
  const t = [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: aes ? P.CKK_AES : P.CKK_GENERIC_SECRET },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: o.sensitive },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_ENCRYPT, value: o.encrypt },
    { type: P.CKA_DECRYPT, value: o.decrypt },
    { type: P.CKA_LABEL, value: o.label },
  ];
  if (o.value) mod.C_CreateObject(s, [...t, { type: P.CKA_VALUE, value: Buffer.from(o.value, 'hex') }]);
  else mod.C_GenerateKey(s, { mechanism: aes ? P.CKM_AES_KEY_GEN : P.CKM_GENERIC_SECRET_KEY_GEN }, [...t, { type: P.CKA_VALUE_LEN, value: o.bytes }]);
  mod.C_Logout(s);
  mod.C_CloseSession(s);
} finally {
  mod.C_Finalize();
}`;
  const o = {
    modulePath: t.modulePath,
    libraryParameters: t.libraryParameters ?? '',
    tokenLabel: t.label,
    pin: t.userPin,
    label,
    keyType: opts.keyType ?? 'aes',
    bytes: opts.bytes ?? 32,
    value: opts.value?.toString('hex'),
    encrypt: opts.encrypt ?? true,
    decrypt: opts.decrypt ?? true,
    sensitive: opts.sensitive ?? true,
  };
  // The PIN in the environment, not on a command line where ps would show it.
  execFileSync(process.execPath, ['-e', script], { cwd: ROOT, env: { ...process.env, ...t.env, XKS_SAMPLE_KEY: JSON.stringify(o) }, stdio: 'pipe' });
}
