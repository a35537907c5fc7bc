// Backup by wrapping: every version of an exportable key, wrapped under a trusted KEK (RFC 5649 key wrap), with the
// key's record, authenticated by an HMAC computed in the HSM (docs/backup.md). The material is never in clear outside
// an HSM: wrapping and unwrapping happen inside the token, and the HMAC key travels wrapped under the KEK too.
//
// File (JSON, format "xks-key-backup-v1"):
//   format, keyId, exportedAt, source {tokenLabel, tokenSerial}, kek {label, checkValue}, wrappingAlgorithm,
//   record (the key record as the token holds it), versions [{version, createdAt, usage, wrapped}],
//   mac {algorithm, wrappedKey, value}
// mac.value = HMAC-SHA256, under a fresh per-export key (mac.wrappedKey, wrapped under the KEK), of
// "xks-key-backup-v1\n" + the canonical JSON (keys sorted, no spaces) of the whole file without mac.value. Restore
// unwraps that key and verifies before it looks at anything else: any change anywhere is InvalidCiphertextException.
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Handle, KeyStore } from '../hsm/key-store.js';
import { HsmError } from '../hsm/errors.js';
import { GENERIC_SECRET_KEY_GEN, HMAC_SHA256 } from '../hsm/mechanisms.js';
import { inertSecretTemplate } from '../hsm/templates.js';
import { assemble, searchKeyObjects, uncommitted, type ExternalKey } from './catalogue.js';
import { KeyError } from './errors.js';
import { findKek, kekCheckValue, type KekInfo } from './kek.js';
import { commitId, EXTERNAL_KEY_ID, materialId, newNonce, recordId } from './key-objects.js';
import { encodeRecord, KeyRecordSchema, KeyUsageSchema, type KeyRecord } from './key-record.js';
import type { KeyLifecycle } from './lifecycle.js';
import { backupMacKeyTemplate, backupMacVerifyTemplate, restoredAesKeyTemplate } from './wrap-templates.js';

export const BACKUP_FORMAT = 'xks-key-backup-v1';
/** A restore's staged version older than this belongs to a restore that died midway: cleared by the next one. */
const STALE_STAGE_MS = 60_000;

const BackupVersionSchema = z.strictObject({
  version: z.number().int().min(1).max(999_999_999),
  /** The version's date (to the second); null for versions made before dates were kept. */
  createdAt: z.iso.datetime().nullable(),
  usage: z.array(KeyUsageSchema),
  wrapped: z.base64(),
});

export const BackupFileSchema = z.strictObject({
  format: z.literal(BACKUP_FORMAT),
  keyId: z.string().regex(EXTERNAL_KEY_ID),
  exportedAt: z.iso.datetime(),
  source: z.strictObject({ tokenLabel: z.string(), tokenSerial: z.string() }),
  kek: z.strictObject({ label: z.string(), checkValue: z.string().regex(/^[0-9a-f]{32}$/) }),
  /**
   * RFC5649: AES key wrap with padding, whatever number the exporting token gives it (wrappingMechanism, for the
   * record). CKM_AES_KEY_WRAP_PAD: a file of an earlier release, which ran on SoftHSM only, where 0x210A is RFC 5649.
   */
  wrappingAlgorithm: z.enum(['RFC5649', 'CKM_AES_KEY_WRAP_PAD']),
  wrappingMechanism: z.enum(['CKM_AES_KEY_WRAP_KWP', 'CKM_AES_KEY_WRAP_PAD']).optional(),
  record: KeyRecordSchema,
  versions: z.array(BackupVersionSchema).min(1),
  mac: z.strictObject({ algorithm: z.literal('CKM_SHA256_HMAC'), wrappedKey: z.base64(), value: z.base64() }),
});
export type BackupFile = z.infer<typeof BackupFileSchema>;

export interface BackupDeps {
  hsm: KeyStore;
  lifecycle: KeyLifecycle;
}

/** JSON with object keys sorted at every level and no whitespace: the bytes the HMAC covers. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** What the HMAC covers: the file as parsed (not as a schema reshaped it), without mac.value. */
function macInput(doc: Record<string, unknown>): Buffer {
  const mac = (doc.mac ?? {}) as Record<string, unknown>;
  const { value: _value, ...macRest } = mac;
  return Buffer.from(`${BACKUP_FORMAT}\n${canonicalJson({ ...doc, mac: macRest })}`, 'utf8');
}

const altered = () => new KeyError('InvalidCiphertextException', 'the backup file does not verify: it was altered or damaged; nothing was restored');

function ckrOf(e: unknown): string | undefined {
  return e instanceof HsmError ? e.ckr : undefined;
}

/** Refuses keys whose material may not leave the HSM, with the reason; returns the versions to export. */
function exportableVersions(key: ExternalKey) {
  if (key.problems.length > 0) throw new KeyError('KMSInvalidStateException', `key "${key.id}" cannot be exported as it stands: ${key.problems.join('; ')}`);
  if (key.record?.exportable !== true) {
    throw new KeyError(
      'UnsupportedOperationException',
      `key "${key.id}" is not exportable: it was not created with --exportable, so its material cannot leave the HSM, not even wrapped`,
    );
  }
  if (key.duplicateVersions.size > 0) {
    throw new KeyError('KMSInvalidStateException', `key "${key.id}" has versions claimed by two objects (${[...key.duplicateVersions].join(', ')}); see xks keys describe`);
  }
  const versions = [...key.versions.values()].sort((a, b) => a.version - b.version);
  if (versions.length === 0) throw new KeyError('KMSInvalidStateException', `key "${key.id}" has no key material to export`);
  const fixed = versions.find((v) => v.attrs.extractable !== true);
  if (fixed) {
    throw new KeyError('UnsupportedOperationException', `version ${fixed.version} of key "${key.id}" is not extractable, so the key cannot be exported`);
  }
  return versions;
}

function requireTrusted(kek: KekInfo): void {
  if (!kek.trusted) {
    throw new KeyError(
      'IncorrectKeyException',
      `KEK "${kek.label}" is not marked trusted by the security officer, so the HSM will not wrap an exportable key under it; use a KEK made by \`xks kek create\``,
    );
  }
}

/** `xks keys export`: the backup file's text for every version of key `id`, wrapped under KEK `kekLabel`. */
export async function exportKey(deps: BackupDeps, id: string, kekLabel: string, now: Date = new Date()): Promise<string> {
  const { hsm, lifecycle } = deps;
  const key = await lifecycle.get(id);
  const versions = exportableVersions(key);
  const record = lifecycle.recordOf(key);
  const kek = await findKek(hsm, kekLabel);
  requireTrusted(kek);
  const wrap = async (h: Handle, what: string): Promise<Buffer> => {
    try {
      return await hsm.wrapKey(hsm.keyWrap(), kek.handle, h);
    } catch (e) {
      // The HSM's own refusal, should the attribute read above be wrong: CKA_WRAP_WITH_TRUSTED needs CKA_TRUSTED.
      if (ckrOf(e) === 'CKR_KEY_NOT_WRAPPABLE') requireTrusted({ ...kek, trusted: false });
      if (ckrOf(e) === 'CKR_KEY_UNEXTRACTABLE') throw new KeyError('UnsupportedOperationException', `${what} of key "${id}" is not extractable`);
      throw e;
    }
  };
  const out = [];
  for (const v of versions) {
    // Two objects committed as one version (catalogue.ts) would restore as two indistinguishable objects.
    if (v.alternates.length > 0) {
      throw new KeyError('KMSInvalidStateException', `version ${v.version} of key "${id}" has ${1 + v.alternates.length} objects (two rotations raced): it cannot be exported`);
    }
    out.push({
      version: v.version,
      createdAt: v.createdAt ? v.createdAt.toISOString() : null,
      usage: [...(v.encrypt ? ['ENCRYPT'] : []), ...(v.decrypt ? ['DECRYPT'] : [])],
      wrapped: (await wrap(v.object, `version ${v.version}`)).toString('base64'),
    });
  }
  const macKey = await hsm.generateKey(backupMacKeyTemplate(), GENERIC_SECRET_KEY_GEN);
  try {
    const doc: Record<string, unknown> = {
      format: BACKUP_FORMAT,
      keyId: key.id,
      exportedAt: now.toISOString(),
      source: { tokenLabel: hsm.info.label, tokenSerial: hsm.info.serial },
      kek: { label: kek.label, checkValue: await kekCheckValue(hsm, kek.handle) },
      wrappingAlgorithm: 'RFC5649',
      wrappingMechanism: hsm.capabilities.keyWrap?.name,
      record,
      versions: out,
      mac: { algorithm: 'CKM_SHA256_HMAC', wrappedKey: (await wrap(macKey.handle, 'the MAC key')).toString('base64') },
    };
    const mac = await hsm.sign(HMAC_SHA256, macKey.handle, macInput(doc));
    (doc.mac as Record<string, unknown>).value = mac.toString('base64');
    return `${JSON.stringify(doc, null, 2)}\n`;
  } finally {
    await hsm.destroyObject(macKey.handle).catch(() => undefined);
  }
}

/** The file, verified under KEK `kek`: InvalidCiphertextException for any alteration, without saying where. */
async function verifiedBackup(hsm: KeyStore, contents: string, kek: KekInfo): Promise<BackupFile> {
  let raw: unknown;
  try {
    raw = JSON.parse(contents);
  } catch {
    throw altered();
  }
  const parsed = BackupFileSchema.safeParse(raw);
  if (!parsed.success) throw altered();
  const file = parsed.data;
  let macKey: Handle;
  try {
    macKey = await hsm.unwrapUntrusted(hsm.keyWrap(), kek.handle, Buffer.from(file.mac.wrappedKey, 'base64'), backupMacVerifyTemplate());
  } catch (e) {
    if (!(e instanceof HsmError) || e.code !== 'DataInvalid') throw e;
    // Another KEK than the one the file was made under: say so, rather than "altered".
    const here = await kekCheckValue(hsm, kek.handle);
    if (here !== file.kek.checkValue) {
      throw new KeyError(
        'IncorrectKeyException',
        `the backup was made under KEK "${file.kek.label}" (check value ${file.kek.checkValue}), not under KEK "${kek.label}" of this token (check value ${here})`,
      );
    }
    throw altered();
  }
  try {
    const ok = await hsm.verify(HMAC_SHA256, macKey, macInput(raw as Record<string, unknown>), Buffer.from(file.mac.value, 'base64'));
    if (!ok) throw altered();
  } finally {
    await hsm.destroyObject(macKey).catch(() => undefined);
  }
  return file;
}

/**
 * `xks keys import-wrapped`: restore a backup into this token with the same key id, versions, usage and record.
 * All or nothing: versions are unwrapped as candidates (never used), then the record is written, then each candidate
 * becomes its version; a failure anywhere destroys what this restore made.
 */
export async function importWrapped(deps: BackupDeps, contents: string, kekLabel: string): Promise<ExternalKey> {
  const { hsm, lifecycle } = deps;
  const kek = await findKek(hsm, kekLabel);
  const file = await verifiedBackup(hsm, contents, kek);
  const id = file.keyId;
  const versions = [...file.versions].sort((a, b) => a.version - b.version);
  if (new Set(versions.map((v) => v.version)).size !== versions.length) {
    throw new KeyError('ValidationException', `the backup of key "${id}" lists one version twice`);
  }
  try {
    await lifecycle.get(id);
    throw new KeyError('AlreadyExistsException', `a key "${id}" already exists in this token; nothing was restored`);
  } catch (e) {
    if (!(e instanceof KeyError) || e.code !== 'NotFoundException') throw e;
  }
  const nowMs = Date.now();
  // Candidates left by a restore that died midway (the key has no version or record, so nobody else cleans them).
  for (const c of uncommitted(await searchKeyObjects(hsm, { label: id }))) {
    if (Math.abs(nowMs - c.startedMs) > STALE_STAGE_MS) await hsm.destroyObject(c.object).catch(() => undefined);
  }

  const made: Handle[] = [];
  try {
    const staged: { version: number; createdAt: string | null; handle: Handle; nonce: string }[] = [];
    for (const v of versions) {
      const nonce = newNonce();
      const template = restoredAesKeyTemplate({
        label: id,
        id: materialId(v.version, nowMs, nonce),
        encrypt: v.usage.includes('ENCRYPT'),
        decrypt: v.usage.includes('DECRYPT'),
      });
      const wrapped = Buffer.from(v.wrapped, 'base64');
      // Only an AES-256 key is a version: KWP of 32 bytes is 40 bytes. (SoftHSM 2.6.1 leaves CKA_VALUE_LEN at 0 on
      // unwrapped keys, so the length cannot be read back afterwards.)
      if (wrapped.length !== 40) {
        throw new KeyError('ValidationException', `version ${v.version} in the backup of key "${id}" is not an AES-256 key; nothing was restored`);
      }
      let handle: Handle;
      try {
        handle = await hsm.unwrapUntrusted(hsm.keyWrap(), kek.handle, wrapped, template);
      } catch (e) {
        if (e instanceof HsmError && e.code === 'DataInvalid') throw altered();
        throw e;
      }
      made.push(handle);
      staged.push({ version: v.version, createdAt: v.createdAt, handle, nonce });
    }
    const record: KeyRecord = { ...file.record, exportable: true };
    const recordObject = await hsm.generateKey(inertSecretTemplate(id, recordId(1, encodeRecord(record))), GENERIC_SECRET_KEY_GEN);
    made.push(recordObject.handle);
    // Another restore (or create) of the same id that raced this one: whoever sees a rival backs off.
    const mine = new Set(made.map((h) => h.toString('hex')));
    const objects = await searchKeyObjects(hsm, { label: id });
    const seen = assemble(id, objects.filter((o) => !mine.has(o.handle.toString('hex'))));
    const rivalCandidates = uncommitted(objects).filter((c) => !mine.has(c.object.toString('hex')));
    if (seen || rivalCandidates.length > 0) {
      throw new KeyError('ConflictException', `key "${id}" was created in this token while it was being restored; nothing was restored`);
    }
    // Commit each version: its marker is one create; a failure here destroys markers and material alike (below).
    for (const s of staged) {
      const marker = await hsm.generateKey(
        inertSecretTemplate(id, commitId(s.version, s.createdAt ? new Date(s.createdAt) : undefined, s.nonce)),
        GENERIC_SECRET_KEY_GEN,
      );
      made.push(marker.handle);
    }
  } catch (e) {
    for (const h of made.reverse()) await hsm.destroyObject(h).catch(() => undefined);
    throw e;
  }
  return lifecycle.get(id);
}
