// Bring your own key: GetParametersForImport, ImportKeyMaterial and DeleteImportedKeyMaterial as KMS shapes them, plus
// the sweep of expired wrapping keys and expired material. Every piece of state lives in the token (wrapping key pairs,
// the token key, the key record's import bookkeeping), so any process can finish what another began, and a restart
// between GetParametersForImport and ImportKeyMaterial changes nothing. docs/byok.md explains the design.
import { randomBytes } from 'node:crypto';
import { HsmError } from '../hsm/errors.js';
import type { Handle, KeyStore, ObjectClass } from '../hsm/key-store.js';
import type { AesKeySpec } from '../hsm/templates.js';
import { GENERIC_SECRET_KEY_GEN, HMAC_SHA256, RSA_KEY_PAIR_GEN } from '../hsm/mechanisms.js';
import type { ExternalKey, KeyCatalogue } from '../keys/catalogue.js';
import { importTokenTag, type ClaimView } from '../keys/claims.js';
import { KeyError } from '../keys/errors.js';
import {
  importedVersions,
  latestImported,
  materialExpired,
  readImport,
  withImport,
  type ExpirationModel,
  type ImportBookkeeping,
  type ImportedVersion,
} from '../keys/imported-material.js';
import { newNonce } from '../keys/key-objects.js';
import type { AddVersionOptions, KeyLifecycle } from '../keys/lifecycle.js';
import type { Logger } from '../obs/logger.js';
import { invalidToken } from './errors.js';
import { expiredVersions, markMaterialGone } from './expiry.js';
import { isTokenKeyId, parseWrappingKeyId, TOKEN_KEY_LABEL, tokenKeyId, WRAPPING_KEY_LABEL, wrappingKeyId } from './import-objects.js';
import { importedAesKeyTemplate, importTokenKeyTemplate, wrappingPrivateKeyTemplate, wrappingPublicKeyTemplate, type WrappingKeyUse } from './import-templates.js';
import { encodeTokenBody, openToken, sealToken, WRAPPING_NONCE_BYTES } from './import-token.js';
import { MAX_VALID_TO_DAYS, MODULUS_BITS, type GetParametersForImportRequest, type ImportType, type WrappingAlgorithm } from './schemas.js';
import { algorithmParts, checkMaterial, isInfrastructure, nativeOaepSha256, openMaterialSource, publicKeyDer, type MaterialSource } from './unwrap.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
/** KMS: a public key and its import token are valid for 24 hours. */
export const IMPORT_PARAMETERS_VALID_MS = 24 * HOUR_MS;

export interface ImportServiceOptions {
  /** The clock; tests pass a fake one (expired tokens, expired material). */
  now?: () => Date;
  /**
   * RSAES_OAEP_SHA_256 on an HSM whose OAEP lacks SHA-256 (SoftHSM) can only work by decoding the customer's key
   * material in this process's memory. Refused unless the operator opts in here; each use is logged.
   */
  allowInProcessMaterial?: boolean;
  logger?: Logger;
}

export interface ImportParameters {
  KeyId: string;
  ImportToken: Buffer;
  /** DER SubjectPublicKeyInfo. */
  PublicKey: Buffer;
  ParametersValidTo: Date;
}

export interface ImportMaterialInput {
  KeyId: string;
  ImportToken: Buffer;
  EncryptedKeyMaterial: Buffer;
  ExpirationModel?: ExpirationModel | undefined;
  ValidTo?: Date | undefined;
  ImportType?: ImportType | undefined;
}

export interface ImportResult {
  KeyId: string;
  /** The key version that holds the material (ciphertextMetadata names it). */
  KeyMaterialVersion: number;
  ImportType: ImportType;
  ExpirationModel: ExpirationModel;
  ValidTo?: string;
  KeyState: string;
}

export interface SweepResult {
  /** Wrapping key pairs destroyed because their 24 hours were over (a pair is two objects). */
  WrappingKeysDestroyed: number;
  /** Material destroyed because its ValidTo passed, or left over from a deletion that stopped halfway. */
  MaterialDestroyed: { KeyId: string; Version: number; Reason: 'Expired' | 'Deleted' }[];
}

export class ImportService {
  private readonly now: () => Date;

  constructor(
    private readonly hsm: KeyStore,
    private readonly catalogue: KeyCatalogue,
    private readonly lifecycle: KeyLifecycle,
    private readonly opts: ImportServiceOptions = {},
  ) {
    this.now = opts.now ?? (() => new Date());
  }

  // ---- GetParametersForImport ---------------------------------------------------------------------------------

  async getParametersForImport(req: GetParametersForImportRequest): Promise<ImportParameters> {
    await this.sweepWrappingKeys().catch(() => undefined);
    const key = await this.lifecycle.get(req.KeyId);
    this.checkImportable(key);
    const use = await this.chooseUse(req.WrappingAlgorithm);
    const nonce = randomBytes(WRAPPING_NONCE_BYTES);
    // Whole seconds, as KMS gives them (and the CKA_ID keeps the same instant).
    const expiresAt = new Date(Math.floor((this.now().getTime() + IMPORT_PARAMETERS_VALID_MS) / 1000) * 1000);
    const spec = { label: WRAPPING_KEY_LABEL, id: wrappingKeyId(nonce, expiresAt), modulusBits: MODULUS_BITS[req.WrappingKeySpec], use, token: true };
    const pair = await this.hsm.generateKeyPair(RSA_KEY_PAIR_GEN, wrappingPublicKeyTemplate(spec), wrappingPrivateKeyTemplate(spec));
    try {
      const publicKey = await publicKeyDer(this.hsm, pair.publicKey);
      const body = encodeTokenBody({ keyId: key.id, algorithm: req.WrappingAlgorithm, keySpec: req.WrappingKeySpec, expiresAt, wrappingKeyNonce: nonce });
      const mac = await this.hsm.sign(HMAC_SHA256, await this.tokenKey(), body);
      return { KeyId: key.id, ImportToken: sealToken(body, mac), PublicKey: publicKey, ParametersValidTo: expiresAt };
    } catch (e) {
      await this.destroyQuietly(pair.privateKey, pair.publicKey);
      throw e;
    }
  }

  /** Native OAEP unwrap where the HSM has it for the hash; raw RSA + decoding here otherwise (see unwrap.ts). */
  private async chooseUse(algorithm: WrappingAlgorithm): Promise<WrappingKeyUse> {
    const c = this.hsm.capabilities;
    const { kind, hash } = algorithmParts(algorithm);
    const missing = [
      !c.rsaKeyPairGen && 'CKM_RSA_PKCS_KEY_PAIR_GEN',
      !c.hmacSha256 && 'CKM_SHA256_HMAC',
      !c.genericSecretKeyGen && 'CKM_GENERIC_SECRET_KEY_GEN',
      !c.aesCmac && 'CKM_AES_CMAC',
      kind === 'rsa-aes' && !c.keyWrap && 'RFC 5649 AES key wrap (CKM_AES_KEY_WRAP_KWP)',
    ].filter((m): m is string => typeof m === 'string');
    if (missing.length) throw new KeyError('UnsupportedOperationException', `this HSM cannot import key material: it lacks ${missing.join(', ')}`);
    const native = hash === 'sha1' ? c.rsaOaepUnwrap : await nativeOaepSha256(this.hsm);
    if (native) return 'oaep-unwrap';
    if (!c.rsaX509) throw new KeyError('UnsupportedOperationException', `this HSM offers neither CKM_RSA_PKCS_OAEP with ${hash.toUpperCase()} nor CKM_RSA_X_509: use another wrapping algorithm`);
    if (kind === 'direct') this.checkInProcessAllowed(algorithm);
    return 'raw-decrypt';
  }

  private checkInProcessAllowed(algorithm: WrappingAlgorithm): void {
    if (!this.opts.allowInProcessMaterial) {
      throw new KeyError(
        'UnsupportedOperationException',
        `${algorithm} would decode your key material in the proxy's memory on this HSM (its CKM_RSA_PKCS_OAEP has no ${algorithmParts(algorithm).hash.toUpperCase()}); ` +
          `use RSA_AES_KEY_WRAP_${algorithmParts(algorithm).hash === 'sha1' ? 'SHA_1' : 'SHA_256'}, which keeps it inside the HSM, or have the operator allow in-process unwrapping`,
      );
    }
  }

  // ---- ImportKeyMaterial --------------------------------------------------------------------------------------

  async importKeyMaterial(req: ImportMaterialInput): Promise<ImportResult> {
    const now = this.now();
    const expiration = checkExpiration(req.ExpirationModel, req.ValidTo, now);
    await this.sweepWrappingKeys().catch(() => undefined);

    // The token: well-formed, authenticated by the HSM, for this key, in time, and its wrapping key pair still there.
    const opened = openToken(req.ImportToken);
    if (!opened || !(await this.verifyToken(opened.body, opened.mac))) throw invalidToken();
    const t = opened.fields;
    if (t.keyId !== req.KeyId) throw invalidToken();
    if (now.getTime() >= t.expiresAt.getTime()) {
      throw new KeyError('ExpiredImportTokenException', 'the import token has expired (24 hours): call GetParametersForImport again');
    }
    const pairId = wrappingKeyId(t.wrappingKeyNonce, t.expiresAt);
    const [privateKey] = await this.findWrapping('private-key', pairId);
    const [publicKey] = await this.findWrapping('public-key', pairId);
    // Destroyed after a successful import: the token was used already (or swept, or destroyed by hand).
    if (!privateKey || !publicKey) throw invalidToken();

    const key = await this.lifecycle.get(req.KeyId);
    this.checkImportable(key);
    const [unwrap, decrypt, modulus] = await this.whileUnspent(pairId, () => this.hsm.getAttributes(privateKey, ['unwrap', 'decrypt', 'modulus']));
    const k = modulus?.length ?? 0;
    if (k * 8 !== MODULUS_BITS[t.keySpec]) throw invalidToken();
    const use: WrappingKeyUse = isTrue(unwrap) ? 'oaep-unwrap' : isTrue(decrypt) ? 'raw-decrypt' : invalidUse();
    const { kind } = algorithmParts(t.algorithm);
    if (kind === 'direct' && use === 'raw-decrypt') {
      this.checkInProcessAllowed(t.algorithm);
      this.opts.logger?.warn({ keyId: key.id, algorithm: t.algorithm }, 'import: key material decoded in process memory (operator opt-in)');
    }

    const source = await this.whileUnspent(pairId, () => openMaterialSource({ hsm: this.hsm, privateKey, k, algorithm: t.algorithm, use, blob: req.EncryptedKeyMaterial }));
    try {
      const kcv = (await this.whileUnspent(pairId, () => checkMaterial(this.hsm, source))).toString('base64url');
      const bk = readImport(key.record);
      const importType: ImportType = req.ImportType ?? (importedVersions(bk).length ? 'EXISTING_KEY_MATERIAL' : 'NEW_KEY_MATERIAL');
      const match = versionWithKcv(bk, kcv);
      if (importType === 'NEW_KEY_MATERIAL') this.checkNew(key, bk, match, now);
      else this.checkExisting(key, bk, match);

      // The token is spent by the commit, not before: an import stopped midway leaves it usable for a retry, and of two
      // imports with one token the claims on the key let one commit; the other then finds the token spent.
      const token: TokenInUse = { tag: importTokenTag(t.wrappingKeyNonce), pairId, publicKey, privateKey };
      const version =
        importType === 'NEW_KEY_MATERIAL'
          ? await this.commitNew(key.id, source, kcv, expiration, now, token)
          : await this.commitExisting(key, match!, source, expiration, now, token);
      const after = await this.lifecycle.get(key.id);
      this.opts.logger?.info({ keyId: key.id, version, importType }, 'import: key material imported');
      return {
        KeyId: key.id,
        KeyMaterialVersion: version,
        ImportType: importType,
        ExpirationModel: expiration.model,
        ...(expiration.validTo ? { ValidTo: expiration.validTo.toISOString() } : {}),
        KeyState: after.state,
      };
    } finally {
      await source.dispose();
    }
  }

  /** New material: a new version, after any material imported before (which must still be there). */
  private checkNew(key: ExternalKey, bk: ImportBookkeeping, match: number | undefined, now: Date): void {
    if (match !== undefined) {
      throw new KeyError(
        'IncorrectKeyMaterialException',
        `this key material is already version ${match} of key "${key.id}": import it with ImportType EXISTING_KEY_MATERIAL`,
      );
    }
    const latest = latestImported(bk);
    if (latest !== undefined && (materialExpired(key.record, now, latest) || !key.versions.has(latest))) {
      throw new KeyError(
        'KMSInvalidStateException',
        `the newest key material of key "${key.id}" (version ${latest}) is deleted or expired: import it again (EXISTING_KEY_MATERIAL) before new material`,
      );
    }
  }

  private checkExisting(key: ExternalKey, bk: ImportBookkeeping, match: number | undefined): void {
    if (importedVersions(bk).length === 0) {
      throw new KeyError('KMSInvalidStateException', `no key material was imported into key "${key.id}" yet: use ImportType NEW_KEY_MATERIAL`);
    }
    if (match === undefined) {
      throw new KeyError('IncorrectKeyMaterialException', `this is not the key material imported into key "${key.id}" before`);
    }
  }

  private async commitNew(id: string, source: MaterialSource, kcv: string, expiration: Expiration, now: Date, token: TokenInUse): Promise<number> {
    const result = await this.lifecycle.addVersion(id, {
      ...this.spending(token),
      check: async (k, claims) => {
        await this.refuseSpent(token, claims);
        // The key may have changed since the checks above (another import, a deletion): check again on a fresh read.
        this.checkImportable(k);
        const bk = readImport(k.record);
        this.checkNew(k, bk, versionWithKcv(bk, kcv), this.now());
        return 'go' as const;
      },
      make: (spec) => this.materialize(source, spec, token),
      recordAfter: (k, version) => {
        const record = this.lifecycle.recordOf(k);
        const bk = readImport(record);
        const entry: ImportedVersion = {
          kcv,
          created: now.toISOString(),
          imported: now.toISOString(),
          expirationModel: expiration.model,
          ...(expiration.validTo ? { validTo: expiration.validTo.toISOString() } : {}),
        };
        const state = record.state === 'PendingImport' ? 'Enabled' : record.state;
        return withImport({ ...record, state }, { f: 1, versions: { ...bk.versions, [String(version)]: entry } });
      },
    });
    return result.Version;
  }

  /**
   * The same material again, for `version`: its object is made anew when the material was deleted or expired, with the
   * version's own number and date (in its commit marker), so ciphertexts naming that version decrypt again. Safe because the HSM proved
   * the material is the one this version held (the fingerprint), and a version number is never given to other
   * material: new material always takes a number above every imported version (checkNew refuses while the newest is
   * gone, so the highest object is the highest imported version). Re-importing present material changes its expiry.
   * Either way under a claim on the key (lifecycle.ts addVersion): two re-imports racing cannot both make the version,
   * and the token is spent by the commit.
   */
  private async commitExisting(first: ExternalKey, version: number, source: MaterialSource, expiration: Expiration, now: Date, token: TokenInUse): Promise<number> {
    const entry = readImport(first.record).versions[String(version)];
    if (!entry) throw new KeyError('IncorrectKeyMaterialException', `this is not the key material imported into key "${first.id}" before`);
    await this.lifecycle.addVersion(first.id, {
      ...this.spending(token),
      version: { number: version, createdAt: new Date(entry.created) },
      check: async (k, claims) => {
        await this.refuseSpent(token, claims);
        this.checkImportable(k);
        if (!readImport(k.record).versions[String(version)]) {
          throw new KeyError('IncorrectKeyMaterialException', `this is not the key material imported into key "${k.id}" before`);
        }
        return 'go' as const;
      },
      make: (spec) => this.materialize(source, spec, token),
      recordAfter: (k) => {
        const record = this.lifecycle.recordOf(k);
        const bk = readImport(record);
        const old = bk.versions[String(version)] ?? entry;
        const { gone: _gone, goneAt: _goneAt, validTo: _validTo, ...kept } = old;
        const next: ImportedVersion = {
          ...kept,
          imported: now.toISOString(),
          expirationModel: expiration.model,
          ...(expiration.validTo ? { validTo: expiration.validTo.toISOString() } : {}),
        };
        const versions = { ...bk.versions, [String(version)]: next };
        const latest = latestImported({ f: 1, versions });
        // The key is whole again when its newest material is back (this version is, once committed).
        const whole = latest === version || (latest !== undefined && versions[String(latest)]?.gone === undefined && k.versions.has(latest));
        const state = record.state === 'PendingImport' && whole ? 'Enabled' : record.state;
        return withImport({ ...record, state }, { f: 1, versions });
      },
    });
    return version;
  }

  /** What ties a claim on the key to the import token: the token's tag, a last look, and spending it once committed. */
  private spending(token: TokenInUse): Pick<AddVersionOptions, 'token' | 'beforeCommit' | 'afterCommit'> {
    return {
      token: token.tag,
      beforeCommit: (claims) => this.refuseSpent(token, claims),
      // The public half first: its absence is what a later import with this token looks for.
      afterCommit: () => this.destroyQuietly(token.publicKey, token.privateKey),
    };
  }

  /**
   * A token is spent when its public half is gone, or when a claim that carried it has committed (its lease is still
   * there: that import stopped before spending the token, so it is spent here, the lease last).
   */
  private async refuseSpent(token: TokenInUse, claims: ClaimView): Promise<void> {
    for (const l of claims.leases.values()) {
      if (l.lease.token !== token.tag || !claims.committed.has(l.lease.nonce)) continue;
      await this.destroyQuietly(token.publicKey, token.privateKey, ...l.objects);
      throw invalidToken();
    }
    if ((await this.findWrapping('public-key', token.pairId)).length === 0) throw invalidToken();
  }

  /** The candidate, made from the unwrapped material. */
  private materialize(source: MaterialSource, spec: AesKeySpec, token: TokenInUse) {
    return this.whileUnspent(token.pairId, async () => this.hsm.describeObject(await source.materialize(importedAesKeyTemplate(spec))));
  }

  /**
   * A step that uses the token's wrapping key pair. When it fails because another import with the same token committed
   * meanwhile and spent the token (its key pair is gone: the unwrap meets a destroyed key), the answer is the token's,
   * InvalidImportTokenException, not the blob's.
   */
  private async whileUnspent<T>(pairId: Buffer, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (e) {
      if (!isInfrastructure(e) && (await this.findWrapping('public-key', pairId)).length === 0) throw invalidToken();
      throw e;
    }
  }

  // ---- DeleteImportedKeyMaterial ------------------------------------------------------------------------------

  /** Destroy every imported version's material; the key waits in PendingImport for the same material to return. */
  async deleteImportedKeyMaterial(keyId: string): Promise<{ KeyId: string; KeyState: string; DeletedVersions: number[] }> {
    const now = this.now();
    const key = await this.lifecycle.get(keyId);
    if (key.origin !== 'EXTERNAL') throw notExternal(key.id);
    const record = this.lifecycle.recordOf(key);
    const bk = readImport(record);
    const present = importedVersions(bk).filter((v) => bk.versions[String(v)]?.gone === undefined);
    // The record first: a crash before the objects are destroyed leaves a key that already refuses to serve them, and
    // the next sweep destroys them.
    if (present.length) {
      await this.lifecycle.writeRecord(key, markMaterialGone(record, bk, present, 'Deleted', now, (v) => key.versions.get(v)?.createdAt));
    }
    const deleted: number[] = [];
    for (const v of importedVersions(bk)) {
      const obj = key.versions.get(v);
      if (!obj) continue;
      for (const o of [obj, ...obj.alternates]) {
        await this.hsm.destroyObject(o.object);
        if (o.marker) await this.hsm.destroyObject(o.marker).catch(() => undefined);
      }
      deleted.push(v);
    }
    this.catalogue.invalidate(key.id);
    const after = await this.lifecycle.get(key.id);
    this.opts.logger?.info({ keyId: key.id, versions: deleted }, 'import: key material deleted');
    return { KeyId: key.id, KeyState: after.state, DeletedVersions: deleted };
  }

  // ---- sweep --------------------------------------------------------------------------------------------------

  /** Destroy wrapping key pairs past their 24 hours and material past its ValidTo. Safe from cron, on any host. */
  async sweep(): Promise<SweepResult> {
    const WrappingKeysDestroyed = await this.sweepWrappingKeys();
    const MaterialDestroyed = await this.sweepExpiredMaterial();
    if (WrappingKeysDestroyed || MaterialDestroyed.length) this.opts.logger?.info({ WrappingKeysDestroyed, MaterialDestroyed }, 'import: sweep');
    return { WrappingKeysDestroyed, MaterialDestroyed };
  }

  /** Wrapping key pairs (both halves) whose expiry, kept in their CKA_ID, has passed. */
  async sweepWrappingKeys(): Promise<number> {
    const now = this.now().getTime();
    const handles = await this.hsm.findObjects({ label: WRAPPING_KEY_LABEL });
    let destroyed = 0;
    for (const h of handles) {
      const [id] = await this.hsm.getAttributes(h, ['id']).catch(() => [undefined]);
      const parsed = id ? parseWrappingKeyId(id) : undefined;
      if (!parsed || parsed.expiresAt.getTime() > now) continue;
      try {
        await this.hsm.destroyObject(h);
        destroyed++;
      } catch (e) {
        if (isInfrastructure(e)) throw e; // another process swept it first otherwise
      }
    }
    return destroyed;
  }

  /** Material past its ValidTo: recorded as gone first, then destroyed (a crash between is finished by the next sweep). */
  async sweepExpiredMaterial(): Promise<SweepResult['MaterialDestroyed']> {
    const now = this.now();
    const out: SweepResult['MaterialDestroyed'] = [];
    for (const key of await this.lifecycle.list()) {
      if (key.origin !== 'EXTERNAL' || !key.record?.import) continue;
      let bk: ImportBookkeeping;
      try {
        bk = readImport(key.record);
      } catch {
        continue; // damaged: the key already refuses to serve; `xks keys describe` shows it
      }
      const expired = expiredVersions(key.record, now);
      if (expired.length) {
        await this.lifecycle.writeRecord(key, markMaterialGone(key.record, bk, expired, 'Expired', now, (v) => key.versions.get(v)?.createdAt));
      }
      for (const v of importedVersions(bk)) {
        const obj = key.versions.get(v);
        const entry = bk.versions[String(v)];
        if (!obj || !entry || (entry.gone === undefined && !expired.includes(v))) continue;
        for (const o of [obj, ...obj.alternates]) {
          for (const h of [o.object, ...(o.marker ? [o.marker] : [])]) {
            await this.hsm.destroyObject(h).catch((e: unknown) => {
              if (isInfrastructure(e)) throw e;
            });
          }
        }
        out.push({ KeyId: key.id, Version: v, Reason: entry.gone ?? 'Expired' });
      }
      this.catalogue.invalidate(key.id);
    }
    return out;
  }

  // ---- internals ----------------------------------------------------------------------------------------------

  private checkImportable(key: ExternalKey): void {
    if (key.origin !== 'EXTERNAL') throw notExternal(key.id);
    if (key.state === 'PendingDeletion') throw new KeyError('KMSInvalidStateException', `key "${key.id}" is pending deletion`);
  }

  /**
   * The HMAC key of import tokens, made in the HSM on first use. Two processes making it at once leave two: tokens are
   * verified against each of them, so either works, and every process signs with the same one (the lowest CKA_ID).
   * Only keys that are sensitive and never extractable count, and generated in the HSM where the token reports
   * CKA_LOCAL faithfully (NSS reports it false for generated keys: its profile says so).
   */
  private async tokenKeys(): Promise<Handle[]> {
    const found = await this.hsm.findSecretKeys({ label: TOKEN_KEY_LABEL, keyType: 'generic-secret' });
    const localProves = this.hsm.tokenAttributes.localIsEvidence;
    return found
      .filter((o) => isTokenKeyId(o.id) && (!localProves || (o.attrs.local && o.attrs.neverExtractable)) && o.attrs.sensitive && !o.attrs.extractable)
      .sort((a, b) => Buffer.compare(a.id, b.id))
      .map((o) => o.handle);
  }

  private async tokenKey(): Promise<Handle> {
    const existing = await this.tokenKeys();
    if (existing[0]) return existing[0];
    const made = await this.hsm.generateKey(importTokenKeyTemplate(TOKEN_KEY_LABEL, tokenKeyId(newNonce())), GENERIC_SECRET_KEY_GEN);
    return made.handle;
  }

  private async verifyToken(body: Buffer, mac: Buffer): Promise<boolean> {
    for (const h of await this.tokenKeys()) {
      try {
        if (await this.hsm.verify(HMAC_SHA256, h, body, mac)) return true;
      } catch (e) {
        if (isInfrastructure(e)) throw e;
      }
    }
    return false;
  }

  private findWrapping(cls: ObjectClass, id: Buffer): Promise<Handle[]> {
    return this.hsm.findObjects({ class: cls, label: WRAPPING_KEY_LABEL, id });
  }

  private async destroyQuietly(...handles: Handle[]): Promise<void> {
    for (const h of handles) await this.hsm.destroyObject(h).catch(() => undefined);
  }
}

/** The import token an import would spend, and its wrapping key pair. */
interface TokenInUse {
  tag: string;
  pairId: Buffer;
  publicKey: Handle;
  privateKey: Handle;
}

interface Expiration {
  model: ExpirationModel;
  validTo?: Date | undefined;
}

/** KMS's rules: KEY_MATERIAL_EXPIRES (the default) needs a ValidTo in the future, at most 365 days away; the other none. */
export function checkExpiration(model: ExpirationModel | undefined, validTo: Date | undefined, now: Date): Expiration {
  const m = model ?? 'KEY_MATERIAL_EXPIRES';
  if (m === 'KEY_MATERIAL_DOES_NOT_EXPIRE') {
    if (validTo) throw new KeyError('ValidationException', 'ValidTo must be absent when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE');
    return { model: m };
  }
  if (!validTo || Number.isNaN(validTo.getTime())) {
    throw new KeyError('ValidationException', 'ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES (the default); or use KEY_MATERIAL_DOES_NOT_EXPIRE');
  }
  if (validTo.getTime() <= now.getTime()) throw new KeyError('ValidationException', 'ValidTo must be in the future');
  if (validTo.getTime() > now.getTime() + MAX_VALID_TO_DAYS * DAY_MS) {
    throw new KeyError('ValidationException', `ValidTo must be at most ${MAX_VALID_TO_DAYS} days away`);
  }
  return { model: m, validTo };
}

function versionWithKcv(bk: ImportBookkeeping, kcv: string): number | undefined {
  for (const [v, e] of Object.entries(bk.versions)) if (e.kcv === kcv) return Number(v);
  return undefined;
}

function notExternal(id: string): KeyError {
  return new KeyError('UnsupportedOperationException', `key "${id}" was not created for imported material (origin EXTERNAL); its material cannot be imported or deleted`);
}

function isTrue(b: Buffer | undefined): boolean {
  return b !== undefined && b.length > 0 && b[0] !== 0;
}

function invalidUse(): never {
  throw invalidToken();
}
