// `xks hsm check`: probes everything the proxy needs from a token, on throwaway objects it removes, before anyone
// deploys on it. Session objects (CKA_TOKEN=false) wherever possible; token objects only where the probe is about
// token objects (NSS merges token keys that share a CKA_ID and refuses CKA_ALLOWED_MECHANISMS on them, but not on
// session keys), and those are destroyed in a finally. The library is loaded here and finalised at the end: no
// HsmConnection, which refuses a token without AES-GCM, while the check must go on and say what else works.
import { createCipheriv, createHmac, createPublicKey, constants as cryptoConstants, publicEncrypt, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type pkcs11js from 'pkcs11js';
import { ckrMeanings, ckrName, toHsmError } from './errors.js';
import { findSlot, infoText, loadModule, P, readBool, type Handle, type LibrarySpec, type Mechanism, type Pkcs11, type Template } from './module.js';
import { mechanismName } from './capabilities.js';
import type { HsmProfile, IvMode } from './profile.js';
import { aes256KeyTemplate, hmacKeyTemplate } from './templates.js';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'info';

export interface CheckRow {
  /** Short probe name: login, aes-gcm, duplicate-id... */
  name: string;
  /** ok: as the proxy needs; warn: works with a caveat or a feature is lost; fail: does not work; info: report only. */
  status: CheckStatus;
  /** What the probe found. */
  result: string;
  needed: 'required' | 'optional';
  /** What the proxy will do about it. */
  consequence: string;
}

export interface CheckTokenInfo {
  label: string;
  serial: string;
  manufacturer: string;
  model: string;
  library: string;
}

export interface CheckReport {
  token?: CheckTokenInfo;
  rows: CheckRow[];
  /** Every required probe passed. */
  canServe: boolean;
  /** One sentence when it cannot: "the token cannot serve: it does not offer CKM_AES_GCM". */
  reason?: string;
  /** Set when the probes could not start: the library did not load, no such token, or the login failed. */
  stoppedAt?: 'library' | 'token' | 'login';
}

export interface CheckOptions {
  library: LibrarySpec;
  profile: HsmProfile;
  tokenLabel?: string | undefined;
  tokenSerial?: string | undefined;
  pin: string;
  /** The config's hsm.ivMode, when it overrides the profile's. */
  ivMode?: IvMode | undefined;
}

/** CKM_AES_KEY_WRAP_KWP (PKCS#11 v3.0, RFC 5649): pkcs11js has no constant for it. */
export const CKM_AES_KEY_WRAP_KWP = 0x210b;
/** CKM_AES_KEY_WRAP_PAD: RFC 5649 on SoftHSM 2.6 (its mis-numbering), PKCS#7 padding + RFC 3394 on NSS. */
export const CKM_AES_KEY_WRAP_PAD = 0x210a;
const CKA_ALLOWED_MECHANISMS = P.CKA_ALLOWED_MECHANISMS;
/** PKCS#11 2.40 s5.6: session states where the user is logged in. */
const CKS_RO_USER_FUNCTIONS = 1;
const CKS_RW_USER_FUNCTIONS = 3;
/** Codes that mean "the ciphertext did not authenticate" on every token (errors.ts maps them to DataInvalid). */
const STANDARD_BAD_TAG = new Set(['CKR_ENCRYPTED_DATA_INVALID', 'CKR_ENCRYPTED_DATA_LEN_RANGE', 'CKR_DATA_INVALID', 'CKR_DATA_LEN_RANGE', 'CKR_AEAD_DECRYPT_FAILED', 'CKR_SIGNATURE_INVALID']);
/** RFC 5649's alternative initial value: node:crypto's id-aes256-wrap-pad takes it as the IV. */
const KWP_AIV = Buffer.from('A65959A6', 'hex');

type Outcome<T> = { ok: true; value: T } | { ok: false; ckr: string };

function attempt<T>(fn: () => T): Outcome<T> {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    return { ok: false, ckr: codeOf(e) };
  }
}

/** The CKR name of a failure, or its message when it has none. */
function codeOf(e: unknown): string {
  return ckrName(e) ?? (e instanceof Error ? e.message : String(e));
}

/** Run every probe and finalise the library; never throws for what a token does or lacks (that is a row). */
export async function checkHsm(opts: CheckOptions): Promise<CheckReport> {
  const rows: CheckRow[] = [];
  const blockers: string[] = [];
  const add = (row: CheckRow, blocker?: string) => {
    rows.push(row);
    if (row.needed !== 'required' || row.status !== 'fail') return;
    // No AES-GCM is the reason that matters most: nothing else would make the token usable.
    if (row.name === 'aes-gcm') blockers.unshift(blocker ?? row.result);
    else blockers.push(blocker ?? row.result);
  };
  const report = (token?: CheckTokenInfo, stoppedAt?: CheckReport['stoppedAt']): CheckReport => ({
    ...(token ? { token } : {}),
    ...(stoppedAt ? { stoppedAt } : {}),
    rows,
    canServe: blockers.length === 0,
    ...(blockers.length ? { reason: `the token cannot serve: ${blockers[0]}` } : {}),
  });

  let mod: Pkcs11;
  try {
    mod = loadModule(opts.library);
  } catch (e) {
    add(
      { name: 'library', status: 'fail', result: `${opts.library.modulePath}: ${codeOf(e)}`, needed: 'required', consequence: 'nothing works without it: check hsm.module and hsm.libraryParameters' },
      `the PKCS#11 library ${opts.library.modulePath} did not load or initialise (${codeOf(e)})`,
    );
    return report(undefined, 'library');
  }
  let token: CheckTokenInfo | undefined;
  try {
    const lib = mod.C_GetInfo();
    const library = `${infoText(lib.libraryDescription)} ${lib.libraryVersion.major}.${lib.libraryVersion.minor} (${infoText(lib.manufacturerID)}), Cryptoki ${lib.cryptokiVersion.major}.${lib.cryptokiVersion.minor}`;
    add({ name: 'library', status: 'ok', result: library, needed: 'required', consequence: `loaded ${opts.library.modulePath}` });
    let slot: Handle;
    try {
      slot = findSlot(mod, { tokenLabel: opts.tokenLabel, tokenSerial: opts.tokenSerial });
    } catch (e) {
      add({ name: 'token', status: 'fail', result: (e as Error).message, needed: 'required', consequence: 'set hsm.tokenLabel or hsm.tokenSerial to a token listed' }, (e as Error).message);
      return report(undefined, 'token');
    }
    const t = mod.C_GetTokenInfo(slot);
    token = { label: infoText(t.label), serial: infoText(t.serialNumber), manufacturer: infoText(t.manufacturerID), model: infoText(t.model), library };
    add({
      name: 'token',
      status: 'ok',
      result: `"${token.label}", serial ${token.serial}, ${token.manufacturer} ${token.model}`,
      needed: 'required',
      consequence: `the proxy serves keys in this token (profile ${opts.profile.name})`,
    });
    const probe = new Probe(mod, slot, opts, add);
    try {
      if (!(await probe.login())) return report(token, 'login');
      probe.all();
    } finally {
      probe.cleanup();
    }
    return report(token);
  } finally {
    try {
      mod.C_Finalize();
    } catch {
      // nothing more to undo
    }
    // Never garbage-collected: pkcs11js dlcloses the library when its object goes, and the process's HsmConnection
    // (xks serve) loads the same library next. Keeping this one keeps the library mapped; only C_Initialize repeats.
    finalised.push(mod);
  }
}

const finalised: Pkcs11[] = [];

/** The probes on one logged-in token. */
class Probe {
  private readonly mechanisms: Set<number>;
  private readonly ivMode: IvMode;
  private loginSession: Handle | undefined;
  /** The session that holds the throwaway session objects; closing it removes them all. */
  private objects: Handle | undefined;
  /** Token objects made by a probe and not yet destroyed: destroyed in cleanup(), whatever happened. */
  private readonly tokenObjects: Handle[] = [];
  private readonly tag = randomBytes(6).toString('hex');

  constructor(
    private readonly mod: Pkcs11,
    private readonly slot: Handle,
    private readonly opts: CheckOptions,
    private readonly add: (row: CheckRow, blocker?: string) => void,
  ) {
    const list = attempt(() => mod.C_GetMechanismList(slot));
    this.mechanisms = new Set(list.ok ? list.value : []);
    this.ivMode = opts.ivMode ?? opts.profile.ivMode;
  }

  private label(what: string): string {
    return `xks-check-${this.tag}-${what}`;
  }

  private has(m: number, flag: number): boolean {
    if (!this.mechanisms.has(m)) return false;
    const info = attempt(() => this.mod.C_GetMechanismInfo(this.slot, m));
    return info.ok && (info.value.flags & flag) !== 0;
  }

  private openSession(): Handle {
    return this.mod.C_OpenSession(this.slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
  }

  /** A session of its own for one probe: whatever operation a failure leaves open ends with it. */
  private withSession<T>(fn: (s: Handle) => T): T {
    const s = this.openSession();
    try {
      return fn(s);
    } finally {
      try {
        this.mod.C_CloseSession(s);
      } catch {
        // already gone
      }
    }
  }

  /** One attribute, or why not: 'absent' (CKR_ATTRIBUTE_TYPE_INVALID), 'sensitive', or another code. */
  private read(s: Handle, h: Handle, type: number): Buffer | string {
    const got = attempt(() => this.mod.C_GetAttributeValue(s, h, [{ type }])[0]?.value as Buffer | undefined);
    if (!got.ok) return got.ckr === 'CKR_ATTRIBUTE_TYPE_INVALID' ? 'absent' : got.ckr === 'CKR_ATTRIBUTE_SENSITIVE' ? 'sensitive' : got.ckr;
    return got.value ?? 'absent';
  }

  private readFlag(s: Handle, h: Handle, type: number): boolean | string {
    const v = this.read(s, h, type);
    return typeof v === 'string' ? v : readBool(v);
  }

  private destroy(s: Handle, h: Handle | undefined): void {
    if (!h) return;
    try {
      this.mod.C_DestroyObject(s, h);
    } catch {
      // gone with its session, or already destroyed
    }
  }

  // ---- login ----------------------------------------------------------------------------------------------------

  async login(): Promise<boolean> {
    const profile = this.opts.profile;
    const opened = attempt(() => this.openSession());
    if (!opened.ok) {
      this.add({ name: 'login', status: 'fail', result: `C_OpenSession (read/write) answered ${opened.ckr}`, needed: 'required', consequence: 'the proxy needs read/write sessions' }, `it does not open a read/write session (${opened.ckr})`);
      return false;
    }
    this.loginSession = opened.value;
    for (let n = 0; ; n++) {
      try {
        this.mod.C_Login(this.loginSession, P.CKU_USER, this.opts.pin);
        break;
      } catch (e) {
        const ckr = codeOf(e);
        if (ckr === 'CKR_USER_ALREADY_LOGGED_IN') break;
        const pin = ckr === 'CKR_PIN_INCORRECT' || ckr === 'CKR_PIN_LEN_RANGE' || ckr === 'CKR_PIN_LOCKED';
        if (pin || n >= profile.loginRetries) {
          this.add(
            { name: 'login', status: 'fail', result: `C_Login as user answered ${ckr}`, needed: 'required', consequence: 'check hsm.pin; the other probes need a login and were not run' },
            pin ? `it refused the configured user PIN (${ckr})` : `the user login failed (${ckr})`,
          );
          return false;
        }
        await sleep(50 * 2 ** n + Math.random() * 50);
      }
    }
    const state = attempt(() => this.mod.C_GetSessionInfo(this.loginSession!).state);
    const user = state.ok && (state.value === CKS_RW_USER_FUNCTIONS || state.value === CKS_RO_USER_FUNCTIONS);
    this.add({
      name: 'login',
      status: user ? 'ok' : 'warn',
      result: user ? 'logged in as user with the configured PIN' : `C_Login succeeded but the session state is ${state.ok ? state.value : state.ckr}`,
      needed: 'required',
      consequence: 'the proxy keeps one session logged in for its whole life',
    });
    this.objects = this.openSession();
    return true;
  }

  all(): void {
    this.mechanismRow();
    this.random();
    const key = this.aesKeyGen();
    const copy = key ? this.sessionCopy(key) : undefined;
    this.aesGcm(this.opts.profile.sessionKeyCopies && copy ? copy : key);
    this.objectsRow();
    this.attributeChange(key);
    this.duplicateId();
    this.allowedMechanisms();
    this.keyWrapPad();
    this.rsa();
    this.hmac();
  }

  cleanup(): void {
    const s = this.objects ?? this.loginSession;
    if (s) for (const h of this.tokenObjects.splice(0)) this.destroy(s, h);
    try {
      // Session objects go with their sessions; the login ends with the last one.
      this.mod.C_CloseAllSessions(this.slot);
    } catch {
      // nothing open
    }
  }

  // ---- probes ---------------------------------------------------------------------------------------------------

  private mechanismRow(): void {
    const wanted: [number, string][] = [
      [P.CKM_AES_KEY_GEN, 'generate'],
      [P.CKM_AES_GCM, 'encrypt/decrypt'],
      [P.CKM_GENERIC_SECRET_KEY_GEN, 'records, MAC keys'],
      [P.CKM_SHA256_HMAC, 'audit, import tokens'],
      [P.CKM_AES_CMAC, 'import key checks'],
      [P.CKM_RSA_PKCS_KEY_PAIR_GEN, 'import'],
      [P.CKM_RSA_PKCS_OAEP, 'import'],
      [P.CKM_RSA_X_509, 'import'],
      [CKM_AES_KEY_WRAP_PAD, 'import, backup'],
    ];
    const missing = wanted.filter(([m]) => !this.mechanisms.has(m)).map(([m, why]) => `${mechanismName(m)} (${why})`);
    this.add({
      name: 'mechanisms',
      status: 'info',
      result: `${this.mechanisms.size} listed${missing.length ? `; not listed: ${missing.join(', ')}` : '; every one the proxy uses is listed'}`,
      needed: 'optional',
      consequence: 'the rows below try each one; `xks hsm status` lists them all',
    });
  }

  private random(): void {
    const needed = this.ivMode === 'caller-random' ? 'required' : 'optional';
    const why = this.ivMode === 'caller-random' ? 'AES-GCM IVs come from C_GenerateRandom (ivMode caller-random)' : `not used for IVs (ivMode ${this.ivMode})`;
    const got = attempt(() => this.withSession((s) => [Buffer.from(this.mod.C_GenerateRandom(s, Buffer.alloc(32))), Buffer.from(this.mod.C_GenerateRandom(s, Buffer.alloc(32)))]));
    if (!got.ok) {
      this.add({ name: 'random', status: 'fail', result: `C_GenerateRandom answered ${got.ckr}`, needed, consequence: why }, `C_GenerateRandom failed (${got.ckr}) and ${why}`);
      return;
    }
    const [a, b] = got.value as [Buffer, Buffer];
    const plausible = a.length === 32 && !a.equals(b) && !a.every((x) => x === 0);
    this.add(
      { name: 'random', status: plausible ? 'ok' : 'fail', result: plausible ? 'C_GenerateRandom gives 32 bytes, different each call' : 'C_GenerateRandom returned zeros or the same bytes twice', needed, consequence: why },
      'C_GenerateRandom returns no usable random bytes',
    );
  }

  /** A session AES-256 key from the proxy's own template, its security attributes read back. */
  private aesKeyGen(): Handle | undefined {
    const s = this.objects!;
    const template = aes256KeyTemplate({ label: this.label('aes'), token: false, encrypt: true, decrypt: true, exportable: false });
    const made = attempt(() => this.mod.C_GenerateKey(s, { mechanism: P.CKM_AES_KEY_GEN }, template));
    if (!made.ok) {
      // Which attribute? Try without the one tokens most often lack, to say so.
      const bare = template.filter((a) => a.type !== P.CKA_WRAP_WITH_TRUSTED);
      const retry = attempt(() => this.mod.C_GenerateKey(s, { mechanism: P.CKM_AES_KEY_GEN }, bare));
      const hint = retry.ok ? '; without CKA_WRAP_WITH_TRUSTED it works' : '';
      this.add(
        { name: 'aes-keygen', status: 'fail', result: `C_GenerateKey(CKM_AES_KEY_GEN) with the proxy's template answered ${made.ckr}${hint}`, needed: 'required', consequence: 'the proxy cannot create keys' },
        `it refused to generate an AES-256 key with the proxy's template (${made.ckr}${hint})`,
      );
      if (!retry.ok) {
        this.add({ name: 'cka-local', status: 'info', result: 'not tested (no generated key)', needed: 'optional', consequence: '' });
        return undefined;
      }
      // The probes that follow go on with the key the token would make.
      this.localRow(this.readFlag(s, retry.value, P.CKA_LOCAL));
      return retry.value;
    }
    const key = made.value;
    const expect: [number, string, boolean][] = [
      [P.CKA_SENSITIVE, 'CKA_SENSITIVE', true],
      [P.CKA_EXTRACTABLE, 'CKA_EXTRACTABLE', false],
      [P.CKA_ENCRYPT, 'CKA_ENCRYPT', true],
      [P.CKA_DECRYPT, 'CKA_DECRYPT', true],
      [P.CKA_WRAP, 'CKA_WRAP', false],
      [P.CKA_UNWRAP, 'CKA_UNWRAP', false],
      [P.CKA_SIGN, 'CKA_SIGN', false],
      [P.CKA_DERIVE, 'CKA_DERIVE', false],
    ];
    const wrong: string[] = [];
    const unread: string[] = [];
    for (const [type, name, want] of expect) {
      const v = this.readFlag(s, key, type);
      if (typeof v === 'string') unread.push(`${name} ${v}`);
      else if (v !== want) wrong.push(`${name}=${v}`);
    }
    const security = wrong.some((w) => w.startsWith('CKA_SENSITIVE') || w.startsWith('CKA_EXTRACTABLE')) || unread.some((w) => w.startsWith('CKA_SENSITIVE') || w.startsWith('CKA_EXTRACTABLE'));
    // The value itself is never read (key material is never read from the HSM): the attributes that guard it decide.
    const always = this.readFlag(s, key, P.CKA_ALWAYS_SENSITIVE);
    const never = this.readFlag(s, key, P.CKA_NEVER_EXTRACTABLE);
    const extra = `CKA_ALWAYS_SENSITIVE ${always}, CKA_NEVER_EXTRACTABLE ${never}`;
    if (security) {
      this.add(
        { name: 'aes-keygen', status: 'fail', result: `generated, but ${[...wrong, ...unread].join(', ')}`, needed: 'required', consequence: 'the proxy reads back every key it makes and destroys one that is not sensitive and non-extractable' },
        'it does not keep a generated AES key sensitive and non-extractable',
      );
    } else {
      this.add({
        name: 'aes-keygen',
        status: wrong.length ? 'warn' : 'ok',
        result: `AES-256 generated; sensitive, not extractable${wrong.length ? `; usage not as asked: ${wrong.join(', ')}` : ', usage as asked'}${unread.length ? `; unreadable: ${unread.join(', ')}` : ''}; ${extra}`,
        needed: 'required',
        consequence: wrong.length ? 'the proxy reads usage back and refuses keys whose usage differs: key creation fails' : 'keys are created with every security attribute spelled out and read back',
      });
    }
    this.localRow(this.readFlag(s, key, P.CKA_LOCAL));
    return key;
  }

  private localRow(local: boolean | string): void {
    const evidence = this.opts.profile.attributes.localIsEvidence;
    const found = typeof local === 'string' ? `CKA_LOCAL not readable (${local})` : `CKA_LOCAL ${local} on a generated key`;
    if (local === true) {
      this.add({
        name: 'cka-local',
        status: evidence ? 'ok' : 'info',
        result: found,
        needed: 'optional',
        consequence: evidence ? "reports use CKA_LOCAL as evidence of a key's origin (profile: localIsEvidence)" : "reports say the origin is unknown (the profile's localIsEvidence is false)",
      });
    } else {
      this.add({
        name: 'cka-local',
        status: evidence ? 'warn' : 'info',
        result: found,
        needed: 'optional',
        consequence: evidence
          ? "the profile's attributes.localIsEvidence is true but this token does not report it: set it false; reports will say the origin is unknown"
          : "reports say the origin is unknown (the profile's localIsEvidence is false)",
      });
    }
  }

  /** C_CopyObject of the session key to another session object, as the proxy copies its token keys. */
  private sessionCopy(key: Handle): Handle | undefined {
    const s = this.objects!;
    const wanted = this.opts.profile.sessionKeyCopies;
    const needed = wanted ? 'required' : 'optional';
    const consequence = wanted ? 'AES-GCM runs on a session copy of each token key (profile: sessionKeyCopies)' : 'not used (the profile has no sessionKeyCopies)';
    const made = attempt(() => this.mod.C_CopyObject(s, key, [{ type: P.CKA_TOKEN, value: false }]));
    if (!made.ok) {
      this.add(
        { name: 'session-copy', status: wanted ? 'fail' : 'info', result: `C_CopyObject(CKA_TOKEN=false) answered ${made.ckr}`, needed, consequence: wanted ? `${consequence}: set sessionKeyCopies false for this token` : consequence },
        `C_CopyObject to a session copy failed (${made.ckr}) and the profile asks for sessionKeyCopies`,
      );
      return undefined;
    }
    const copy = made.value;
    const token = this.readFlag(s, copy, P.CKA_TOKEN);
    const sensitive = this.readFlag(s, copy, P.CKA_SENSITIVE);
    const extractable = this.readFlag(s, copy, P.CKA_EXTRACTABLE);
    const good = token === false && sensitive === true && extractable === false;
    this.add(
      {
        name: 'session-copy',
        status: good ? 'ok' : wanted ? 'fail' : 'warn',
        result: `copy made: CKA_TOKEN ${token}, CKA_SENSITIVE ${sensitive}, CKA_EXTRACTABLE ${extractable}`,
        needed,
        consequence: good ? consequence : 'the proxy reads copies back and refuses one that is not sensitive and non-extractable',
      },
      'a session copy of a key is not kept sensitive and non-extractable',
    );
    return good ? copy : undefined;
  }

  /** AES-GCM as the proxy calls it for its ivMode; a known-answer test; a tampered tag. */
  private aesGcm(key: Handle | undefined): void {
    const mode = this.ivMode;
    const listed = this.has(P.CKM_AES_GCM, P.CKF_ENCRYPT) && this.has(P.CKM_AES_GCM, P.CKF_DECRYPT);
    if (!listed) {
      // Ask anyway, so the row says what the token answers.
      const init = key ? attempt(() => this.withSession((s) => this.mod.C_EncryptInit(s, gcmMechanism(Buffer.alloc(12), Buffer.alloc(0)), key))) : undefined;
      const answered = init ? (init.ok ? '; C_EncryptInit accepts it anyway' : `; C_EncryptInit answers ${init.ckr}`) : '';
      this.add(
        { name: 'aes-gcm', status: 'fail', result: `CKM_AES_GCM encrypt/decrypt not listed${answered}`, needed: 'required', consequence: 'every XKS encrypt and decrypt is AES-GCM: the proxy will not start on this token' },
        'it does not offer CKM_AES_GCM',
      );
      this.add({ name: 'aes-gcm-bad-tag', status: 'info', result: 'not tested (no AES-GCM)', needed: 'required', consequence: '' });
      return;
    }
    if (!key) {
      this.add({ name: 'aes-gcm', status: 'fail', result: 'not tested: no AES key could be generated', needed: 'required', consequence: 'the proxy cannot encrypt' }, 'no AES key could be generated to test AES-GCM');
      return;
    }
    const plaintext = Buffer.from('xks hsm check: AES-GCM round trip');
    const aad = Buffer.from('xks-check-aad');
    const enc = this.gcmEncrypt(key, plaintext, aad, mode);
    if (!enc.ok) {
      this.add(
        { name: 'aes-gcm', status: 'fail', result: `encrypt (ivMode ${mode}) failed: ${enc.ckr}`, needed: 'required', consequence: 'the proxy cannot encrypt: check the profile ivMode' },
        `AES-GCM encrypt with ivMode ${mode} failed (${enc.ckr})`,
      );
      return;
    }
    const { iv, ciphertext, tag, note } = enc.value;
    if (note) {
      this.add({ name: 'aes-gcm', status: 'fail', result: note, needed: 'required', consequence: `the proxy refuses such an encrypt (ivMode ${mode}): choose the ivMode this token uses` }, `AES-GCM does not behave as ivMode ${mode} says (${note})`);
      return;
    }
    const dec = attempt(() => this.withSession((s) => gcmDecrypt(this.mod, s, key, iv, aad, Buffer.concat([ciphertext, tag]))));
    if (!dec.ok || !dec.value.equals(plaintext)) {
      const what = dec.ok ? 'decrypt returned other bytes' : `decrypt failed: ${dec.ckr}`;
      this.add({ name: 'aes-gcm', status: 'fail', result: `encrypt ok, ${what}`, needed: 'required', consequence: 'the proxy cannot decrypt what it encrypts' }, `AES-GCM ${what}`);
      return;
    }
    const modeSays: Record<IvMode, string> = {
      'caller-random': 'IV from C_GenerateRandom passed in',
      'hsm-writes-param': 'the token wrote a non-zero IV into the parameter',
      'hsm-appends': 'the token appended a 12-byte IV to the output',
    };
    this.add({
      name: 'aes-gcm',
      status: 'ok',
      result: `encrypt + decrypt round trip (ivMode ${mode}: ${modeSays[mode]}; 16-byte tag)`,
      needed: 'required',
      consequence: 'XKS Encrypt and Decrypt call AES-GCM this way',
    });
    this.gcmKnownAnswer(mode);
    this.badTag(key, iv, aad, ciphertext, tag);
  }

  private gcmEncrypt(key: Handle, plaintext: Buffer, aad: Buffer, mode: IvMode): Outcome<{ iv: Buffer; ciphertext: Buffer; tag: Buffer; note?: string }> {
    return attempt(() =>
      this.withSession((s) => {
        const iv = mode === 'caller-random' ? Buffer.from(this.mod.C_GenerateRandom(s, Buffer.alloc(12))) : Buffer.alloc(12);
        const extra = mode === 'hsm-appends' ? 12 : 0;
        this.mod.C_EncryptInit(s, gcmMechanism(iv, aad), key);
        const out = Buffer.from(this.mod.C_Encrypt(s, plaintext, Buffer.alloc(plaintext.length + 16 + extra)));
        const n = plaintext.length;
        if (out.length !== n + 16 + extra) {
          return { iv, ciphertext: out, tag: Buffer.alloc(0), note: `the output is ${out.length - n} bytes longer than the plaintext, expected ${16 + extra}` };
        }
        const got = { iv: mode === 'hsm-appends' ? out.subarray(n + 16) : iv, ciphertext: out.subarray(0, n), tag: out.subarray(n, n + 16) };
        if (mode !== 'caller-random' && got.iv.every((b) => b === 0)) return { ...got, note: `the IV is still all zero after encrypt` };
        return got;
      }),
    );
  }

  /** The same encrypt on a session key of known value, compared with node:crypto (skipped if the token refuses the key). */
  private gcmKnownAnswer(mode: IvMode): void {
    const s = this.objects!;
    const value = randomBytes(32);
    const made = attempt(() => this.mod.C_CreateObject(s, knownAesTemplate(this.label('gcm-kat'), value, { encrypt: true, decrypt: true })));
    if (!made.ok) {
      this.add({ name: 'aes-gcm-kat', status: 'info', result: `skipped: a session key of known value was refused (${made.ckr})`, needed: 'optional', consequence: 'the round trip above is the only AES-GCM test' });
      return;
    }
    try {
      const plaintext = randomBytes(45);
      const aad = randomBytes(20);
      const enc = this.gcmEncrypt(made.value, plaintext, aad, mode);
      if (!enc.ok || enc.value.note) {
        this.add({ name: 'aes-gcm-kat', status: 'fail', result: `encrypt failed: ${enc.ok ? enc.value.note : enc.ckr}`, needed: 'required', consequence: 'AES-GCM output must be standard' }, 'AES-GCM on a key of known value failed');
        return;
      }
      const c = createCipheriv('aes-256-gcm', value, enc.value.iv);
      c.setAAD(aad);
      const expected = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
      const same = expected.equals(Buffer.concat([enc.value.ciphertext, enc.value.tag]));
      this.add(
        {
          name: 'aes-gcm-kat',
          status: same ? 'ok' : 'fail',
          result: same ? "ciphertext and tag equal node:crypto's aes-256-gcm for the same key, IV and AAD" : "ciphertext or tag differ from node:crypto's aes-256-gcm",
          needed: 'required',
          consequence: same ? 'ciphertexts are standard AES-GCM (CK_GCM_PARAMS with ulIvBits, 128-bit tag)' : 'the token reads the GCM parameters differently: ciphertexts would not be standard',
        },
        "its AES-GCM output differs from the standard's",
      );
    } finally {
      this.destroy(s, made.value);
    }
  }

  private badTag(key: Handle, iv: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer): void {
    const bad = Buffer.from(tag);
    bad[0]! ^= 1;
    const dec = attempt(() => this.withSession((s) => gcmDecrypt(this.mod, s, key, iv, aad, Buffer.concat([ciphertext, bad]))));
    if (dec.ok) {
      this.add({ name: 'aes-gcm-bad-tag', status: 'fail', result: 'a tampered tag was ACCEPTED', needed: 'required', consequence: 'the token does not authenticate ciphertexts' }, 'it accepts an AES-GCM ciphertext with a tampered tag');
      return;
    }
    const ckr = dec.ckr;
    const kind = toHsmError(new Error(ckr), 'decrypt', ckrMeanings(this.opts.profile)).code;
    const standard = STANDARD_BAD_TAG.has(ckr);
    const profiled = this.opts.profile.errors.badTag.includes(ckr);
    this.add({
      name: 'aes-gcm-bad-tag',
      status: kind === 'DataInvalid' ? 'ok' : 'warn',
      result: `refused with ${ckr}${standard ? ' (a standard code)' : profiled ? " (listed in the profile's errors.badTag)" : ''}`,
      needed: 'required',
      consequence:
        kind === 'DataInvalid'
          ? 'a tampered ciphertext answers InvalidCiphertextException'
          : `the proxy would read it as ${kind}, not InvalidCiphertextException: add ${ckr} to errors.badTag in the profile`,
    });
  }

  /**
   * C_CreateObject of a session generic secret (the kind of object the proxy keeps its records in), or of a session
   * data object where the token refuses a secret of known value; C_FindObjects by its label; C_DestroyObject.
   */
  private objectsRow(): void {
    const label = this.label('object');
    // A public session data object: its value is no key (C_CreateObject of key material is for the import workaround
    // only), and NSS refuses a private session data object (CKR_ATTRIBUTE_VALUE_INVALID).
    const data: Template = [
      { type: P.CKA_CLASS, value: P.CKO_DATA },
      { type: P.CKA_TOKEN, value: false },
      { type: P.CKA_LABEL, value: label },
      { type: P.CKA_VALUE, value: Buffer.from('xks-check') },
    ];
    const r = attempt(() =>
      this.withSession((s) => {
        const count = () => {
          this.mod.C_FindObjectsInit(s, [{ type: P.CKA_LABEL, value: label }]);
          try {
            return this.mod.C_FindObjects(s, 10).length;
          } finally {
            this.mod.C_FindObjectsFinal(s);
          }
        };
        const kind = 'data object';
        const h = this.mod.C_CreateObject(s, data);
        const found = count();
        this.mod.C_DestroyObject(s, h);
        return { kind, found, after: count() };
      }),
    );
    const good = r.ok && r.value.found === 1 && r.value.after === 0;
    const result = r.ok ? `created a session ${r.value.kind}; found ${r.value.found} by label; ${r.value.after} left after C_DestroyObject` : `failed: ${r.ckr}`;
    this.add(
      { name: 'objects', status: good ? 'ok' : 'fail', result, needed: 'required', consequence: 'the proxy finds its keys by label and destroys versions it deletes' },
      r.ok ? `C_FindObjects by label found ${r.value.found} object(s) where there was one` : `creating, finding or destroying an object failed (${r.ckr})`,
    );
  }

  /** C_SetAttributeValue of CKA_LABEL and CKA_ID on the throwaway session key (report only). */
  private attributeChange(key: Handle | undefined): void {
    if (!key) {
      this.add({ name: 'attribute-change', status: 'info', result: 'not tested (no generated key)', needed: 'optional', consequence: '' });
      return;
    }
    const s = this.objects!;
    const change = (type: number, value: Buffer | string) => {
      const r = attempt(() => this.mod.C_SetAttributeValue(s, key, [{ type, value }]));
      if (!r.ok) return `refused (${r.ckr})`;
      const back = this.read(s, key, type);
      const want = Buffer.isBuffer(value) ? value : Buffer.from(value);
      return Buffer.isBuffer(back) && back.equals(want) ? 'changes' : 'accepted but not changed';
    };
    const label = change(P.CKA_LABEL, this.label('renamed'));
    const id = change(P.CKA_ID, Buffer.from(`xks-check:${this.tag}:changed`));
    this.add({ name: 'attribute-change', status: 'info', result: `CKA_LABEL ${label}; CKA_ID ${id}`, needed: 'optional', consequence: 'report only: the proxy needs to change neither (CloudHSM cannot change CKA_ID)' });
  }

  /** Two token keys with the same CKA_CLASS and CKA_ID: two objects, or one overwritten (NSS)? */
  private duplicateId(): void {
    const s = this.objects!;
    const id = Buffer.from(`xks-check:${this.tag}:dup`);
    const first = this.label('dup-1');
    const second = this.label('dup-2');
    const make = (label: string) => {
      const r = attempt(() => this.mod.C_GenerateKey(s, { mechanism: P.CKM_GENERIC_SECRET_KEY_GEN }, probeSecretTemplate(label, id, true)));
      if (r.ok) this.tokenObjects.push(r.value);
      return r;
    };
    const a = make(first);
    if (!a.ok) {
      this.add({ name: 'duplicate-id', status: 'info', result: `not tested: a token generic secret could not be generated (${a.ckr})`, needed: 'optional', consequence: 'give every object a CKA_ID of its own' });
      return;
    }
    const b = make(second);
    if (!b.ok) {
      this.add({ name: 'duplicate-id', status: 'info', result: `a second token key with the same CKA_ID was refused (${b.ckr})`, needed: 'optional', consequence: 'the token keeps CKA_IDs unique itself: the proxy gives every object a CKA_ID of its own' });
      return;
    }
    const found = attempt(() => {
      this.mod.C_FindObjectsInit(s, [{ type: P.CKA_CLASS, value: P.CKO_SECRET_KEY }, { type: P.CKA_ID, value: id }]);
      try {
        return this.mod.C_FindObjects(s, 10);
      } finally {
        this.mod.C_FindObjectsFinal(s);
      }
    });
    for (const h of found.ok ? found.value : []) if (!this.tokenObjects.some((t) => t.equals(h))) this.tokenObjects.push(h);
    const label = this.read(s, a.value, P.CKA_LABEL);
    const firstLabel = Buffer.isBuffer(label) ? label.toString('utf8') : `unreadable (${label})`;
    const count = found.ok ? found.value.length : -1;
    const same = a.value.equals(b.value);
    const overwritten = firstLabel !== first;
    const separate = !same && count === 2 && !overwritten;
    const result = separate
      ? `a second object: two handles, ${count} found by that CKA_ID, the first keeps its label`
      : `the same object is returned and overwritten: ${same ? 'one handle for both' : 'two handles'}, ${count} found by that CKA_ID, the first's label ${overwritten ? `became "${firstLabel === second ? 'the second label' : firstLabel}"` : 'kept'}`;
    this.add({
      name: 'duplicate-id',
      status: separate ? 'ok' : 'warn',
      result,
      needed: 'optional',
      consequence: separate
        ? 'objects may share a CKA_ID; the proxy gives each one its own anyway'
        : 'a new key with an existing CKA_CLASS and CKA_ID replaces that key: the proxy never reuses a CKA_ID; keys made outside it (pkcs11-tool --id) must not either',
    });
  }

  /** CKA_ALLOWED_MECHANISMS on a token key, as the proxy's HMAC keys carry it when the profile allows. */
  private allowedMechanisms(): void {
    const s = this.objects!;
    const inProfile = this.opts.profile.attributes.allowedMechanisms;
    const template = hmacKeyTemplate(this.label('am')).map((a) => (a.type === P.CKA_MODIFIABLE ? { type: a.type, value: true } : a));
    const made = attempt(() => this.mod.C_GenerateKey(s, { mechanism: P.CKM_GENERIC_SECRET_KEY_GEN }, template));
    let result: string;
    let accepted = false;
    if (made.ok) {
      this.tokenObjects.push(made.value);
      const back = this.read(s, made.value, CKA_ALLOWED_MECHANISMS);
      accepted = Buffer.isBuffer(back) && back.length >= 8;
      result = accepted ? `a token key holds it (read back: ${readMechanisms(back as Buffer).join(', ')})` : `a token key was made but reads it back as ${Buffer.isBuffer(back) ? `${back.length} bytes` : back}`;
    } else {
      const session = attempt(() => this.mod.C_GenerateKey(s, { mechanism: P.CKM_GENERIC_SECRET_KEY_GEN }, template.map((a) => (a.type === P.CKA_TOKEN ? { type: a.type, value: false } : a))));
      if (session.ok) this.destroy(s, session.value);
      result = `a token key with it is refused (${made.ckr})${session.ok ? '; a session key takes it' : ''}`;
    }
    const consequence = inProfile
      ? accepted
        ? 'the proxy restricts its HMAC and import keys with it (profile: allowedMechanisms)'
        : 'the profile says allowedMechanisms: true, so audit, import and backup key creation would fail: set attributes.allowedMechanisms false'
      : accepted
        ? 'the profile leaves it out (allowedMechanisms: false); this token would take it'
        : 'the proxy leaves it out (profile: allowedMechanisms false)';
    this.add({ name: 'allowed-mechanisms', status: inProfile && !accepted ? 'warn' : accepted ? 'ok' : 'info', result, needed: 'optional', consequence });
  }

  /** Which of 0x210A and 0x210B the token lists, and which one does RFC 5649: known-answer test against node:crypto. */
  private keyWrapPad(): void {
    const s = this.objects!;
    const listed = [CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_KWP].filter((m) => this.mechanisms.has(m));
    const kekValue = randomBytes(32);
    const keyValue = randomBytes(32);
    const kek = attempt(() => this.mod.C_CreateObject(s, knownAesTemplate(this.label('kek'), kekValue, { wrap: true, unwrap: true })));
    const key = attempt(() => this.mod.C_CreateObject(s, knownAesTemplate(this.label('wrapped'), keyValue, { encrypt: true, extractable: true })));
    const hex = (m: number) => `0x${m.toString(16).toUpperCase()}`;
    const found: string[] = [];
    const rfc5649: number[] = [];
    if (!kek.ok || !key.ok) {
      found.push(`known-answer test skipped: a key of known value was refused (${kek.ok ? (key as { ckr: string }).ckr : kek.ckr})`);
    } else {
      const c = createCipheriv('id-aes256-wrap-pad', kekValue, KWP_AIV);
      const expected = Buffer.concat([c.update(keyValue), c.final()]);
      for (const m of [CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_KWP]) {
        const w = attempt(() => Buffer.from(this.mod.C_WrapKey(s, { mechanism: m }, kek.value, key.value, Buffer.alloc(512))));
        const isListed = listed.includes(m);
        if (!w.ok) {
          if (isListed) found.push(`${hex(m)} listed, wrap answers ${w.ckr}`);
          continue;
        }
        const is5649 = w.value.equals(expected);
        if (is5649) rfc5649.push(m);
        found.push(`${hex(m)}${isListed ? '' : ' (not listed)'}: ${is5649 ? 'RFC 5649' : `not RFC 5649 (${w.value.length} bytes for a 32-byte key${w.value.length === 48 ? ': PKCS#7 padding + RFC 3394' : ''})`}`);
      }
      for (const m of [CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_KWP]) {
        if (!listed.includes(m) && !found.some((f) => f.startsWith(hex(m)))) found.push(`${hex(m)} not listed`);
      }
    }
    if (kek.ok) this.destroy(s, kek.value);
    if (key.ok) this.destroy(s, key.value);
    const padIs5649 = rfc5649.includes(CKM_AES_KEY_WRAP_PAD);
    const kwpIs5649 = rfc5649.includes(CKM_AES_KEY_WRAP_KWP);
    // The proxy's own choice (key-wrap.ts chooseKeyWrap): the standard number first, each confirmed the same way.
    const consequence = kwpIs5649
      ? 'RSA_AES_KEY_WRAP imports, backups and KEK check values use 0x210B (CKM_AES_KEY_WRAP_KWP)'
      : padIs5649
        ? 'RSA_AES_KEY_WRAP imports, backups and KEK check values use 0x210A, which is RFC 5649 on this token'
        : 'no RFC 5649 key wrap: RSA_AES_KEY_WRAP imports and backups are unavailable';
    this.add({ name: 'aes-kwp', status: kwpIs5649 || padIs5649 ? 'ok' : 'warn', result: found.join('; '), needed: 'optional', consequence });
  }

  /** An RSA-2048 session key pair; OAEP with SHA-1 and SHA-256 (decrypt and unwrap), raw RSA decrypt. */
  private rsa(): void {
    const s = this.objects!;
    const pair = attempt(() =>
      this.mod.C_GenerateKeyPair(
        s,
        { mechanism: P.CKM_RSA_PKCS_KEY_PAIR_GEN },
        [
          { type: P.CKA_CLASS, value: P.CKO_PUBLIC_KEY },
          { type: P.CKA_KEY_TYPE, value: P.CKK_RSA },
          { type: P.CKA_TOKEN, value: false },
          { type: P.CKA_ENCRYPT, value: true },
          { type: P.CKA_WRAP, value: true },
          { type: P.CKA_VERIFY, value: false },
          { type: P.CKA_MODULUS_BITS, value: 2048 },
          { type: P.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
          { type: P.CKA_LABEL, value: this.label('rsa') },
        ],
        [
          { type: P.CKA_CLASS, value: P.CKO_PRIVATE_KEY },
          { type: P.CKA_KEY_TYPE, value: P.CKK_RSA },
          { type: P.CKA_TOKEN, value: false },
          { type: P.CKA_PRIVATE, value: true },
          { type: P.CKA_SENSITIVE, value: true },
          { type: P.CKA_EXTRACTABLE, value: false },
          { type: P.CKA_DECRYPT, value: true },
          { type: P.CKA_UNWRAP, value: true },
          { type: P.CKA_SIGN, value: false },
          { type: P.CKA_LABEL, value: this.label('rsa') },
        ],
      ),
    );
    if (!pair.ok) {
      for (const name of ['rsa-oaep-sha1', 'rsa-oaep-sha256', 'rsa-x509']) {
        this.add({ name, status: 'warn', result: `not tested: C_GenerateKeyPair(RSA 2048) answered ${pair.ckr}`, needed: 'optional', consequence: 'key material import (GetParametersForImport) is unavailable' });
      }
      return;
    }
    const { publicKey, privateKey } = pair.value;
    try {
      const modulus = this.read(s, publicKey, P.CKA_MODULUS);
      const exponent = this.read(s, publicKey, P.CKA_PUBLIC_EXPONENT);
      if (!Buffer.isBuffer(modulus) || !Buffer.isBuffer(exponent)) throw new Error('the public key has no readable modulus');
      const pub = createPublicKey({ key: { kty: 'RSA', n: modulus.toString('base64url'), e: exponent.toString('base64url') }, format: 'jwk' });
      const oaep: Record<string, boolean> = {};
      for (const hash of ['sha1', 'sha256'] as const) oaep[hash] = this.oaep(s, pub, privateKey, hash);
      this.rawRsa(pub, privateKey, modulus.length, oaep);
    } catch (e) {
      this.add({ name: 'rsa-oaep', status: 'warn', result: `not tested: ${codeOf(e)}`, needed: 'optional', consequence: 'key material import may not work' });
    } finally {
      this.destroy(s, privateKey);
      this.destroy(s, publicKey);
    }
  }

  private oaep(s: Handle, pub: ReturnType<typeof createPublicKey>, privateKey: Handle, hash: 'sha1' | 'sha256'): boolean {
    // source 1: CKZ_DATA_SPECIFIED (pkcs11js does not export it), with no data: the empty label
    const parameter: pkcs11js.RsaOAEP = { type: P.CK_PARAMS_RSA_OAEP, hashAlg: hash === 'sha1' ? P.CKM_SHA_1 : P.CKM_SHA256, mgf: hash === 'sha1' ? P.CKG_MGF1_SHA1 : P.CKG_MGF1_SHA256, source: 1 };
    const mechanism: Mechanism = { mechanism: P.CKM_RSA_PKCS_OAEP, parameter };
    const secret = randomBytes(32);
    const wrapped = publicEncrypt({ key: pub, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, secret);
    const dec = attempt(() =>
      this.withSession((d) => {
        this.mod.C_DecryptInit(d, mechanism, privateKey);
        return Buffer.from(this.mod.C_Decrypt(d, wrapped, Buffer.alloc(512)));
      }),
    );
    const decrypt = dec.ok ? (dec.value.equals(secret) ? 'decrypt ok' : 'decrypt returned other bytes') : `decrypt ${dec.ckr}`;
    let unwrap: string;
    let honoured = false;
    const un = attempt(() =>
      this.mod.C_UnwrapKey(s, mechanism, privateKey, wrapped, [
        { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
        { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
        { type: P.CKA_TOKEN, value: false },
        { type: P.CKA_PRIVATE, value: true },
        { type: P.CKA_SENSITIVE, value: true },
        { type: P.CKA_EXTRACTABLE, value: false },
        { type: P.CKA_ENCRYPT, value: true },
        { type: P.CKA_DECRYPT, value: true },
        { type: P.CKA_LABEL, value: this.label(`unwrapped-${hash}`) },
      ]),
    );
    if (un.ok) {
      const sensitive = this.readFlag(s, un.value, P.CKA_SENSITIVE);
      const extractable = this.readFlag(s, un.value, P.CKA_EXTRACTABLE);
      // Decided by the attributes read back, never by reading the value.
      honoured = sensitive === true && extractable === false;
      unwrap = honoured ? 'unwrap ok (sensitive, not extractable)' : `unwrap ignores the template: CKA_SENSITIVE ${sensitive}, CKA_EXTRACTABLE ${extractable}`;
      this.destroy(s, un.value);
    } else {
      unwrap = `unwrap ${un.ckr}`;
    }
    const works = dec.ok && dec.value.equals(secret) && un.ok;
    const label = hash === 'sha1' ? 'SHA-1' : 'SHA-256';
    const imports = hash === 'sha1' ? 'RSAES_OAEP_SHA_1 and RSA_AES_KEY_WRAP_SHA_1' : 'RSAES_OAEP_SHA_256 and RSA_AES_KEY_WRAP_SHA_256';
    const consequence = works && honoured
      ? `${imports} imports unwrap inside the HSM`
      : works
        ? `the proxy reads unwrapped keys back and refuses these: ${imports} imports fail unless the raw-RSA path is used`
        : `${imports} imports need raw RSA (CKM_RSA_X_509, below) and OAEP decoding in the proxy; RSAES_OAEP_${hash === 'sha1' ? 'SHA_1' : 'SHA_256'} then only with the operator's opt-in`;
    this.add({ name: `rsa-oaep-${hash}`, status: works && honoured ? 'ok' : 'warn', result: `OAEP ${label} (RSA 2048, session keys): ${decrypt}, ${unwrap}`, needed: 'optional', consequence });
    return works && honoured;
  }

  private rawRsa(pub: ReturnType<typeof createPublicKey>, privateKey: Handle, bytes: number, oaep: Record<string, boolean>): void {
    const message = randomBytes(bytes);
    message[0] = 0;
    const enc = publicEncrypt({ key: pub, padding: cryptoConstants.RSA_NO_PADDING }, message);
    const dec = attempt(() =>
      this.withSession((d) => {
        this.mod.C_DecryptInit(d, { mechanism: P.CKM_RSA_X_509 }, privateKey);
        return Buffer.from(this.mod.C_Decrypt(d, enc, Buffer.alloc(bytes)));
      }),
    );
    // Some tokens strip leading zero bytes from the raw result.
    const same = dec.ok && Buffer.concat([Buffer.alloc(Math.max(0, bytes - dec.value.length)), dec.value]).equals(message);
    const fallbackNeeded = !oaep.sha1 || !oaep.sha256;
    this.add({
      name: 'rsa-x509',
      status: same ? 'ok' : fallbackNeeded ? 'warn' : 'info',
      result: same ? 'raw RSA decrypt (CKM_RSA_X_509) ok' : `raw RSA decrypt ${dec.ok ? 'returned other bytes' : dec.ckr}`,
      needed: 'optional',
      consequence: same
        ? fallbackNeeded
          ? 'the import path for the OAEP hashes the token lacks'
          : 'not needed: native OAEP works for both hashes'
        : fallbackNeeded
          ? 'imports with the OAEP hashes the token lacks are unavailable'
          : 'not needed: native OAEP works for both hashes',
    });
  }

  /** HMAC-SHA256 by C_Sign on a generic secret of known value, against node:crypto; a generated one if refused. */
  private hmac(): void {
    const s = this.objects!;
    const value = randomBytes(32);
    const data = Buffer.from('xks hsm check: HMAC-SHA256');
    const consequence = 'audit trail checkpoints, import tokens and backups are MACed with HMAC-SHA256 in the HSM';
    const known = attempt(() =>
      this.mod.C_CreateObject(s, [
        { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
        { type: P.CKA_KEY_TYPE, value: P.CKK_GENERIC_SECRET },
        { type: P.CKA_TOKEN, value: false },
        { type: P.CKA_PRIVATE, value: true },
        { type: P.CKA_SENSITIVE, value: true },
        { type: P.CKA_EXTRACTABLE, value: false },
        { type: P.CKA_SIGN, value: true },
        { type: P.CKA_VERIFY, value: true },
        { type: P.CKA_VALUE, value },
        { type: P.CKA_LABEL, value: this.label('hmac') },
      ]),
    );
    const key = known.ok ? known : attempt(() => this.mod.C_GenerateKey(s, { mechanism: P.CKM_GENERIC_SECRET_KEY_GEN }, probeSecretTemplate(this.label('hmac'), undefined, false, true)));
    if (!key.ok) {
      this.add({ name: 'hmac-sha256', status: 'warn', result: `no generic secret could be made (${key.ckr})`, needed: 'optional', consequence: `${consequence}: unavailable` });
      return;
    }
    const mac = attempt(() =>
      this.withSession((d) => {
        this.mod.C_SignInit(d, { mechanism: P.CKM_SHA256_HMAC }, key.value);
        return Buffer.from(this.mod.C_Sign(d, data, Buffer.alloc(64)));
      }),
    );
    this.destroy(s, key.value);
    if (!mac.ok) {
      this.add({ name: 'hmac-sha256', status: 'warn', result: `C_Sign(CKM_SHA256_HMAC) answered ${mac.ckr}`, needed: 'optional', consequence: `${consequence}: unavailable` });
      return;
    }
    const good = known.ok ? mac.value.equals(createHmac('sha256', value).update(data).digest()) : mac.value.length === 32;
    this.add({
      name: 'hmac-sha256',
      status: good ? 'ok' : 'warn',
      result: good ? (known.ok ? "C_Sign equals node:crypto's HMAC-SHA256 for the same key" : 'C_Sign gives 32 bytes (known-value key refused: no comparison)') : 'C_Sign gives a different MAC from HMAC-SHA256',
      needed: 'optional',
      consequence: good ? consequence : `${consequence}: do not rely on them here`,
    });
  }
}

function gcmMechanism(iv: Buffer, aad: Buffer): Mechanism {
  const parameter: pkcs11js.AesGCM = { type: P.CK_PARAMS_AES_GCM_v240, iv, ivBits: iv.length * 8, aad, tagBits: 128 };
  return { mechanism: P.CKM_AES_GCM, parameter };
}

function gcmDecrypt(mod: Pkcs11, s: Handle, key: Handle, iv: Buffer, aad: Buffer, input: Buffer): Buffer {
  mod.C_DecryptInit(s, gcmMechanism(iv, aad), key);
  return Buffer.from(mod.C_Decrypt(s, input, Buffer.alloc(input.length)));
}

/** A session AES key of known value: for known-answer tests only. */
function knownAesTemplate(label: string, value: Buffer, use: { encrypt?: boolean; decrypt?: boolean; wrap?: boolean; unwrap?: boolean; extractable?: boolean }): Template {
  return [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_TOKEN, value: false },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: use.extractable === true },
    { type: P.CKA_ENCRYPT, value: use.encrypt === true },
    { type: P.CKA_DECRYPT, value: use.decrypt === true },
    { type: P.CKA_WRAP, value: use.wrap === true },
    { type: P.CKA_UNWRAP, value: use.unwrap === true },
    { type: P.CKA_VALUE, value },
    { type: P.CKA_LABEL, value: label },
  ];
}

/** A small generic secret that can do nothing (or only sign), as the proxy's record objects. */
function probeSecretTemplate(label: string, id: Buffer | undefined, token: boolean, sign = false): Template {
  return [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_GENERIC_SECRET },
    { type: P.CKA_VALUE_LEN, value: 32 },
    { type: P.CKA_TOKEN, value: token },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_MODIFIABLE, value: true },
    { type: P.CKA_SIGN, value: sign },
    { type: P.CKA_VERIFY, value: sign },
    { type: P.CKA_LABEL, value: label },
    ...(id ? [{ type: P.CKA_ID, value: id }] : []),
  ];
}

function readMechanisms(b: Buffer): string[] {
  const out: string[] = [];
  for (let i = 0; i + 8 <= b.length; i += 8) out.push(mechanismName(Number(b.readBigUInt64LE(i))));
  return out;
}
