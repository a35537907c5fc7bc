// Key-encryption keys (KEKs) for backup by wrapping, and moving a KEK between two HSMs without it ever being in clear
// (docs/backup.md). A KEK is an AES-256 key with CKA_ID "xks:kek" and CKA_TRUSTED=true: only a trusted key may wrap
// the keys created --exportable (CKA_WRAP_WITH_TRUSTED), and only the security officer can make a key trusted.
//
// Ceremonies run on a CeremonySession (SO and user log in in turn, in this process, with no HsmConnection open):
//   create        SO generates the KEK (public: an SO session makes nothing else), the user seals it (private copy,
//                 public original destroyed)
//   transport-key receiving HSM: SO generates an RSA pair; its public key leaves as SubjectPublicKeyInfo DER
//   send          sending HSM: SO makes that public key a trusted session object, the user wraps the KEK under it
//                 (RSA-OAEP); the operator must give the public key's fingerprint, read from the receiving side
//   receive       receiving HSM: SO unwraps the KEK as a trusted object, checks its check value against the one the
//                 operator read from the sending side, destroys the transport pair; the user seals the KEK
import { createHash, createPublicKey } from 'node:crypto';
import { z } from 'zod';
import { AES_KEY_GEN, RSA_KEY_PAIR_GEN, RSA_OAEP_SHA1, type Mechanism } from '../hsm/mechanisms.js';
import { readBool, type Handle, type KeyStore, type KeyTemplate, type ObjectClass, type ObjectMatch } from '../hsm/key-store.js';
import { withCeremony, type CeremonyOptions, type CeremonySession } from '../hsm/so-session.js';
import { KeyError } from './errors.js';
import { newNonce } from './key-objects.js';
import {
  checkValueKeyTemplate,
  kekTemplate,
  SEALED_KEK_COPY,
  TRANSPORT_KEY_BITS,
  transportKeyPairTemplates,
  trustedPublicKeyTemplate,
} from './wrap-templates.js';

/** The few calls a check value needs; both HsmConnection and CeremonySession have them. */
export interface WrapOps {
  createObject(template: KeyTemplate): Handle | Promise<Handle>;
  wrapKey(mechanism: Mechanism, wrappingKey: Handle, key: Handle): Buffer | Promise<Buffer>;
  destroyObject(handle: Handle): void | Promise<void>;
  /** The token's RFC 5649 key wrap, whatever number it gives it. */
  keyWrap(): Mechanism;
}

/** Where a ceremony runs and who may do it: the user PIN from the config, the SO PIN from XKS_HSM_SO_PIN. */
export interface CeremonyAccess extends CeremonyOptions {
  userPin: string;
  soPin: string;
}

export interface KekInfo {
  label: string;
  handle: Handle;
  trusted: boolean;
  /** false: the SO's public object was never sealed (a ceremony stopped midway); usable without login. */
  private: boolean;
  wrap: boolean;
  unwrap: boolean;
}

export const LABEL = /^[\x20-\x7e]{1,64}$/;

// ---- check values and fingerprints ----------------------------------------------------------------------------

/**
 * The KEK's check value: SHA-256 over the KEK's KWP wrap of a public all-zero key (KWP is deterministic), first 16
 * bytes in hex. Equal on two HSMs exactly when they hold the same KEK; reveals nothing about it.
 */
export async function kekCheckValue(ops: WrapOps, kek: Handle): Promise<string> {
  const zero = await ops.createObject(checkValueKeyTemplate());
  try {
    const wrapped = await ops.wrapKey(ops.keyWrap(), kek, zero);
    return createHash('sha256').update('xks-kek-check-value\n').update(wrapped).digest().subarray(0, 16).toString('hex');
  } finally {
    await ops.destroyObject(zero);
  }
}

/** SHA-256 of a public key's SubjectPublicKeyInfo DER, in hex. */
export function publicKeyFingerprint(spkiDer: Buffer): string {
  return createHash('sha256').update(spkiDer).digest('hex');
}

/** Hex as a person may type or read it: case, spaces and colons do not matter. */
export function normalizeHex(value: string): string {
  return value.toLowerCase().replace(/[\s:-]/g, '');
}

function rsaSpki(modulus: Buffer, exponent: Buffer): Buffer {
  const key = createPublicKey({ key: { kty: 'RSA', n: modulus.toString('base64url'), e: exponent.toString('base64url') }, format: 'jwk' });
  return key.export({ type: 'spki', format: 'der' });
}

/** An RSA public key (SubjectPublicKeyInfo DER) of at least 2048 bits, as modulus and exponent, with its fingerprint. */
export function parseTransportPublicKey(der: Buffer): { modulus: Buffer; exponent: Buffer; bits: number; fingerprint: string } {
  let key;
  try {
    key = createPublicKey({ key: der, format: 'der', type: 'spki' });
  } catch {
    throw new KeyError('ValidationException', 'the public key file is not a SubjectPublicKeyInfo DER public key (as `xks kek transport-key` writes)');
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== 'rsa' || bits < 2048) {
    throw new KeyError('ValidationException', 'the public key must be an RSA key of at least 2048 bits (as `xks kek transport-key` writes)');
  }
  const jwk = key.export({ format: 'jwk' });
  const modulus = Buffer.from(jwk.n ?? '', 'base64url');
  const exponent = Buffer.from(jwk.e ?? '', 'base64url');
  // The fingerprint of the key as re-encoded here, so that it matches what the receiving HSM printed.
  return { modulus, exponent, bits, fingerprint: publicKeyFingerprint(rsaSpki(modulus, exponent)) };
}

// ---- KEKs through the proxy's connection (user) ---------------------------------------------------------------

// CKA_IDs: "xks:kek;n=<nonce>" for a KEK, "xks:kek-transport;n=<nonce>" for both halves of a transport pair (earlier
// releases: "xks:kek" and "xks:kek-transport"). Unique, because NSS takes a new key with an existing CKA_CLASS and
// CKA_ID for the same object; "xks:" ids the catalogue does not know are never taken for external keys.
const KEK_ID = /^xks:kek(?:;n=[0-9a-f]{24})?$/;
const TRANSPORT_ID = /^xks:kek-transport(?:;n=[0-9a-f]{24})?$/;
const kekId = (): Buffer => Buffer.from(`xks:kek;n=${newNonce()}`, 'ascii');
const transportId = (): Buffer => Buffer.from(`xks:kek-transport;n=${newNonce()}`, 'ascii');
const isKekId = (id: Buffer | undefined): boolean => id !== undefined && KEK_ID.test(id.toString('latin1'));
const isTransportId = (id: Buffer | undefined): boolean => id !== undefined && TRANSPORT_ID.test(id.toString('latin1'));

const KEK_MATCH = (label?: string): ObjectMatch => ({ class: 'secret-key', keyType: 'aes', ...(label !== undefined ? { label } : {}) });

/** Of `handles`, the ones whose CKA_ID `matches`. */
async function withId(read: (h: Handle) => (Buffer | undefined)[] | Promise<(Buffer | undefined)[]>, handles: Handle[], matches: (id: Buffer | undefined) => boolean): Promise<Handle[]> {
  const out: Handle[] = [];
  for (const h of handles) if (matches((await read(h))[0])) out.push(h);
  return out;
}

async function kekInfo(hsm: KeyStore, handle: Handle, label: string): Promise<KekInfo> {
  const [trusted, priv, wrap, unwrap] = await hsm.getAttributes(handle, ['trusted', 'private', 'wrap', 'unwrap']);
  return { label, handle, trusted: readBool(trusted), private: readBool(priv), wrap: readBool(wrap), unwrap: readBool(unwrap) };
}

/** The KEK with this label: NotFoundException when there is none, KMSInvalidStateException when two claim it. */
export async function findKek(hsm: KeyStore, label: string): Promise<KekInfo> {
  const handles = await withId((h) => hsm.getAttributes(h, ['id']), await hsm.findObjects(KEK_MATCH(label)), isKekId);
  if (handles.length === 0) {
    const other = (await hsm.findSecretKeys({ label })).length > 0;
    throw new KeyError(
      'NotFoundException',
      other
        ? `"${label}" is not a KEK made by \`xks kek create\` or \`xks kek receive\` (its CKA_ID is not a KEK's)`
        : `no KEK "${label}" in this token (\`xks kek list\` shows the KEKs; \`xks kek create\` makes one)`,
    );
  }
  if (handles.length > 1) throw new KeyError('KMSInvalidStateException', `${handles.length} objects in this token claim to be KEK "${label}"; remove the extra ones`);
  return kekInfo(hsm, handles[0]!, label);
}

export interface KekListing {
  keks: (Omit<KekInfo, 'handle'> & { checkValue: string | undefined })[];
  /** Transport key pairs waiting for `xks kek receive`, by label, with their public key's fingerprint. */
  transportKeys: { label: string; fingerprint: string }[];
}

export async function listKeks(hsm: KeyStore): Promise<KekListing> {
  const keks: KekListing['keks'] = [];
  for (const o of await hsm.findSecretKeys({ keyType: 'aes' })) {
    if (!isKekId(o.id)) continue;
    const { handle, ...info } = await kekInfo(hsm, o.handle, o.label);
    const checkValue = info.wrap ? await kekCheckValue(hsm, handle).catch(() => undefined) : undefined;
    keks.push({ ...info, checkValue });
  }
  const transportKeys: KekListing['transportKeys'] = [];
  const publics = await hsm.findObjects({ class: 'public-key' });
  for (const h of await withId((x) => hsm.getAttributes(x, ['id']), publics, isTransportId)) {
    const [label, modulus, exponent] = await hsm.getAttributes(h, ['label', 'modulus', 'publicExponent']);
    transportKeys.push({ label: (label ?? Buffer.alloc(0)).toString('utf8'), fingerprint: publicKeyFingerprint(rsaSpki(modulus!, exponent!)) });
  }
  keks.sort((a, b) => a.label.localeCompare(b.label));
  transportKeys.sort((a, b) => a.label.localeCompare(b.label));
  return { keks, transportKeys };
}

// ---- ceremonies (CeremonySession: SO and user in turn) --------------------------------------------------------

function checkLabel(label: string): void {
  if (!LABEL.test(label)) throw new KeyError('ValidationException', `"${label}" is not a valid KEK label: use 1 to 64 printable ASCII characters`);
}

function kekObjects(s: CeremonySession, label: string, extra: ObjectMatch = {}): Handle[] {
  return s.find({ token: true, ...KEK_MATCH(label), ...extra }).filter((h) => isKekId(s.getAttributes(h, ['id'])[0]));
}

function transportObjects(s: CeremonySession, label: string, cls: ObjectClass): Handle[] {
  return s
    .find({ token: true, class: cls, label })
    .filter((h) => isTransportId(s.getAttributes(h, ['id'])[0]));
}

/** As the user (checks the user PIN before the SO does anything): refuse when the token already has this KEK. */
function refuseExistingKek(s: CeremonySession, access: CeremonyAccess, label: string): void {
  s.login('user', access.userPin);
  if (kekObjects(s, label).length > 0) throw new KeyError('AlreadyExistsException', `a KEK "${label}" already exists in this token`);
}

/**
 * As the user: replace the SO's public KEK by a private copy (still trusted: SoftHSM's C_CopyObject keeps
 * CKA_TRUSTED) and destroy the public one, whose value SoftHSM stores unencrypted and lets any session use without
 * login. If sealing fails, the public KEK is destroyed too: a ceremony leaves a sealed KEK or nothing.
 */
function sealKek(s: CeremonySession, label: string): Handle {
  const publics = kekObjects(s, label, { private: false });
  if (publics.length !== 1) throw new KeyError('KMSInvalidStateException', `expected one new public KEK "${label}" to seal, found ${publics.length}`);
  const pub = publics[0]!;
  let sealed: Handle | undefined;
  try {
    // The copy keeps the public KEK's CKA_ID (SoftHSM refuses a new one in a copy template); the public one goes next.
    sealed = s.copyObject(pub, SEALED_KEK_COPY);
    const [trusted, priv] = s.getAttributes(sealed, ['trusted', 'private']);
    if (!readBool(trusted) || !readBool(priv)) {
      throw new KeyError('UnsupportedOperationException', 'this HSM does not keep CKA_TRUSTED on a private copy of the KEK; see docs/backup.md');
    }
  } catch (e) {
    if (sealed) tryDestroy(s, sealed);
    tryDestroy(s, pub);
    throw e;
  }
  s.destroyObject(pub);
  return sealed;
}

function tryDestroy(s: CeremonySession, h: Handle): void {
  try {
    s.destroyObject(h);
  } catch {
    // already gone
  }
}

/** `xks kek create`: a new trusted, private KEK; returns its check value. */
export async function createKek(access: CeremonyAccess, label: string): Promise<{ label: string; checkValue: string }> {
  checkLabel(label);
  return withCeremony(access, async (s) => {
    refuseExistingKek(s, access, label);
    s.login('so', access.soPin);
    s.generateKeyHandle(kekTemplate(label, kekId(), 'generate'), AES_KEY_GEN);
    s.login('user', access.userPin);
    const kek = sealKek(s, label);
    return { label, checkValue: await kekCheckValue(s, kek) };
  });
}

/** `xks kek transport-key` (receiving HSM): an RSA pair for one KEK transfer; returns its public key and fingerprint. */
export async function createTransportKey(
  access: CeremonyAccess,
  label: string,
  opts: { replace?: boolean } = {},
): Promise<{ publicKeyDer: Buffer; fingerprint: string }> {
  checkLabel(label);
  return withCeremony(access, (s) => {
    refuseExistingKek(s, access, label);
    s.login('so', access.soPin);
    const existing = [...transportObjects(s, label, 'private-key'), ...transportObjects(s, label, 'public-key')];
    if (existing.length > 0 && !opts.replace) {
      throw new KeyError('AlreadyExistsException', `a transport key for "${label}" already exists in this token (--replace makes a new one)`);
    }
    for (const h of existing) s.destroyObject(h);
    const t = transportKeyPairTemplates(label, transportId());
    const pair = s.generateKeyPair(RSA_KEY_PAIR_GEN, t.publicKey, t.privateKey);
    const [modulus, exponent] = s.getAttributes(pair.publicKey, ['modulus', 'publicExponent']);
    const publicKeyDer = rsaSpki(modulus!, exponent!);
    return { publicKeyDer, fingerprint: publicKeyFingerprint(publicKeyDer) };
  });
}

export const TRANSFER_FORMAT = 'xks-kek-transfer-v1';

const KekTransferSchema = z.strictObject({
  format: z.literal(TRANSFER_FORMAT),
  /** The KEK's label on the sending HSM (the receiver chooses its own). */
  label: z.string(),
  checkValue: z.string().regex(/^[0-9a-f]{32}$/),
  transportKeyFingerprint: z.string().regex(/^[0-9a-f]{64}$/),
  algorithm: z.literal('CKM_RSA_PKCS_OAEP/SHA-1/MGF1-SHA-1'),
  wrapped: z.base64(),
});
export type KekTransfer = z.infer<typeof KekTransferSchema>;

/**
 * `xks kek send` (sending HSM): the KEK wrapped under the receiving HSM's public key. The SO makes that key trusted,
 * so `fingerprint` must be the one the receiving side printed, read out of band: a public key swapped in transit
 * would otherwise receive the KEK.
 */
export async function sendKek(access: CeremonyAccess, label: string, publicKeyDer: Buffer, fingerprint: string): Promise<{ transfer: KekTransfer; checkValue: string }> {
  const pub = parseTransportPublicKey(publicKeyDer);
  if (normalizeHex(fingerprint) !== pub.fingerprint) {
    // Never the right value: the operator must compare the one the receiving side printed, not copy one from here.
    throw new KeyError(
      'IncorrectKeyException',
      `the public key's fingerprint does not match the one given: do not send the KEK to this key; compare the fingerprint \`xks kek transport-key\` printed on the receiving side, read out of band`,
    );
  }
  return withCeremony(access, async (s) => {
    s.login('user', access.userPin);
    requireSealedKek(s, label);
    s.login('so', access.soPin);
    // A session object: the trust in this public key ends with the ceremony's process.
    const trustedPub = s.createObject(trustedPublicKeyTemplate(`${label} transfer`, pub.modulus, pub.exponent));
    try {
      s.login('user', access.userPin);
      const kek = requireSealedKek(s, label); // handles of private objects do not survive a logout
      const wrapped = s.wrapKey(RSA_OAEP_SHA1, trustedPub, kek);
      const checkValue = await kekCheckValue(s, kek);
      const transfer: KekTransfer = {
        format: TRANSFER_FORMAT,
        label,
        checkValue,
        transportKeyFingerprint: pub.fingerprint,
        algorithm: 'CKM_RSA_PKCS_OAEP/SHA-1/MGF1-SHA-1',
        wrapped: wrapped.toString('base64'),
      };
      return { transfer, checkValue };
    } finally {
      tryDestroy(s, trustedPub);
    }
  });
}

function requireSealedKek(s: CeremonySession, label: string): Handle {
  const found = kekObjects(s, label);
  if (found.length === 0) throw new KeyError('NotFoundException', `no KEK "${label}" in this token`);
  if (found.length > 1) throw new KeyError('KMSInvalidStateException', `${found.length} objects in this token claim to be KEK "${label}"`);
  const [trusted, priv] = s.getAttributes(found[0]!, ['trusted', 'private']);
  if (!readBool(trusted)) throw new KeyError('IncorrectKeyException', `KEK "${label}" is not marked trusted by the security officer`);
  if (!readBool(priv)) throw new KeyError('KMSInvalidStateException', `KEK "${label}" is a public object (a ceremony stopped midway): destroy it and start again`);
  return found[0]!;
}

export function parseKekTransfer(contents: string): KekTransfer {
  let parsed: unknown;
  try {
    parsed = JSON.parse(contents);
  } catch {
    parsed = undefined;
  }
  const r = KekTransferSchema.safeParse(parsed);
  if (!r.success) throw new KeyError('InvalidCiphertextException', 'the file is not a KEK transfer file (as `xks kek send` writes), or it was damaged');
  return r.data;
}

/**
 * `xks kek receive` (receiving HSM): the KEK from a transfer file becomes a trusted, sealed KEK here, but only when its
 * check value is `checkValue`, read out of band from the sending side (anyone can wrap a key of their own under a
 * public key). The transport pair is destroyed once the KEK is in.
 */
export async function receiveKek(access: CeremonyAccess, label: string, contents: string, checkValue: string): Promise<{ label: string; checkValue: string }> {
  checkLabel(label);
  const transfer = parseKekTransfer(contents);
  const expected = normalizeHex(checkValue);
  if (!/^[0-9a-f]{32}$/.test(expected)) throw new KeyError('ValidationException', '--check-value takes the 32 hex digits the sending HSM printed');
  return withCeremony(access, async (s) => {
    refuseExistingKek(s, access, label);
    s.login('so', access.soPin);
    const privs = transportObjects(s, label, 'private-key');
    const pubs = transportObjects(s, label, 'public-key');
    if (privs.length !== 1 || pubs.length !== 1) {
      throw new KeyError('NotFoundException', `no transport key for "${label}" in this token: run \`xks kek transport-key ${label}\` here first`);
    }
    const [modulus, exponent] = s.getAttributes(pubs[0]!, ['modulus', 'publicExponent']);
    if (publicKeyFingerprint(rsaSpki(modulus!, exponent!)) !== transfer.transportKeyFingerprint) {
      throw new KeyError('IncorrectKeyException', `the file was wrapped for another transport key than the one for "${label}" in this token`);
    }
    let kek: Handle;
    try {
      kek = s.unwrapKey(RSA_OAEP_SHA1, privs[0]!, Buffer.from(transfer.wrapped, 'base64'), kekTemplate(label, kekId(), 'unwrap'));
    } catch (e) {
      throw new KeyError('InvalidCiphertextException', `the KEK in the file does not unwrap under the transport key for "${label}" (${(e as Error).message})`);
    }
    const got = await kekCheckValue(s, kek);
    if (got !== expected) {
      s.destroyObject(kek);
      // Never the received value: it is what the operator must compare out of band, not copy from here.
      throw new KeyError(
        'IncorrectKeyException',
        `the received KEK's check value does not match the one given: it is not the KEK the sending HSM reported; nothing was kept`,
      );
    }
    for (const h of [...privs, ...pubs]) s.destroyObject(h);
    s.login('user', access.userPin);
    return { label, checkValue: await kekCheckValue(s, sealKek(s, label)) };
  });
}
