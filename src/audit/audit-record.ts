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
  /** The SigV4 access key id, or the operator (the OS user) for the CLI. */
  who: z.string().optional(),
  awsPrincipalArn: z.string().optional(),
  kmsKeyArn: z.string().optional(),
  kmsOperation: z.string().optional(),
  kmsRequestId: z.string().optional(),
  kmsViaService: z.string().optional(),
  /** The admin API's own request id (x-amzn-requestid). */
  requestId: z.string().optional(),
  operation: z.string(),
  keyId: z.string().optional(),
  keyVersion: z.number().int().optional(),
  outcome: z.enum(['ok', 'error']),
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

export const AuditLineSchema = z.discriminatedUnion('type', [AuditEventSchema, CheckpointSchema]);
export type AuditLine = z.infer<typeof AuditLineSchema>;

export function lineHash(line: string): string {
  return createHash('sha256').update(line, 'utf8').digest('hex');
}

/** The bytes a checkpoint's MAC covers: its position and the hash of everything before it. */
export function checkpointMessage(c: Pick<Checkpoint, 'seq' | 'time' | 'prev'>): Buffer {
  return Buffer.from(`xks-audit-checkpoint-v1\n${c.seq}\n${c.time}\n${c.prev}`, 'utf8');
}
