// The audit trail's line format. Each line is one JSON object carrying `prev`, the SHA-256 (hex) of the previous
// line's exact bytes, so an edit, a deletion or a reordering breaks the chain at the first line it touches. At
// intervals a checkpoint line carries an HMAC made inside the HSM over the chain so far, so the chain cannot be
// rebuilt by someone who can write the file but cannot use the HSM's key. Pure functions only.
import { createHash } from 'node:crypto';
import { z } from 'zod';

/** `prev` of the first line of a trail that continues nothing. */
export const GENESIS = '0'.repeat(64);

const Hash = z.string().regex(/^[0-9a-f]{64}$/);

/** One audited call: an XKS request, an admin API request or a CLI operation. */
export const AuditEventSchema = z.object({
  seq: z.number().int().min(1),
  time: z.iso.datetime(),
  prev: Hash,
  type: z.literal('event'),
  /** xks, admin or cli. */
  source: z.enum(['xks', 'admin', 'cli']),
  /** The SigV4 access key id that authenticated, or the operator (the OS user) for the CLI. */
  who: z.string().optional(),
  /** A request that did not authenticate: the access key id it claimed. */
  triedAccessKeyId: z.string().max(128).optional(),
  /** The client's address (the TCP peer) of an XKS or admin request. */
  from: z.string().max(64).optional(),
  awsPrincipalArn: z.string().optional(),
  kmsKeyArn: z.string().optional(),
  kmsOperation: z.string().optional(),
  kmsRequestId: z.string().optional(),
  kmsViaService: z.string().optional(),
  /** The admin API's own request id (x-amzn-requestid); for the CLI, the id shared by a command's intent and outcome. */
  requestId: z.string().optional(),
  operation: z.string(),
  keyId: z.string().optional(),
  keyVersion: z.number().int().optional(),
  /** A decrypt that authenticated only under AWS's sample proxy's AAD layout (its ciphertexts: docs/migrate-from-aws-sample.md). */
  aadLayout: z.literal('aws-sample').optional(),
  /** `started`: a CLI command's intent, written and sealed before it changes anything; its outcome follows. */
  outcome: z.enum(['ok', 'error', 'started']),
  errorName: z.string().optional(),
});
export type AuditEvent = z.infer<typeof AuditEventSchema>;

/** What callers hand to the trail: everything but the chain fields. */
export type AuditEntry = Omit<AuditEvent, 'seq' | 'time' | 'prev' | 'type'>;

export const CheckpointSchema = z.object({
  seq: z.number().int().min(1),
  time: z.iso.datetime(),
  prev: Hash,
  type: z.literal('checkpoint'),
  /** The HSM key (CKA_LABEL) that made the MAC. */
  keyLabel: z.string(),
  /** HMAC-SHA256, hex, over checkpointMessage(). */
  mac: z.string().regex(/^[0-9a-f]{64}$/),
});
export type Checkpoint = z.infer<typeof CheckpointSchema>;

/**
 * The first line of a writer that could not vouch for the end of its trail when it opened it (lines after the last
 * checkpoint, a line cut short, a checkpoint the HSM anchor does not know, an anchor newer than the file). It is MACed
 * like a checkpoint, chains onto the last line the writer could verify (`after`; GENESIS when none), and says which
 * seqs it does not vouch for: the lines after `after` that are in the files are not evidence, the others are missing.
 */
export const SegmentSchema = z.object({
  seq: z.number().int().min(1),
  time: z.iso.datetime(),
  prev: Hash,
  type: z.literal('segment'),
  /** Why the tail was not continued, for a person. */
  reason: z.string().max(512),
  /** The last line the writer verified (a checkpoint or segment): what this segment continues. */
  after: z.object({ seq: z.number().int().min(1), hash: Hash }).optional(),
  /** The seqs between `after` and this line: not vouched for (present lines are not evidence; absent ones are missing). */
  notVouched: z.object({ fromSeq: z.number().int().min(1), toSeq: z.number().int().min(1) }).optional(),
  /** The file (base name) that holds the lines not vouched for, renamed when the segment began a new file. */
  unsealedFile: z.string().max(255).optional(),
  /** The newest checkpoint the HSM anchor recorded for this trail when the writer opened it. */
  anchored: z.object({ seq: z.number().int().min(1), hash: z.string().regex(/^[0-9a-f]{32}$/) }).optional(),
  keyLabel: z.string(),
  mac: z.string().regex(/^[0-9a-f]{64}$/),
});
export type Segment = z.infer<typeof SegmentSchema>;

export const AuditLineSchema = z.discriminatedUnion('type', [AuditEventSchema, CheckpointSchema, SegmentSchema]);
export type AuditLine = z.infer<typeof AuditLineSchema>;
/** A line whose MAC was made in the HSM: it vouches for the chain up to it. */
export type SealLine = Checkpoint | Segment;

export function lineHash(line: string): string {
  return createHash('sha256').update(line, 'utf8').digest('hex');
}

/** The bytes a checkpoint's MAC covers: its position and the hash of everything before it. */
export function checkpointMessage(c: Pick<Checkpoint, 'seq' | 'time' | 'prev'>): Buffer {
  return Buffer.from(`xks-audit-checkpoint-v1\n${c.seq}\n${c.time}\n${c.prev}`, 'utf8');
}

/** The bytes a segment's MAC covers: every field but the MAC and the key's label. */
export function segmentMessage(s: Omit<Segment, 'type' | 'keyLabel' | 'mac'>): Buffer {
  const fields = [s.seq, s.time, s.prev, JSON.stringify(s.reason), s.after ? `${s.after.seq}:${s.after.hash}` : '', s.notVouched ? `${s.notVouched.fromSeq}-${s.notVouched.toSeq}` : '', JSON.stringify(s.unsealedFile ?? ''), s.anchored ? `${s.anchored.seq}:${s.anchored.hash}` : ''];
  return Buffer.from(`xks-audit-segment-v1\n${fields.join('\n')}`, 'utf8');
}

/** The message whose MAC a sealing line carries. */
export function sealMessage(l: SealLine): Buffer {
  return l.type === 'checkpoint' ? checkpointMessage(l) : segmentMessage(l);
}

/**
 * The trail a file belongs to, as its HSM anchor names it: 16 hex of the SHA-256 of the current file's absolute path.
 * The path, not only the name: two audit directories on one host (two configs on one token) hold files of the same name.
 */
export function trailId(currentFile: string): string {
  return createHash('sha256').update(currentFile, 'utf8').digest('hex').slice(0, 16);
}

/**
 * The current file a trail's file belongs to: a rotated or set-aside name (audit-trail.ts rotatedName:
 * `audit.2026-11-22T21-30-00-000Z[-unsealed|-cut][-1].jsonl`) maps to `audit.jsonl`; any other name is its own.
 */
export function currentFileName(name: string): string {
  const m = /^(.+)\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z(?:-[a-z]+)?(?:-\d+)?(\.jsonl)?$/.exec(name);
  return m ? m[1]! + (m[2] ?? '') : name;
}

/** The prefix of a line's hash an HSM anchor keeps (CKA_ID stays short). */
export function anchorHash(lineHashHex: string): string {
  return lineHashHex.slice(0, 32);
}
