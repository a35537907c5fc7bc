// How a body that does not fit its operation's schema is told to the client (http/request-cycle.ts issueMessage),
// for both surfaces: one sentence that names the field.
import { describe, expect, it } from 'vitest';
import { z, type ZodType } from 'zod';
import { ADMIN_SCHEMAS } from '../../src/http/admin-schemas.js';
import { issueMessage } from '../../src/http/request-cycle.js';
import { EncryptRequestSchema } from '../../src/xks/schemas.js';

function messageFor(schema: ZodType, input: unknown, operation = 'Op') {
  const r = schema.safeParse(input);
  if (r.success) throw new Error('expected a failure');
  return issueMessage(r.error.issues[0]! as never, input, schema, operation);
}

const meta = { kmsRequestId: 'r', kmsOperation: 'Encrypt', awsPrincipalArn: 'arn:aws:iam::1:root', kmsKeyArn: 'arn:aws:kms:us-east-1:1:key/k' };

describe('issueMessage', () => {
  it('a missing field is "<field> is required"; a wrong type names the field and what it must be', () => {
    expect(messageFor(ADMIN_SCHEMAS.DescribeKey, {})).toEqual({ message: 'KeyId is required', tooLarge: false });
    expect(messageFor(ADMIN_SCHEMAS.DescribeKey, { KeyId: 7 })).toEqual({ message: 'KeyId: must be a string', tooLarge: false });
    expect(messageFor(EncryptRequestSchema, { requestMetadata: meta, encryptionAlgorithm: 'AES_GCM' }).message).toBe('plaintext is required');
  });

  it('nested fields are named by their path', () => {
    const m = messageFor(EncryptRequestSchema, { requestMetadata: { ...meta, kmsRequestId: 5 }, plaintext: 'AA==', encryptionAlgorithm: 'AES_GCM' });
    expect(m.message.startsWith('requestMetadata.kmsRequestId: ')).toBe(true);
  });

  it('an unknown field of a strict schema names the operation, the field and the fields it has', () => {
    expect(messageFor(ADMIN_SCHEMAS.ScheduleKeyDeletion, { KeyId: 'k', PendingWindowDays: 7 }, 'ScheduleKeyDeletion').message).toBe(
      'ScheduleKeyDeletion has no field "PendingWindowDays" (its fields: KeyId, PendingWindowInDays)',
    );
    expect(messageFor(ADMIN_SCHEMAS.SweepImports, { KeyId: 'k' }, 'SweepImports').message).toBe('SweepImports has no field "KeyId" (it takes {})');
  });

  it("our own checks that name the field are not prefixed twice; the others are; a size beyond ours says tooLarge", () => {
    const body = (plaintext: string) => ({ requestMetadata: meta, plaintext, encryptionAlgorithm: 'AES_GCM' });
    expect(messageFor(EncryptRequestSchema, body('A'))).toEqual({ message: 'plaintext is not valid Base64', tooLarge: false });
    expect(messageFor(EncryptRequestSchema, body(Buffer.alloc(8193).toString('base64')))).toEqual({ message: 'plaintext is longer than 8192 bytes', tooLarge: true });
    expect(messageFor(ADMIN_SCHEMAS.CreateKey, { KeyId: 'k', KeyUsage: ['ENCRYPT', 'ENCRYPT'] }).message).toBe('KeyUsage: lists a usage twice');
    expect(messageFor(z.object({ a: z.string() }).refine(() => false, 'never fits'), { a: 'x' }).message).toBe('body: never fits');
  });
});
