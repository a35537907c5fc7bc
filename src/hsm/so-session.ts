// A direct session for key ceremonies: the security officer and the user log in in turn, in one process, without an
// HsmConnection open (docs/backup.md). Some things only the SO may do: CKA_TRUSTED=true can be set only at creation in
// an SO session (later, even the SO gets CKR_ATTRIBUTE_READ_ONLY), and an SO session can make only public objects.
// Login is per process and per token, so this runs while no HsmConnection of this process is open: open() calls
// C_Initialize, close() calls C_Finalize.
//
// SoftHSM facts this relies on (checked on 2.6.1):
// - C_Login(CKU_SO) answers CKR_SESSION_READ_ONLY_EXISTS while a read-only session is open: every session here is R/W.
// - C_Logout invalidates the handles of private objects (CKR_KEY_HANDLE_INVALID afterwards): find them again after
//   every change of login. Public session objects survive the logout and are visible to the next login.
// - Closing the last session of a token releases token object handles too: one session lives for the whole ceremony.
import { HsmError, STANDARD_MEANINGS, toHsmError, type CkrMeanings } from './errors.js';
import { chooseKeyWrap, type KeyWrap } from './key-wrap.js';
import { findSlot, loadModule, P, type Handle, type LibrarySpec, type Mechanism, type Pkcs11, type Template } from './module.js';
import { attributeTypes, matchTemplate, type AttributeName, type ObjectMatch } from './attributes.js';
import { asMechanism } from './mechanisms.js';

export interface CeremonyOptions extends LibrarySpec {
  /** The profile's meaning of return codes (a bad tag on an unwrap of outside data); the standard's by default. */
  meanings?: CkrMeanings | undefined;
  tokenLabel?: string | undefined;
  tokenSerial?: string | undefined;
}

export type CeremonyRole = 'so' | 'user';

export class CeremonySession {
  private role: CeremonyRole | undefined;
  private closed = false;
  private kwp: KeyWrap | null | undefined;

  private constructor(
    private readonly mod: Pkcs11,
    private readonly session: Handle,
    private readonly meanings: CkrMeanings,
    private readonly slot: Handle,
  ) {}

  /** Load the module, C_Initialize, find the token by label or serial and open one R/W session. */
  static open(opts: CeremonyOptions): CeremonySession {
    const mod = loadModule(opts);
    try {
      const slot = findSlot(mod, { tokenLabel: opts.tokenLabel, tokenSerial: opts.tokenSerial });
      return new CeremonySession(mod, mod.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION), opts.meanings ?? STANDARD_MEANINGS, slot);
    } catch (e) {
      try {
        mod.C_Finalize();
      } catch {
        // nothing to undo
      }
      throw e instanceof Error && /CKR_/.test(e.message) ? toHsmError(e) : e;
    }
  }

  /** Log in as `role` (logging out whoever was logged in). Handles of private objects from before are void. */
  login(role: CeremonyRole, pin: string): void {
    if (this.role === role) return;
    this.logout();
    try {
      this.mod.C_Login(this.session, role === 'so' ? P.CKU_SO : P.CKU_USER, pin);
    } catch (e) {
      const err = toHsmError(e);
      const who = role === 'so' ? 'security officer' : 'user';
      if (err.code === 'PinIncorrect') throw new HsmError('PinIncorrect', `the HSM refused the ${who} PIN (${err.ckr})`, err.ckr);
      if (err.code === 'PinLocked') throw new HsmError('PinLocked', `the ${who} PIN is locked on the token (${err.ckr})`, err.ckr);
      throw new HsmError(err.code, `the ${who} login failed: ${err.message}`, err.ckr);
    }
    this.role = role;
  }

  logout(): void {
    if (this.role === undefined) return;
    try {
      this.mod.C_Logout(this.session);
    } catch {
      // not logged in any more
    }
    this.role = undefined;
  }

  /** This token's RFC 5649 key wrap (key-wrap.ts), found once per ceremony. */
  keyWrap(): Mechanism {
    this.kwp ??= this.call(() => chooseKeyWrap(this.mod, this.session, new Set(this.mod.C_GetMechanismList(this.slot))) ?? null);
    if (!this.kwp) throw new HsmError('MechanismUnsupported', 'this token has no RFC 5649 AES key wrap (CKM_AES_KEY_WRAP_KWP)');
    return { mechanism: this.kwp.mechanism };
  }

  /** Objects (token and session) matching the template or the match by name. */
  find(match: Template | ObjectMatch): Handle[] {
    const template = Array.isArray(match) ? match : matchTemplate(match);
    return this.call(() => {
      this.mod.C_FindObjectsInit(this.session, template);
      const handles: Handle[] = [];
      try {
        for (;;) {
          const batch = this.mod.C_FindObjects(this.session, 64);
          if (batch.length === 0) break;
          handles.push(...batch);
        }
      } finally {
        this.mod.C_FindObjectsFinal(this.session);
      }
      return handles;
    });
  }

  /**
   * C_GenerateKey, and the new key's handle: nothing is read back (HsmConnection.generateKey checks the template was
   * honoured and answers the key's description; the ceremony reads what it needs itself).
   */
  generateKeyHandle(template: Template, mechanism: number | Mechanism): Handle {
    return this.call(() => this.mod.C_GenerateKey(this.session, asMechanism(mechanism), template));
  }

  generateKeyPair(mechanism: number | Mechanism, publicTemplate: Template, privateTemplate: Template): { publicKey: Handle; privateKey: Handle } {
    return this.call(() => this.mod.C_GenerateKeyPair(this.session, asMechanism(mechanism), publicTemplate, privateTemplate));
  }

  createObject(template: Template): Handle {
    return this.call(() => this.mod.C_CreateObject(this.session, template));
  }

  copyObject(handle: Handle, template: Template): Handle {
    return this.call(() => this.mod.C_CopyObject(this.session, handle, template));
  }

  getAttributes(handle: Handle, types: readonly (AttributeName | number)[]): (Buffer | undefined)[] {
    return this.call(() =>
      this.mod.C_GetAttributeValue(this.session, handle, attributeTypes(types).map((type) => ({ type }))).map((a) => a.value as Buffer | undefined),
    );
  }

  wrapKey(mechanism: Mechanism, wrappingKey: Handle, key: Handle): Buffer {
    return this.call(() => Buffer.from(this.mod.C_WrapKey(this.session, mechanism, wrappingKey, key, Buffer.alloc(1024))));
  }

  /** A blob that does not unwrap answers CKR_GENERAL_ERROR on SoftHSM 2.6.1: reported as DataInvalid. */
  unwrapKey(mechanism: Mechanism, unwrappingKey: Handle, wrapped: Buffer, template: Template): Handle {
    return this.call(() => this.mod.C_UnwrapKey(this.session, mechanism, unwrappingKey, wrapped, template), 'decrypt');
  }

  destroyObject(handle: Handle): void {
    this.call(() => this.mod.C_DestroyObject(this.session, handle));
  }

  /** Log out, close the session and C_Finalize. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.logout();
    try {
      this.mod.C_CloseSession(this.session);
    } catch {
      // already closed
    }
    try {
      this.mod.C_Finalize();
    } catch {
      // already finalised
    }
  }

  private call<T>(fn: () => T, context: 'decrypt' | 'other' = 'other'): T {
    if (this.closed) throw new HsmError('Closed', 'the ceremony session is closed');
    try {
      return fn();
    } catch (e) {
      throw toHsmError(e, context, this.meanings);
    }
  }
}

/** Open a ceremony session, run `fn`, always close it (C_Finalize), even when `fn` fails. */
export async function withCeremony<T>(opts: CeremonyOptions, fn: (s: CeremonySession) => T | Promise<T>): Promise<T> {
  const s = CeremonySession.open(opts);
  try {
    return await fn(s);
  } finally {
    s.close();
  }
}
