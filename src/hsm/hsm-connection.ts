// One process's connection to one token: module, login, session pool, AES-GCM, key objects, and recovery.
import { timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ckrMeanings, HsmError, needsRecovery, poisonsSession, toHsmError, type CkrMeanings } from './errors.js';
import { infoText, initializeArgs, loadModule, P, pickSlot, readBool, type Handle, type LibrarySpec, type Mechanism, type Pkcs11, type Template } from './module.js';
export type { Handle } from './module.js';
import { SessionPool, type PooledSession } from './session-pool.js';
import { readCapabilities, type Capabilities } from './capabilities.js';
import { CallThread } from './call-thread.js';
import { ControlThread } from './control-thread.js';
import type pkcs11js from 'pkcs11js';
import type { CallMode, HsmProfile, IvMode } from './profile.js';
import { attributeTypes, keyTypeName, keyTypeNumber, matchTemplate, type AttributeName, type KeyType, type ObjectMatch } from './attributes.js';
import { asMechanism } from './mechanisms.js';
import type { GcmResult, HsmOperations, KeyObject, KeyStore, TokenInfo } from './key-store.js';
export type { GcmResult, KeyObject, TokenInfo } from './key-store.js';

export interface HsmOptions extends LibrarySpec {
  profile: HsmProfile;
  tokenLabel?: string | undefined;
  tokenSerial?: string | undefined;
  pin: string;
  poolSize: number;
  acquireTimeoutMs: number;
  /** Requests waiting for a session beyond this are refused at once (PoolExhausted). */
  maxQueue?: number;
  /** Budget for one async call; past it the caller gets Timeout and the session is thrown away when it returns. */
  operationTimeoutMs: number;
  ivMode?: IvMode | undefined;
  callMode?: CallMode | undefined;
  /** Budget for one call on the control thread (searches, key management, logins); default 60 s. */
  controlTimeoutMs?: number | undefined;
  /**
   * callMode thread: the event-loop utilisation above which AES-GCM calls go to the call thread; below it they run on
   * the event loop (0: always to the thread, the default: a call on the event loop that hangs stalls the process).
   */
  callThreadBusyAt?: number | undefined;
  onEvent?: (event: string, detail: Record<string, unknown>) => void;
  /** Called after each AES-GCM call that succeeded, with its duration (metrics; failures count in request metrics). */
  observeCall?: ((call: 'encrypt' | 'decrypt', seconds: number) => void) | undefined;
}

const TAG_BYTES = 16;
// Session states (PKCS#11 2.40 s5.6) that pkcs11js does not export.
const CKS_RO_USER_FUNCTIONS = 1;
const CKS_RW_USER_FUNCTIONS = 3;
const IV_BYTES = 12;
const IV_POOL_BYTES = 4092; // a multiple of 12
/** Boolean attributes read for every key: usage plus the evidence that it never left the HSM. */
const BOOL_ATTRS = {
  encrypt: P.CKA_ENCRYPT,
  decrypt: P.CKA_DECRYPT,
  sensitive: P.CKA_SENSITIVE,
  extractable: P.CKA_EXTRACTABLE,
  local: P.CKA_LOCAL,
  neverExtractable: P.CKA_NEVER_EXTRACTABLE,
  alwaysSensitive: P.CKA_ALWAYS_SENSITIVE,
  wrapWithTrusted: P.CKA_WRAP_WITH_TRUSTED,
} as const;

/** Attributes that prove where a key came from, kept only where the profile says the token reports them faithfully. */
const ORIGIN_EVIDENCE: ReadonlySet<string> = new Set(['local', 'neverExtractable']);

/** Attributes read back after an object is made, when the template set them (confirmTemplate). */
const CONFIRMED_ATTRS = new Map<number, string>([
  [P.CKA_TOKEN, 'CKA_TOKEN'],
  [P.CKA_PRIVATE, 'CKA_PRIVATE'],
  [P.CKA_SENSITIVE, 'CKA_SENSITIVE'],
  [P.CKA_EXTRACTABLE, 'CKA_EXTRACTABLE'],
  [P.CKA_ENCRYPT, 'CKA_ENCRYPT'],
  [P.CKA_DECRYPT, 'CKA_DECRYPT'],
  [P.CKA_WRAP, 'CKA_WRAP'],
  [P.CKA_UNWRAP, 'CKA_UNWRAP'],
  [P.CKA_SIGN, 'CKA_SIGN'],
  [P.CKA_VERIFY, 'CKA_VERIFY'],
  [P.CKA_DERIVE, 'CKA_DERIVE'],
]);

/** Searches made again when an object found vanished before it was read, before the search fails. */
const FIND_ATTEMPTS = 5;

export class HsmConnection implements KeyStore, HsmOperations {
  private mod!: Pkcs11;
  private slot!: Handle;
  private loginSession!: Handle;
  private pool!: SessionPool;
  private recovering: Promise<void> | undefined;
  /**
   * Set while the HSM could not be recovered: calls fail at once with its error until `retryAt`, and a timer tries again
   * with a doubling delay, so a process whose HSM came back serves again with or without traffic, and one whose HSM is
   * away does not re-initialise the library for every request.
   */
  private down: { error: HsmError; retryAt: number; delayMs: number; timer: NodeJS.Timeout | undefined } | undefined;
  /**
   * Set from the moment a recovery decides to re-initialise the library until it is back: no AES-GCM or RSA call is
   * sent to another thread meanwhile, since C_Finalize (queued on the control thread) must not run under one.
   */
  private finalizing = false;
  /** Session copies of token keys (SoftHSM): token handle hex -> copy, valid for one recovery generation. */
  private readonly copies = new Map<string, { copy: Handle; generation: number }>();
  private readonly copying = new Map<string, Promise<Handle>>();
  /** Calls running on the thread pool. C_Finalize or C_CloseAllSessions under one crashes SoftHSM: wait for them. */
  private inFlight = 0;
  /** callMode thread: where AES-GCM calls run (made on first use). */
  private thread: CallThread | undefined;
  /** callMode thread and async: where every other PKCS#11 call runs, so that a hung HSM never holds the event loop. */
  private control: ControlThread | undefined;
  private ivPool: Buffer = Buffer.alloc(0);
  private ivRefill: Promise<void> | undefined;
  /** The login state the last check saw. */
  private loggedIn = false;
  /** Attribute types this token does not keep (CKR_ATTRIBUTE_TYPE_INVALID when read): left out of reads. */
  private readonly lackedAttributes = new Set<number>();
  private ivOffset = 0;
  private closed = false;
  /** Incremented by every recovery that reopens sessions; key handles cached before it may be stale. */
  generation = 0;
  /** Incremented by every re-initialisation of the library (C_Finalize + C_Initialize): handles from before are void. */
  private epoch = 0;
  /**
   * Where each object handle handed out came from: the library epoch, and for session copies the recovery generation.
   * After a re-initialisation the library numbers objects afresh, so an old number may name another key (SoftHSM
   * counts handles from 1 again): a handle from an ended epoch never reaches the library (live()).
   */
  private readonly handleOrigin = new WeakMap<Handle, { epoch: number; generation?: number }>();
  info!: TokenInfo;
  capabilities!: Capabilities;

  /** What this token's return codes mean (its profile's `errors`). */
  private readonly meanings: CkrMeanings;

  private constructor(private readonly opts: HsmOptions) {
    this.meanings = ckrMeanings(opts.profile);
  }

  static async open(opts: HsmOptions): Promise<HsmConnection> {
    const c = new HsmConnection(opts);
    c.mod = loadModule(opts);
    if ((opts.callMode ?? opts.profile.callMode) !== 'sync') c.control = new ControlThread(opts.modulePath, opts.controlTimeoutMs ?? 60_000);
    try {
      await c.attach();
      // What the token can do is read once, here: a re-initialisation finds the same token (by label or serial).
      c.capabilities = readCapabilities(c.mod, c.slot, c.loginSession, opts.profile, opts);
      if (!c.capabilities.aesGcm) throw new HsmError('MechanismUnsupported', 'the token does not offer CKM_AES_GCM encrypt and decrypt');
    } catch (e) {
      c.control?.close();
      try {
        c.mod.C_Finalize();
      } catch {
        // nothing to undo
      }
      throw e;
    }
    c.pool = new SessionPool({
      size: opts.poolSize,
      acquireTimeoutMs: opts.acquireTimeoutMs,
      ...(opts.maxQueue !== undefined ? { maxWaiters: opts.maxQueue } : {}),
      open: async () => {
        const [generation, epoch] = [c.generation, c.epoch];
        const open = [c.slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION];
        // A session that opens after its caller timed out is closed, not leaked (network HSMs cap sessions).
        const late = (h: Handle) => void c.x('C_CloseSession', h).catch(() => undefined);
        const handle = c.control ? await c.control.callOr<Handle>(late, 'C_OpenSession', ...open) : await c.x<Handle>('C_OpenSession', ...open);
        return { handle, generation, epoch };
      },
      close: (s) => c.x<void>('C_CloseSession', s.handle),
      currentGeneration: () => c.generation,
      currentEpoch: () => c.epoch,
    });
    return c;
  }

  /**
   * A PKCS#11 call, by function name: on the control thread in call modes thread and async, here in sync mode.
   * `findAll` is C_FindObjectsInit + C_FindObjects until empty + C_FindObjectsFinal in one go.
   */
  private x<T>(fn: `C_${string}` | 'findAll', ...args: unknown[]): Promise<T> {
    if (this.control) return this.control.call<T>(fn, ...args);
    try {
      if (fn === 'findAll') return Promise.resolve(this.findAllHere(args[0] as Handle, args[1] as Template) as T);
      const f = (this.mod as unknown as Record<string, (...a: unknown[]) => T>)[fn]!;
      return Promise.resolve(f.apply(this.mod, args));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private findAllHere(s: Handle, template: Template): Handle[] {
    this.mod.C_FindObjectsInit(s, template);
    const handles: Handle[] = [];
    try {
      for (;;) {
        const batch = this.mod.C_FindObjects(s, 64);
        if (batch.length === 0) break;
        handles.push(...batch);
      }
    } finally {
      this.mod.C_FindObjectsFinal(s);
    }
    return handles;
  }

  /** Find the slot, open the long-lived login session and log in (with backoff: concurrent logins race on SoftHSM). */
  private async attach(): Promise<void> {
    const slots = await this.x<Handle[]>('C_GetSlotList', true);
    const infos = [];
    for (const slot of slots) infos.push({ slot, info: await this.x<pkcs11js.TokenInfo>('C_GetTokenInfo', slot) });
    this.slot = pickSlot(infos, { tokenLabel: this.opts.tokenLabel, tokenSerial: this.opts.tokenSerial });
    this.loginSession = await this.x<Handle>('C_OpenSession', this.slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
    await this.login();
    const t = infos.find((i) => i.slot.equals(this.slot))!.info;
    const lib = await this.x<pkcs11js.ModuleInfo>('C_GetInfo');
    this.info = {
      slot: this.slot.toString('hex'),
      label: infoText(t.label),
      serial: infoText(t.serialNumber),
      manufacturer: infoText(t.manufacturerID),
      model: infoText(t.model),
      libraryDescription: infoText(lib.libraryDescription),
      libraryVersion: `${lib.libraryVersion.major}.${lib.libraryVersion.minor}`,
    };
  }

  private async login(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.x<void>('C_Login', this.loginSession, P.CKU_USER, this.opts.pin);
        this.loggedIn = true;
        return;
      } catch (e) {
        const err = toHsmError(e);
        if (err.ckr === 'CKR_USER_ALREADY_LOGGED_IN') {
          this.loggedIn = true;
          return;
        }
        if (err.code === 'PinIncorrect') throw new HsmError('PinIncorrect', 'the HSM refused the user PIN (CKR_PIN_INCORRECT)', err.ckr);
        if (err.code === 'PinLocked') throw new HsmError('PinLocked', 'the user PIN is locked on the token (CKR_PIN_LOCKED)', err.ckr);
        if (attempt >= this.opts.profile.loginRetries) throw err;
        await sleep(50 * 2 ** attempt + Math.random() * 50);
      }
    }
  }

  /** What this token's objects can hold and prove (its profile's `attributes`). */
  get tokenAttributes(): HsmProfile['attributes'] {
    return this.opts.profile.attributes;
  }

  /** CKA_LOCAL / CKA_NEVER_EXTRACTABLE are reported faithfully by this token (its profile), so they prove a key's origin. */
  private get localIsEvidence(): boolean {
    return this.opts.profile.attributes.localIsEvidence;
  }

  get sessionStats() {
    return this.pool.stats;
  }

  /** Record that `handle` came from the library now (a session copy: for this recovery generation only). */
  private stamp<H extends Handle>(handle: H, sessionCopy = false): H {
    this.handleOrigin.set(handle, sessionCopy ? { epoch: this.epoch, generation: this.generation } : { epoch: this.epoch });
    return handle;
  }

  /**
   * The handle, if it is still valid: from this library epoch (and, for a session copy, this generation). Called inside
   * run(), right before the PKCS#11 call, so no re-initialisation can come in between. A stale handle reads as
   * ObjectHandleInvalid, which callers already answer by re-resolving the key.
   */
  private live(handle: Handle): Handle {
    const origin = this.handleOrigin.get(handle);
    if (origin?.epoch === this.epoch && (origin.generation === undefined || origin.generation === this.generation)) return handle;
    throw new HsmError('ObjectHandleInvalid', origin ? 'the handle is from before the HSM was recovered: re-resolve the key' : 'the handle was not handed out by this HSM connection');
  }

  // ---- operations ---------------------------------------------------------------------------------------------

  encryptGcm(key: Handle, plaintext: Buffer, aad: Buffer): Promise<GcmResult> {
    return this.run('other', async (s) => {
      const t0 = this.opts.observeCall ? performance.now() : 0;
      const mode = this.capabilities.ivMode;
      const iv = mode === 'caller-random' ? (this.takeIv() ?? (await this.nextIv(s))) : Buffer.alloc(IV_BYTES);
      const extra = mode === 'hsm-appends' ? IV_BYTES : 0;
      const outBytes = plaintext.length + TAG_BYTES + extra;
      const out = await this.gcm('encrypt', s, key, iv, aad, plaintext, outBytes);
      if (out.length !== outBytes) throw new HsmError('Unknown', 'AES-GCM returned an unexpected length');
      const n = plaintext.length;
      // `out` is a fresh buffer per call, so views into it are safe to hand on.
      const result: GcmResult = {
        ciphertext: out.subarray(0, n),
        tag: out.subarray(n, n + TAG_BYTES),
        iv: mode === 'hsm-appends' ? out.subarray(n + TAG_BYTES) : iv,
      };
      // Fail closed: an IV the HSM should have generated but did not is never returned to KMS.
      if (mode !== 'caller-random' && result.iv.every((b) => b === 0)) {
        throw new HsmError('Unknown', `the HSM did not return a generated IV (ivMode ${mode}); check the HSM profile`);
      }
      this.opts.observeCall?.('encrypt', (performance.now() - t0) / 1000);
      return result;
    });
  }

  decryptGcm(key: Handle, iv: Buffer, ciphertext: Buffer, tag: Buffer, aad: Buffer): Promise<Buffer> {
    return this.run('decrypt', async (s) => {
      const input = Buffer.concat([ciphertext, tag]);
      const t0 = this.opts.observeCall ? performance.now() : 0;
      // The output buffer must hold ciphertext + tag: a smaller one leaves the operation active on the session.
      const out = await this.gcm('decrypt', s, key, iv, aad, input, input.length);
      this.opts.observeCall?.('decrypt', (performance.now() - t0) / 1000);
      return out;
    });
  }

  /** One AES-GCM Init + single-part call, where the call mode says: the call thread, libuv's pool, or right here. */
  private gcm(op: 'encrypt' | 'decrypt', s: Handle, key: Handle, iv: Buffer, aad: Buffer, data: Buffer, outBytes: number): Promise<Buffer> {
    const tagBits = TAG_BYTES * 8;
    const mode = this.capabilities.callMode;
    if (this.finalizing) throw new HsmError('SessionInvalid', 'the HSM library is being re-initialised');
    this.live(key);
    if (mode === 'thread') {
      const thread = this.callThread();
      // Every call goes over unless the operator lets an idle event loop make it itself (hsm.callThreadBusyAt).
      if (thread.busy) return thread[op](s, key, iv, aad, data, outBytes, tagBits);
    }
    const mechanism = { mechanism: P.CKM_AES_GCM, parameter: { type: P.CK_PARAMS_AES_GCM_v240, iv, ivBits: iv.length * 8, aad, tagBits } };
    const out = Buffer.allocUnsafe(outBytes);
    // In async mode the Init runs here, on the event loop, and the call itself on libuv's pool: vendors' AES-GCM Init
    // sets up the operation in the library without a round trip to the HSM.
    if (op === 'encrypt') {
      this.mod.C_EncryptInit(s, mechanism, key);
      return mode === 'async' ? this.withBudget(this.mod.C_EncryptAsync(s, data, out)) : Promise.resolve(this.mod.C_Encrypt(s, data, out));
    }
    this.mod.C_DecryptInit(s, mechanism, key);
    return mode === 'async' ? this.withBudget(this.mod.C_DecryptAsync(s, data, out)) : Promise.resolve(this.mod.C_Decrypt(s, data, out));
  }

  private callThread(): CallThread {
    this.thread ??= new CallThread(this.opts.modulePath, this.opts.operationTimeoutMs, this.opts.callThreadBusyAt ?? 0, (reason) =>
      this.opts.onEvent?.('hsm.call-thread-unusable', { reason, fallback: 'calls are made on the event loop' }),
    );
    return this.thread;
  }

  /**
   * Before the listeners open: every session of the pool opened and, in callMode thread, the call thread started with
   * the library loaded (within `maxMs`). A burst in the first seconds otherwise waits for both and gets
   * ThrottlingException from the session budget.
   */
  async warmUp(maxMs: number): Promise<{ sessions: number; callThread: boolean | undefined }> {
    const held: PooledSession[] = [];
    try {
      // Each acquire while every session is held opens a new one, until the pool is full.
      while (this.pool.stats.open < this.pool.stats.size) held.push(await this.pool.acquire());
    } finally {
      for (const s of held) this.pool.release(s);
    }
    const callThread = this.capabilities.callMode === 'thread' ? await this.callThread().whenReady(maxMs) : undefined;
    return { sessions: this.pool.stats.open, callThread };
  }

  /**
   * The handle to use for crypto with a token key: a session copy where the profile asks for one (made once per key
   * and recovery generation, on the login session so it lives as long as the login), else the key itself.
   */
  async cryptoHandle(key: Handle): Promise<Handle> {
    if (!this.capabilities.sessionKeyCopies) return key;
    const id = key.toString('hex');
    const cached = this.copies.get(id);
    if (cached && cached.generation === this.generation) return cached.copy;
    // Two requests resolving one key at once share one copy.
    const inFlight = this.copying.get(id);
    if (inFlight) return inFlight;
    const generation = this.generation;
    const making = this.run('other', async (s) => {
      // Only CKA_TOKEN may change: the copy inherits CKA_SENSITIVE, CKA_EXTRACTABLE and the usage. Read back that it
      // is at least as protected as the key (NSS makes a copy of a non-sensitive key sensitive: more, never less).
      const [sensitive, extractable] = await this.readAttributes(s, this.live(key), [P.CKA_SENSITIVE, P.CKA_EXTRACTABLE]);
      const args = [this.loginSession, key, [{ type: P.CKA_TOKEN, value: false }]];
      // A copy made after its caller timed out is destroyed, not left on the login session.
      const late = (h: Handle) => void this.x('C_DestroyObject', this.loginSession, h).catch(() => undefined);
      const copy = this.stamp(this.control ? await this.control.callOr<Handle>(late, 'C_CopyObject', ...args) : await this.x<Handle>('C_CopyObject', ...args), true);
      await this.confirmTemplate(s, copy, [
        { type: P.CKA_TOKEN, value: false },
        ...(readBool(sensitive) ? [{ type: P.CKA_SENSITIVE, value: true }] : []),
        ...(readBool(extractable) ? [] : [{ type: P.CKA_EXTRACTABLE, value: false }]),
      ], 'a session copy');
      return copy;
    })
      .then((copy) => {
        this.copies.set(id, { copy, generation });
        return copy;
      })
      .finally(() => this.copying.delete(id));
    this.copying.set(id, making);
    return making;
  }

  /** Forget and destroy the session copy of a token key that changed or disappeared. */
  dropCryptoHandle(key: Handle): void {
    const id = key.toString('hex');
    const cached = this.copies.get(id);
    if (!cached) return;
    this.copies.delete(id);
    if (cached.generation !== this.generation) return;
    // Already gone with its session, if this fails.
    this.x<void>('C_DestroyObject', this.loginSession, cached.copy).catch(() => undefined);
  }

  /** Secret keys matching a template, with their label, id, key type and usage/evidence attributes. */
  findSecretKeys(match: { label?: string; keyType?: KeyType }): Promise<KeyObject[]> {
    const t: Template = [{ type: P.CKA_CLASS, value: P.CKO_SECRET_KEY }];
    if (match.label !== undefined) t.push({ type: P.CKA_LABEL, value: match.label });
    if (match.keyType !== undefined) t.push({ type: P.CKA_KEY_TYPE, value: keyTypeNumber(match.keyType) });
    return this.run('other', async (s) => {
      for (let attempt = 1; ; attempt++) {
        const found: KeyObject[] = [];
        let vanished = false;
        for (const h of await this.find(s, t)) {
          try {
            found.push(await this.describe(s, h));
          } catch (e) {
            // Destroyed by another writer since the search (a lease is renewed every 500 ms: the new one made, then the
            // old destroyed). Answering without it could show a live writer with no lease at all: search again, for a
            // view in which everything found still exists. Only the library's own answer while still logged in says
            // so; a lost login hides every private object alike, and our generation check (no ckr) means a
            // re-initialisation.
            if (attempt < FIND_ATTEMPTS && toHsmError(e).ckr === 'CKR_OBJECT_HANDLE_INVALID' && (await this.isLoggedIn())) {
              vanished = true;
              break;
            }
            throw e;
          }
        }
        if (!vanished) return found;
      }
    });
  }

  /** Token objects of any class matching a template or a match by name (RSA key pairs of a KEK transfer). */
  findObjects(match: Template | ObjectMatch): Promise<Handle[]> {
    const t = Array.isArray(match) ? match : matchTemplate(match);
    return this.run('other', (s) => this.find(s, t));
  }

  private async find(s: Handle, match: Template): Promise<Handle[]> {
    // Without the login, private objects are simply invisible: an empty answer would read as "no such key".
    if (!(await this.isLoggedIn())) throw new HsmError('NotLoggedIn', 'the HSM login was lost');
    // Token objects only: the proxy's own session copies carry the same label and id.
    const handles = await this.x<Handle[]>('findAll', s, [{ type: P.CKA_TOKEN, value: true }, ...match]);
    return handles.map((h) => this.stamp(h));
  }

  private async describe(s: Handle, handle: Handle): Promise<KeyObject> {
    const names = Object.keys(BOOL_ATTRS) as (keyof typeof BOOL_ATTRS)[];
    const got = await this.readAttributes(s, handle, [P.CKA_LABEL, P.CKA_ID, P.CKA_KEY_TYPE, P.CKA_VALUE_LEN, ...names.map((n) => BOOL_ATTRS[n])]);
    const attrs: Record<string, boolean> = {};
    names.forEach((n, i) => {
      const v = got[i + 4];
      // An attribute the token does not keep is absent, never read as false; so is evidence the token does not give
      // faithfully (its profile: NSS reports CKA_LOCAL false for keys it generated).
      if (v !== undefined && (this.localIsEvidence || !ORIGIN_EVIDENCE.has(n))) attrs[n] = readBool(v);
    });
    const keyType = got[2];
    const valueLen = got[3];
    return {
      handle,
      label: (got[0] ?? Buffer.alloc(0)).toString('utf8'),
      id: got[1] ?? Buffer.alloc(0),
      keyType: keyType && keyType.length >= 4 ? keyTypeName(keyType.readUInt32LE(0)) : undefined,
      valueLen: valueLen && valueLen.length >= 4 ? valueLen.readUInt32LE(0) : undefined,
      attrs,
    };
  }

  /**
   * Attribute values, undefined where the object does not keep one. One C_GetAttributeValue asking for an attribute
   * the token lacks fails whole on NSS (CKR_ATTRIBUTE_TYPE_INVALID, CKA_WRAP_WITH_TRUSTED): then each is read alone,
   * and the ones the token lacks are left out of later reads.
   */
  private async readAttributes(s: Handle, handle: Handle, types: number[]): Promise<(Buffer | undefined)[]> {
    const asked = types.filter((t) => !this.lackedAttributes.has(t));
    try {
      const got = await this.x<Template>('C_GetAttributeValue', s, handle, asked.map((type) => ({ type })));
      const byType = new Map(asked.map((t, i) => [t, got[i]?.value as Buffer | undefined]));
      return types.map((t) => byType.get(t));
    } catch (e) {
      const ckr = toHsmError(e).ckr;
      if (ckr !== 'CKR_ATTRIBUTE_TYPE_INVALID' && ckr !== 'CKR_ATTRIBUTE_SENSITIVE') throw e;
    }
    const values: (Buffer | undefined)[] = [];
    for (const type of types) {
      if (this.lackedAttributes.has(type)) {
        values.push(undefined);
        continue;
      }
      try {
        values.push((await this.x<Template>('C_GetAttributeValue', s, handle, [{ type }]))[0]?.value as Buffer | undefined);
      } catch (e) {
        const ckr = toHsmError(e).ckr;
        if (ckr === 'CKR_ATTRIBUTE_TYPE_INVALID') this.lackedAttributes.add(type);
        else if (ckr !== 'CKR_ATTRIBUTE_SENSITIVE') throw e;
        values.push(undefined);
      }
    }
    return values;
  }

  /**
   * A token's word is not proof (openCryptoki's C_UnwrapKey ignores CKA_SENSITIVE and CKA_EXTRACTABLE): after every
   * create, generate, unwrap and copy, read back the security and usage attributes that were asked for. An object that
   * differs is destroyed and the call fails.
   */
  private async confirmTemplate(s: Handle, handle: Handle, template: Template, what: string): Promise<void> {
    const asked = template.filter((a) => CONFIRMED_ATTRS.has(a.type) && typeof a.value === 'boolean');
    if (asked.length === 0) return;
    const got = await this.readAttributes(s, handle, asked.map((a) => a.type));
    const wrong = asked.filter((a, i) => {
      const v = got[i];
      // Security attributes must be readable; usage flags the token does not keep are left to its own enforcement.
      if (v === undefined) return a.type === P.CKA_SENSITIVE || a.type === P.CKA_EXTRACTABLE;
      return readBool(v) !== a.value;
    });
    if (wrong.length === 0) return;
    // If this fails nothing more can be done; the error below says what happened.
    await this.x<void>('C_DestroyObject', s, handle).catch(() => undefined);
    const names = wrong.map((a) => `${CONFIRMED_ATTRS.get(a.type)}=${String(a.value)}`).join(', ');
    throw new HsmError('TemplateRefused', `the token did not honour ${names} for ${what}; the object was destroyed`);
  }

  /** The template as this token takes it: without CKA_ALLOWED_MECHANISMS where its objects cannot hold it (NSS). */
  private fit(template: Template): Template {
    if (this.opts.profile.attributes.allowedMechanisms) return template;
    return template.filter((a) => a.type !== P.CKA_ALLOWED_MECHANISMS);
  }

  /** Generate a secret key (CKM_AES_KEY_GEN unless told otherwise) from a fully spelled-out template. */
  generateKey(template: Template, mechanism: number | Mechanism = P.CKM_AES_KEY_GEN): Promise<KeyObject> {
    return this.run('other', async (s) => {
      const handle = this.stamp(await this.x<Handle>('C_GenerateKey', s, asMechanism(mechanism), this.fit(template)));
      await this.confirmTemplate(s, handle, template, 'a generated key');
      return this.describe(s, handle);
    });
  }

  /**
   * Change attributes of an object in place. The key model never does (CloudHSM cannot change CKA_ID, and what may
   * change differs by vendor); tests use it to show what a token refuses.
   */
  setAttributes(handle: Handle, template: Template): Promise<void> {
    return this.run('other', (s) => this.x<void>('C_SetAttributeValue', s, this.live(handle), template));
  }

  /** Read one object's label, id, key type and boolean evidence again (after a change). */
  describeObject(handle: Handle): Promise<KeyObject> {
    return this.run('other', (s) => this.describe(s, this.live(handle)));
  }

  destroyObject(handle: Handle): Promise<void> {
    return this.run('other', (s) => this.x<void>('C_DestroyObject', s, this.live(handle)));
  }

  /** This token's RFC 5649 key wrap (capabilities.keyWrap): backups, KEK check values, RSA-AES imports. */
  keyWrap(): Mechanism {
    const kw = this.capabilities.keyWrap;
    if (!kw) throw new HsmError('MechanismUnsupported', 'this token has no RFC 5649 AES key wrap (CKM_AES_KEY_WRAP_KWP)');
    return { mechanism: kw.mechanism };
  }

  /** C_WrapKey into a buffer large enough for any AES or generic secret under KWP or RSA-OAEP. */
  wrapKey(mechanism: Mechanism, wrappingKey: Handle, key: Handle): Promise<Buffer> {
    return this.run('other', async (s) => Buffer.from(await this.x<Buffer>('C_WrapKey', s, mechanism, this.live(wrappingKey), this.live(key), Buffer.alloc(1024))));
  }

  /** C_UnwrapKey into a new object described by `template` (every security attribute spelled out by the caller). */
  unwrapKey(mechanism: Mechanism, unwrappingKey: Handle, wrapped: Buffer, template: Template): Promise<KeyObject> {
    return this.run('other', async (s) => {
      const handle = this.stamp(await this.x<Handle>('C_UnwrapKey', s, mechanism, this.live(unwrappingKey), wrapped, this.fit(template)));
      await this.confirmTemplate(s, handle, template, 'an unwrapped key');
      return this.describe(s, handle);
    });
  }

  /** HMAC (or CMAC) inside the HSM. */
  sign(mechanism: Mechanism, key: Handle, data: Buffer): Promise<Buffer> {
    return this.run('other', async (s) => {
      await this.x<void>('C_SignInit', s, mechanism, this.live(key));
      return Buffer.from(await this.x<Buffer>('C_Sign', s, data, Buffer.alloc(64)));
    });
  }

  /**
   * True when `mac` is the MAC of `data` under `key`: computed by C_Sign and compared in constant time. C_Verify's
   * answer to a wrong MAC is not portable (NSS answers CKR_DEVICE_ERROR or CKR_ARGUMENTS_BAD, which would read as a
   * device failure), so it is not used.
   */
  async verify(mechanism: Mechanism, key: Handle, data: Buffer, mac: Buffer): Promise<boolean> {
    const expected = await this.sign(mechanism, key, data);
    return expected.length === mac.length && timingSafeEqual(expected, mac);
  }

  /** HMAC-SHA256 inside the HSM (audit checkpoints, import tokens), with a generic secret made by hmacKeyTemplate. */
  hmacSha256(key: Handle, data: Buffer): Promise<Buffer> {
    return this.sign({ mechanism: P.CKM_SHA256_HMAC }, key, data);
  }

  verifyHmacSha256(key: Handle, data: Buffer, mac: Buffer): Promise<boolean> {
    return this.verify({ mechanism: P.CKM_SHA256_HMAC }, key, data, mac);
  }

  /** Create an object from a template (public keys received for a KEK transfer). */
  createObject(template: Template): Promise<Handle> {
    return this.run('other', async (s) => {
      const handle = this.stamp(await this.x<Handle>('C_CreateObject', s, this.fit(template)));
      await this.confirmTemplate(s, handle, template, 'a created object');
      return handle;
    });
  }

  /** Attributes read raw, for the few callers that need more than describe() gives (RSA modulus and exponent). */
  getAttributes(handle: Handle, types: readonly (AttributeName | number)[]): Promise<(Buffer | undefined)[]> {
    return this.run('other', (s) => this.readAttributes(s, this.live(handle), attributeTypes(types)));
  }

  // -- import of customer key material (src/import) --
  // Calls on data from outside (import blobs) run with the 'decrypt' context: SoftHSM answers a failed OAEP or KWP
  // integrity check with CKR_GENERAL_ERROR, which must read as DataInvalid, never as a device failure to recover from.
  // RSA private-key operations take milliseconds (4096 bits): they run on the thread pool in async mode, without the
  // per-call budget meant for AES-GCM.

  /** C_GenerateKeyPair from fully spelled-out templates (RSA wrapping key pairs). */
  generateKeyPair(mechanism: Mechanism, publicTemplate: Template, privateTemplate: Template): Promise<{ publicKey: Handle; privateKey: Handle }> {
    return this.run('other', async (s) => {
      const [pub, priv] = [this.fit(publicTemplate), this.fit(privateTemplate)];
      const pair = await this.callUnbounded(
        () => this.mod.C_GenerateKeyPair(s, mechanism, pub, priv),
        () => this.mod.C_GenerateKeyPairAsync(s, mechanism, pub, priv),
      );
      await this.confirmTemplate(s, pair.privateKey, privateTemplate, 'a generated private key');
      return { publicKey: this.stamp(pair.publicKey), privateKey: this.stamp(pair.privateKey) };
    });
  }

  /** C_UnwrapKey of a blob from outside into a new object; a blob that does not unwrap is DataInvalid. */
  unwrapUntrusted(mechanism: Mechanism, unwrappingKey: Handle, wrapped: Buffer, template: Template): Promise<Handle> {
    return this.run('decrypt', async (s) => {
      const fitted = this.fit(template);
      this.live(unwrappingKey);
      const handle = this.stamp(
        await this.callUnbounded(
          () => this.mod.C_UnwrapKey(s, mechanism, unwrappingKey, wrapped, fitted),
          () => this.mod.C_UnwrapKeyAsync(s, mechanism, unwrappingKey, wrapped, fitted),
        ),
      );
      await this.confirmTemplate(s, handle, template, 'an unwrapped key');
      return handle;
    });
  }

  /**
   * Single-part C_Decrypt of data from outside (raw RSA of an import blob) into a buffer of `outBytes`. The answer is a
   * view of one allocation of its own, never copied, so that the caller's wipe of it wipes every copy there is.
   */
  decryptUntrusted(mechanism: Mechanism, key: Handle, data: Buffer, outBytes: number): Promise<Buffer> {
    return this.run('decrypt', async (s) => {
      await this.x<void>('C_DecryptInit', s, mechanism, this.live(key));
      const target = Buffer.alloc(outBytes);
      try {
        return await this.callUnbounded(
          () => this.mod.C_Decrypt(s, data, target),
          () => this.mod.C_DecryptAsync(s, data, target),
        );
      } catch (e) {
        target.fill(0);
        throw e;
      }
    });
  }

  /** A call on the thread pool in async mode (counted for drain()), without the AES-GCM budget. */
  private async callUnbounded<T>(sync: () => T, async: () => Promise<T>): Promise<T> {
    if (this.finalizing) throw new HsmError('SessionInvalid', 'the HSM library is being re-initialised');
    if (this.capabilities.callMode === 'sync') return sync();
    this.inFlight++;
    try {
      return await async();
    } finally {
      this.inFlight--;
    }
  }

  // ---- plumbing -----------------------------------------------------------------------------------------------

  /**
   * A fresh 12-byte IV from the HSM's generator. Drawn 4 KiB at a time: one C_GenerateRandom per 341 encrypts
   * instead of one per encrypt. Each IV is handed out once; IVs are not secret.
   */
  private takeIv(): Buffer | undefined {
    if (this.ivOffset + IV_BYTES > this.ivPool.length) return undefined;
    const iv = this.ivPool.subarray(this.ivOffset, this.ivOffset + IV_BYTES);
    this.ivOffset += IV_BYTES;
    return iv;
  }

  /** The next IV after drawing a new pool (callers that find it empty at once share one draw). */
  private async nextIv(s: Handle): Promise<Buffer> {
    for (;;) {
      this.ivRefill ??= this.x<Buffer>('C_GenerateRandom', s, Buffer.allocUnsafe(IV_POOL_BYTES))
        .then((pool) => {
          this.ivPool = pool;
          this.ivOffset = 0;
        })
        .finally(() => (this.ivRefill = undefined));
      await this.ivRefill;
      const iv = this.takeIv();
      if (iv) return iv;
    }
  }

  /** A call running on libuv's thread pool, counted for drain() and held to the operation budget. */
  private async withBudget(call: Promise<Buffer>): Promise<Buffer> {
    let timer: NodeJS.Timeout | undefined;
    this.inFlight++;
    const pending = call.finally(() => this.inFlight--);
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new HsmError('Timeout', `the HSM did not answer within ${this.opts.operationTimeoutMs} ms`);
        reject(Object.assign(err, { settled: pending.then(undefined, () => undefined) }));
      }, this.opts.operationTimeoutMs);
    });
    try {
      return await Promise.race([pending, timeout]);
    } finally {
      clearTimeout(timer);
      pending.catch(() => undefined);
    }
  }

  /**
   * Borrow a session, run `op`, give the session back only if it is known clean. On a lost session, lost login or
   * device error: recover, then try once more, so that requests in flight fail cleanly or succeed, never hang.
   */
  private async run<T>(context: 'decrypt' | 'other', op: (s: Handle) => T | Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new HsmError('Closed', 'the HSM connection is closed');
      if (this.recovering) await this.waitForRecovery();
      const down = this.down;
      if (down && Date.now() < down.retryAt) throw new HsmError(down.error.code, down.error.message, down.error.ckr);
      let session: PooledSession;
      try {
        session = this.pool.tryAcquire() ?? (await this.pool.acquire());
      } catch (e) {
        // Opening a session can itself report a lost device (a recovery that failed halfway): recover again.
        const err = toHsmError(e);
        // No session came free because the calls holding them have waited longer than a session wait may (they take
        // a millisecond when the HSM answers): that is the HSM not answering (503), not load (429).
        const stuck = Math.max(this.thread?.oldestCallMs ?? 0, this.overdueMs);
        if (err.code === 'PoolExhausted' && stuck >= this.opts.acquireTimeoutMs) throw new HsmError('Timeout', `the HSM has not answered a call for ${Math.round(stuck)} ms`);
        if (!needsRecovery(err.code) || attempt > 0) throw err;
        await this.recover(err);
        continue;
      }
      if (session.epoch !== this.epoch) {
        // Opened just before a re-initialisation: its number means nothing in the library now.
        this.pool.discard(session);
        continue;
      }
      let err: HsmError;
      try {
        const result = await op(session.handle);
        this.pool.release(session);
        return result;
      } catch (e) {
        err = toHsmError(e, context, this.meanings);
      }
      if (err.code === 'Timeout') {
        // The call is still running on the thread pool: close its session once it returns, never reuse it.
        const settled = (err as HsmError & { settled?: Promise<unknown> }).settled ?? Promise.resolve();
        void settled.then(() => this.pool.discard(session));
        throw err;
      }
      // A code from the module that reads as a device failure re-initialises the library only when a cheap probe
      // confirms the device is gone: CloudHSM answers CKR_DEVICE_ERROR while it throttles, NSS for a wrong MAC.
      if (err.ckr !== undefined && (err.code === 'DeviceError' || this.meanings.busy.has(err.ckr)) && (await this.deviceAnswers())) {
        const busy = this.meanings.busy.has(err.ckr);
        // A refused call leaves the session clean; an operation left active (CKR_OPERATION_ACTIVE) does not.
        if (busy && err.code === 'DeviceError') this.pool.release(session);
        else this.pool.discard(session);
        throw busy ? new HsmError('Busy', `the HSM is busy (${err.ckr}); retry`, err.ckr) : new HsmError('DeviceError', `${err.message}; the device still answers, so it was not re-initialised`, err.ckr);
      }
      if (poisonsSession(err.code)) this.pool.discard(session);
      else this.pool.release(session);
      if (err.code === 'ObjectHandleInvalid' && !(await this.isLoggedIn())) err = new HsmError('NotLoggedIn', 'the HSM login was lost', err.ckr);
      if (!needsRecovery(err.code) || attempt > 0) throw err;
      // A session from before the latest recovery failed late: that recovery already happened, just retry.
      if (session.generation === this.generation) await this.recover(err);
    }
  }

  /** A cheap probe after a device-level code: the token answers and the login session is alive and logged in. */
  private async deviceAnswers(): Promise<boolean> {
    try {
      await this.x('C_GetTokenInfo', this.slot);
    } catch {
      return false;
    }
    return this.isLoggedIn();
  }

  private async isLoggedIn(): Promise<boolean> {
    try {
      const state = (await this.x<pkcs11js.SessionInfo>('C_GetSessionInfo', this.loginSession)).state;
      this.loggedIn = state === CKS_RW_USER_FUNCTIONS || state === CKS_RO_USER_FUNCTIONS;
    } catch {
      this.loggedIn = false;
    }
    return this.loggedIn;
  }

  /** Wait for a recovery in progress, but not past the acquire budget: KMS gives up after 250 ms anyway. */
  private async waitForRecovery(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const budget = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HsmError('Timeout', 'the HSM is recovering; retry')), this.opts.acquireTimeoutMs);
    });
    try {
      await Promise.race([this.recovering!.catch(() => undefined), budget]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reopen sessions, log in again, or re-initialise the library; one recovery at a time. */
  recover(cause: HsmError): Promise<void> {
    this.recovering ??= this.doRecover(cause)
      .then(
        () => this.markUp(),
        (e: unknown) => {
          this.markDown(toHsmError(e));
          throw e;
        },
      )
      .finally(() => {
        this.recovering = undefined;
      });
    return this.recovering;
  }

  private markUp(): void {
    if (!this.down) return;
    clearTimeout(this.down.timer);
    this.down = undefined;
    this.opts.onEvent?.('hsm.recovered', {});
  }

  /** Recovery failed: fail calls at once until the next try, and try again after 100 ms, 200 ms, ... at most 2 s. */
  private markDown(error: HsmError): void {
    if (this.closed) return;
    const first = this.down === undefined;
    clearTimeout(this.down?.timer);
    // A refused PIN is never retried on its own: each try counts towards locking the token.
    const retry = error.code !== 'PinIncorrect' && error.code !== 'PinLocked';
    const delayMs = Math.min(2_000, (this.down?.delayMs ?? 50) * 2);
    const timer = retry ? setTimeout(() => void this.recover(error).catch(() => undefined), delayMs) : undefined;
    timer?.unref();
    this.down = { error, retryAt: retry ? Date.now() + delayMs : Infinity, delayMs, timer };
    if (first) this.opts.onEvent?.('hsm.unavailable', { cause: error.code, ckr: error.ckr, retry });
  }

  private async doRecover(cause: HsmError): Promise<void> {
    this.opts.onEvent?.('hsm.recover', { cause: cause.code, ckr: cause.ckr });
    // Session copies made before may survive a re-login: destroy them so none leaks, then forget them all.
    // Not while calls hang (each destroy would wait out its budget): the copies then go with the library.
    for (const c of this.overdueMs > 0 ? [] : this.copies.values()) {
      if (c.generation !== this.generation) continue;
      await this.x('C_DestroyObject', this.loginSession, c.copy).catch(() => undefined); // gone with its session
    }
    this.copies.clear();
    this.generation++;
    this.pool.drainIdle();
    if (cause.code !== 'DeviceError') {
      try {
        try {
          await this.x('C_GetSessionInfo', this.loginSession);
        } catch {
          this.loginSession = await this.x<Handle>('C_OpenSession', this.slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
        }
        await this.login();
        return;
      } catch (e) {
        const kind = toHsmError(e).code;
        if (kind === 'PinIncorrect' || kind === 'PinLocked') throw e;
        // Anything else (NSS answers a finalised library with CKR_SESSION_HANDLE_INVALID or CKR_ARGUMENTS_BAD, not
        // CKR_CRYPTOKI_NOT_INITIALIZED): the library itself must start again.
      }
    }
    // Re-initialise the library: every handle from before is void. Calls still running on other threads first: one
    // that runs on after C_Finalize and C_Initialize would use an old session and key number in the new library (or
    // crash it). While they hang, the connection stays down and tries again later.
    this.finalizing = true;
    try {
      await this.reinitialize();
    } finally {
      this.finalizing = false;
    }
  }

  /** C_Finalize and C_Initialize once no call is out on another thread, then find the token and log in again. */
  private async reinitialize(): Promise<void> {
    await this.drain(2_000);
    if (this.asyncCallsInFlight > 0) {
      throw new HsmError('Timeout', `the HSM was not re-initialised: ${this.asyncCallsInFlight} calls are still out, waiting for the HSM`);
    }
    this.loggedIn = false;
    await this.x('C_Finalize').catch(() => undefined); // already gone
    this.epoch++;
    try {
      await this.x('C_Initialize', initializeArgs(this.opts));
      await this.attach();
    } catch (e) {
      // The HSM is not back (token removed, library refusing to start): a named unavailability, tried again by the
      // next call, never a bare internal error.
      const err = toHsmError(e);
      throw err.code === 'PinIncorrect' || err.code === 'PinLocked' || err.code === 'MechanismUnsupported'
        ? err
        : new HsmError(err.code === 'Unknown' ? 'TokenNotFound' : 'DeviceError', `the HSM could not be re-initialised: ${(e as Error).message}`, err.ckr);
    }
  }

  /** Whether the login session is healthy (asked of the HSM; `xks hsm status`). */
  async ping(): Promise<boolean> {
    return this.down === undefined && (await this.isLoggedIn());
  }

  /** callMode thread: the AES-GCM calls sent to the call thread so far, and in how many messages. */
  get callThreadStats(): { calls: number; batches: number } {
    return { ...(this.thread?.stats ?? { calls: 0, batches: 0 }) };
  }

  /** Calls running off the event loop (libuv's pool or the call thread), including ones already timed out. */
  get asyncCallsInFlight(): number {
    return this.inFlight + (this.thread?.pending ?? 0) + (this.control?.pending ?? 0);
  }

  /** How far past its budget the oldest call on the call thread or the control thread is (ms; 0: none is). */
  get overdueMs(): number {
    return Math.max(this.thread?.overdueMs ?? 0, this.control?.overdueMs ?? 0);
  }

  /** Wait (at most `maxMs`) until no call runs off the event loop. */
  async drain(maxMs: number): Promise<void> {
    const until = Date.now() + maxMs;
    while (this.asyncCallsInFlight > 0 && Date.now() < until) await sleep(2);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.down?.timer);
    this.thread?.close();
    this.control?.close();
    this.pool?.close();
    try {
      this.mod.C_CloseAllSessions(this.slot);
    } catch {
      // ignore
    }
    try {
      this.mod.C_Finalize();
    } catch {
      // ignore
    }
  }
}
