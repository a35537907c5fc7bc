// How a writer opens an existing trail: it continues the chain only from a line it can vouch for, never from an
// unverified tail. The file's last line must be a checkpoint (or segment) that the HSM anchor of this trail records,
// or, where no anchor exists yet (a first start after an upgrade) or the anchor is older (a crash between writing a
// checkpoint and anchoring it), one whose MAC verifies in the HSM and, for an older anchor, that follows the anchored
// line. Anything else (lines after the last checkpoint: a crash, or lines added by hand; a line cut short; a
// checkpoint the anchor does not know; an anchor newer than the file: a cut) starts a new, MACed segment instead.
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { HsmAnchor } from './audit-anchor.js';
import { AuditLineSchema, anchorHash, lineHash, type AuditLine, type SealLine } from './audit-record.js';

/** How far back a writer looks for the line it can continue from (a default checkpointEvery spans about 0.5 MB). */
const TAIL_WINDOW = 16 * 1024 * 1024;
/** MACs checked in the HSM while looking back for a line to continue from, when no anchor names it. */
const MAX_MAC_CHECKS = 4;

export interface TailLine {
  /** The file that holds the line. */
  file: string;
  raw: string;
  line: AuditLine | undefined;
}
type SealTailLine = TailLine & { line: SealLine };

export type ResumePlan =
  /** No trail yet: start at genesis. */
  | { kind: 'fresh' }
  /** Continue from this line; `anchor`: record it in the HSM now (it was verified by its MAC, not by an anchor). */
  | { kind: 'continue'; from: SealTailLine; anchor: boolean }
  | {
      kind: 'segment';
      /** The newest line the writer could verify, or none. */
      after: SealTailLine | undefined;
      /** The highest seq seen or anchored: the segment takes the next one. */
      topSeq: number;
      reason: string;
      /** The current file holds lines the segment does not vouch for: rename it (`cut`: it ends mid-line). */
      renameCurrent: 'cut' | 'unsealed' | undefined;
      /** A file other than the current one that holds the lines not vouched for (the newest rotated file). */
      unsealedIn: string | undefined;
    };

const isSeal = (t: TailLine): t is SealTailLine => t.line?.type === 'checkpoint' || t.line?.type === 'segment';

export async function planResume(
  file: string,
  anchor: HsmAnchor | undefined,
  keyLabel: string,
  verifyMac: (line: SealLine) => Promise<boolean>,
): Promise<ResumePlan> {
  const current = existsSync(file) ? readTail(file, anchor) : undefined;
  let lines = current?.lines.map((raw) => parsed(file, raw)) ?? [];
  const cut = current?.cut === true;
  // The current file starts empty after a rotation: the chain goes on from the end of the newest rotated file.
  const rotated = newestRotated(file);
  if (!lines.some(isSeal) && rotated) lines = [...readTail(rotated, anchor).lines.map((raw) => parsed(rotated, raw)), ...lines];
  if (lines.length === 0 && !cut) {
    if (!anchor) return { kind: 'fresh' };
    return segment(undefined, `the HSM anchor says seq ${anchor.seq} was sealed, but the trail has no lines: its files were removed or emptied`);
  }
  const anchored = (t: TailLine) => anchor !== undefined && isSeal(t) && t.line.seq === anchor.seq && anchorHash(lineHash(t.raw)) === anchor.hash;
  const macOk = async (t: SealTailLine) => t.line.keyLabel === keyLabel && (await verifyMac(t.line));
  const last = lines.at(-1);

  if (last && !cut && isSeal(last)) {
    if (anchored(last)) return { kind: 'continue', from: last, anchor: false };
    if (!anchor && (await macOk(last))) return { kind: 'continue', from: last, anchor: true };
    if (anchor && last.line.seq > anchor.seq && (await macOk(last)) && chainsFromAnchor(lines, anchored)) return { kind: 'continue', from: last, anchor: true };
  }

  // Not continued: find the newest line that can be vouched for, and say why the rest is not.
  let after: SealTailLine | undefined = lines.find(anchored) as SealTailLine | undefined;
  if (!after) {
    let checks = 0;
    for (let i = lines.length - 1; i >= 0 && checks < MAX_MAC_CHECKS; i--) {
      const t = lines[i]!;
      if (!isSeal(t) || (anchor && t.line.seq >= anchor.seq)) continue;
      checks++;
      if (await macOk(t)) {
        after = t;
        break;
      }
    }
  }
  const lastSeq = last?.line?.seq;
  let reason: string;
  if (cut) reason = 'the file ends with a line cut short (a crash while writing, or an edit)';
  else if (!last?.line) reason = 'the last line is not a valid audit line (damaged, or written by hand)';
  else if (anchor && !lines.some(anchored) && (lastSeq ?? 0) < anchor.seq) {
    reason = `the HSM anchor says seq ${anchor.seq} was sealed, but the trail ends at seq ${lastSeq}: lines were cut or a file removed`;
  } else if (!isSeal(last)) {
    const n = lines.length - 1 - (after ? lines.indexOf(after) : -1);
    reason = `${n} line(s) after the last checkpoint were never sealed (a crash before the next checkpoint, or lines added by hand)`;
  } else if (anchor && !anchored(last)) reason = `the last checkpoint (seq ${last.line.seq}) is not the one the HSM anchor records (seq ${anchor.seq}): the file was rewritten`;
  else reason = `the last checkpoint (seq ${last.line.seq}) does not verify with the HSM key ${keyLabel}: forged, or made with another key`;
  return segment(after, reason);

  function segment(after: SealTailLine | undefined, reason: string): ResumePlan {
    const seqs = lines.map((t) => t.line?.seq ?? 0);
    const topSeq = Math.max(0, anchor?.seq ?? 0, after?.line.seq ?? 0, ...seqs);
    const afterIndex = after ? lines.indexOf(after) : -1;
    const hasCurrent = current !== undefined && (current.lines.length > 0 || cut);
    // Lines after `after` are in the current file, or (the current file empty) in the newest rotated one.
    const rest = lines.slice(afterIndex + 1);
    const unsealedIn = !hasCurrent && rest.length > 0 && rotated && rest.some((t) => t.file === rotated) ? rotated : undefined;
    return {
      kind: 'segment',
      after,
      topSeq,
      reason,
      renameCurrent: hasCurrent ? (cut ? 'cut' : 'unsealed') : undefined,
      unsealedIn,
    };
  }
}

/** The lines from the anchored one to the end link by hash: the file went on from the anchored checkpoint. */
function chainsFromAnchor(lines: TailLine[], anchored: (t: TailLine) => boolean): boolean {
  const start = lines.findIndex(anchored);
  if (start < 0) return false;
  for (let i = start + 1; i < lines.length; i++) {
    if (lines[i]!.line?.prev !== lineHash(lines[i - 1]!.raw)) return false;
  }
  return true;
}

function parsed(file: string, raw: string): TailLine {
  try {
    const p = AuditLineSchema.safeParse(JSON.parse(raw));
    return { file, raw, line: p.success ? p.data : undefined };
  } catch {
    return { file, raw, line: undefined };
  }
}

/**
 * The end of a file, from a window that grows (up to TAIL_WINDOW) until it holds the anchored line, or any checkpoint
 * when there is no anchor: a trail's usual end is read in one small read, and a long file is never parsed whole.
 */
function readTail(file: string, anchor: HsmAnchor | undefined): { lines: string[]; cut: boolean } {
  for (let window = 256 * 1024; ; window *= 4) {
    const t = readTailLines(file, Math.min(window, TAIL_WINDOW));
    const enough = t.whole || window >= TAIL_WINDOW || t.lines.some((l) => (anchor ? anchorHash(lineHash(l)) === anchor.hash : SEAL_TEXT.test(l)));
    if (enough) return t;
  }
}

const SEAL_TEXT = /"type":"(?:checkpoint|segment)"/;

/** The complete lines in the last `window` bytes of a file, whether it ends mid-line, and whether that is all of it. */
export function readTailLines(file: string, window = TAIL_WINDOW): { lines: string[]; cut: boolean; whole: boolean } {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const len = Math.min(size, window);
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, size - len);
    const text = buf.toString('utf8');
    const lines = text.split('\n');
    const cut = lines.pop() !== ''; // '' after the final newline, or the cut line
    if (len < size) lines.shift(); // starts mid-line
    return { lines, cut: size > 0 && cut, whole: len === size };
  } finally {
    closeSync(fd);
  }
}

/** The newest file a rotation (or an earlier segment) renamed from `file`, if any. */
export function newestRotated(file: string): string | undefined {
  const dir = dirname(file);
  const base = basename(file);
  const stem = base.endsWith('.jsonl') ? base.slice(0, -6) : base;
  const isRotated = (n: string) => (base.endsWith('.jsonl') ? n.startsWith(`${stem}.`) && n.endsWith('.jsonl') && n !== base : n.startsWith(`${base}.`));
  let names: string[];
  try {
    names = readdirSync(dir).filter(isRotated);
  } catch {
    return undefined;
  }
  // Names carry the ISO time of the rotation: they sort in time order, compared without the extension, so that a second
  // rotation in the same millisecond (`...000Z-1.jsonl`) sorts after the first (`...000Z.jsonl`; '-' < '.').
  const key = (n: string) => (base.endsWith('.jsonl') ? n.slice(0, -6) : n);
  names.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  const newest = names.at(-1);
  return newest ? join(dir, newest) : undefined;
}
