// Which rotated file is the newest, when two rotations happened in the same millisecond (rotatedName adds "-1"):
// resuming a trail reads its tail from that file, so taking the older one made a live trail look cut.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { newestRotated } from '../../src/audit/audit-resume.js';

it('orders rotated files by time, then by the number a second rotation in the same millisecond got', () => {
  const dir = mkdtempSync(join(tmpdir(), 'xks-rotated-'));
  const file = join(dir, 'audit-h-cli.jsonl');
  for (const n of ['2026-12-07T03-28-40-615Z', '2026-12-07T03-28-40-616Z', '2026-12-07T03-28-40-616Z-1', '2026-12-07T03-28-40-614Z-2']) {
    writeFileSync(join(dir, `audit-h-cli.${n}.jsonl`), '');
  }
  writeFileSync(file, '');
  expect(newestRotated(file)).toBe(join(dir, 'audit-h-cli.2026-12-07T03-28-40-616Z-1.jsonl'));
  writeFileSync(join(dir, 'audit-h-cli.2026-12-07T03-28-40-616Z-2.jsonl'), '');
  expect(newestRotated(file)).toBe(join(dir, 'audit-h-cli.2026-12-07T03-28-40-616Z-2.jsonl'));
});
