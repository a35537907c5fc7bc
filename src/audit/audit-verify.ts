// `xks audit verify`: checks the hash chain and the HSM checkpoints across a trail's files and names the first line
// where an edit, a deletion, a reordering, an insertion or a truncation happened. A chain must start at genesis or at a
// resume point the operator names (older files deleted by a retention policy), its seqs must not jump and its times
// must not go backwards, every checkpoint must be made with the configured audit key, and the newest checkpoint the
// HSM anchored for a trail must be in its files (rotated files alone: the trail is incomplete when it is beyond them). Lines a segment does not vouch for (a writer found them unverified
// when it opened the trail), and with allowUnsealedTail the lines after a chain's last checkpoint, are reported as not
// evidence; a chain with no checkpoint at all always fails. Reading is pure; only the MAC check goes to the HSM (through
// `checkMac`), and the HSM anchors are read by the caller.
import { readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { HsmAnchor } from './audit-anchor.js';
import { AuditLineSchema, GENESIS, anchorHash, currentFileName, lineHash, sealMessage, trailId, type AuditLine, type Segment } from './audit-record.js';

export type MacCheck = (keyLabel: string, message: Buffer, mac: Buffer) => Promise<boolean>;

export interface VerifyProblem {
  file: string;
  /** 1-based line number in that file. */
  line: number;
  reason: string;
}

/** Lines a segment does not vouch for: in the files (not evidence) or, when `lines` is 0, missing altogether. */
export interface NotVouched {
  file: string;
  /** 1-based line numbers in that file; 0 when none of the lines is in the files given. */
  fromLine: number;
  toLine: number;
  lines: number;
  /** The seqs the segment declares it does not vouch for. */
  fromSeq?: number | undefined;
  toSeq?: number | undefined;
  /** Why, as the segment says. */
  reason: string;
}

/** Where a chain may begin other than at genesis: the last line (seq and hash) of files deleted by a retention policy. */
export interface ResumePoint {
  seq: number;
  hash: string;
}

export interface ChainSummary {
  files: string[];
  firstSeq: number;
  lastSeq: number;
  /** Lines verified (lines not vouched for are not counted). */
  lines: number;
  checkpoints: number;
  segments: number;
  /** The chain begins after this resume point (the operator named it), not at genesis. */
  startsAfter?: ResumePoint | undefined;
  /** Its last line: give it as --from when the files verified here are deleted. */
  resumePoint: ResumePoint;
  notVouched: NotVouched[];
  /** Intents ("started") with no outcome after them: a command killed after it may have changed keys, or still running. */
  started: StartedCall[];
}

export interface StartedCall {
  file: string;
  line: number;
  seq: number;
  time: string;
  operation: string;
  keyId?: string | undefined;
  who?: string | undefined;
  requestId: string;
}

export interface VerifyResult {
  ok: boolean;
  chains: ChainSummary[];
  /** The current files whose trail's HSM anchor was found in the files given. */
  anchoredTrails?: string[];
  /** Trails whose files were given without their newest ones: the HSM anchor names a checkpoint beyond them. */
  incomplete?: IncompleteTrail[];
  problem?: VerifyProblem | undefined;
}

export interface IncompleteTrail {
  /** The trail's current file (where its newer lines are, or were). */
  trail: string;
  /** The newest checkpoint the HSM anchored for it. */
  anchoredSeq: number;
  /** The last seq in the files given. */
  lastSeq: number;
}

export interface VerifyOptions {
  /** The configured audit key (audit.keyLabel): a checkpoint made with any other key fails. */
  keyLabel: string;
  allowUnsealedTail?: boolean;
  /** Checkpoints the processes logged (their logs given with --anchors). */
  anchors?: Anchor[];
  /** The newest checkpoint the HSM anchored per trail, read before the files. */
  hsmAnchors?: HsmAnchor[];
  /** Where chains whose older files were deleted begin. */
  from?: ResumePoint[];
  /** The directory the trail was written in, when the files given are copies elsewhere (anchors name the path). */
  trailDir?: string | undefined;
}

interface ParsedFile {
  file: string;
  raw: string[];
  lines: (AuditLine | undefined)[];
  /** A final line without its newline: the file was cut. */
  cut: boolean;
}

function parseFile(file: string): ParsedFile {
  const text = readFileSync(file, 'utf8');
  const raw = text.split('\n');
  const cut = raw[raw.length - 1] !== '';
  if (!cut) raw.pop();
  const lines = raw.map((l) => {
    try {
      const p = AuditLineSchema.safeParse(JSON.parse(l));
      return p.success ? p.data : undefined;
    } catch {
      return undefined;
    }
  });
  return { file, raw, lines, cut };
}

/**
 * Verify the files of one or more trails. Files are put in chain order by their links (a file continues the one whose
 * last line's hash is its first line's `prev`), so a shell glob in any order works.
 */
/** A checkpoint as the writing process logged it ("audit checkpoint": file, seq, hash): a copy outside the trail. */
export interface Anchor {
  file: string;
  seq: number;
  hash: string;
}

/** The "audit checkpoint" lines of process logs (pino JSON; other lines are skipped). */
export function readAnchors(logFiles: string[]): Anchor[] {
  const anchors: Anchor[] = [];
  for (const f of logFiles) {
    for (const line of readFileSync(f, 'utf8').split('\n')) {
      if (!line.includes('"audit checkpoint"')) continue;
      try {
        const o = JSON.parse(line) as { msg?: unknown; file?: unknown; seq?: unknown; hash?: unknown };
        if (o.msg === 'audit checkpoint' && typeof o.file === 'string' && typeof o.seq === 'number' && typeof o.hash === 'string') {
          anchors.push({ file: o.file, seq: o.seq, hash: o.hash });
        }
      } catch {
        // not JSON: not ours
      }
    }
  }
  return anchors;
}

export async function verifyTrail(files: string[], checkMac: MacCheck, opts: VerifyOptions): Promise<VerifyResult> {
  // An empty file is a current file right after a rotation (or emptied: the HSM anchor check below tells).
  const given = files.map(parseFile);
  const parsed = given.filter((p) => p.raw.length > 0);
  const byBase = new Map(parsed.map((p) => [basename(p.file), p]));
  const where = new Map<string, { p: ParsedFile; index: number }>();
  for (const p of parsed) p.raw.forEach((l, index) => (index < p.raw.length - 1 || !p.cut) && where.set(lineHash(l), { p, index }));

  // Link files into chains. A file that begins with a segment continues the file holding the line it names (lines
  // after that line are not vouched for); the file it names as holding its unsealed lines is attached to it whole
  // when that is another file. Any other file continues the one whose last line's hash is its first line's prev.
  const next = new Map<ParsedFile, ParsedFile>();
  const vouchedUntil = new Map<ParsedFile, number>();
  const attached = new Map<ParsedFile, ParsedFile>();
  const linked = new Set<ParsedFile>();
  for (const p of parsed) {
    const seg = p.lines[0]?.type === 'segment' ? p.lines[0] : undefined;
    if (!seg) continue;
    const at = seg.prev !== GENESIS ? where.get(seg.prev) : undefined;
    const pred = at && at.p !== p && !next.has(at.p) ? at.p : undefined;
    if (pred) {
      next.set(pred, p);
      vouchedUntil.set(pred, at!.index);
      linked.add(p);
    }
    const unsealed = seg.unsealedFile ? byBase.get(seg.unsealedFile) : undefined;
    if (unsealed && unsealed !== p && unsealed !== pred) attached.set(p, unsealed);
  }
  const isAttached = new Set(attached.values());
  const lastHash = new Map<string, ParsedFile>();
  for (const p of parsed) if (p.raw.length && !p.cut) lastHash.set(lineHash(p.raw[p.raw.length - 1]!), p);
  for (const p of parsed) {
    const first = p.lines[0];
    if (!first || first.type === 'segment' || isAttached.has(p)) continue;
    const before = lastHash.get(first.prev);
    if (before && before !== p && !next.has(before) && !isAttached.has(before)) {
      next.set(before, p);
      linked.add(p);
    }
  }
  const heads = parsed.filter((p) => !linked.has(p) && !isAttached.has(p));

  const chains: ChainSummary[] = [];
  for (const head of heads) {
    const chain: ParsedFile[] = [];
    for (let f: ParsedFile | undefined = head; f && !chain.includes(f); f = next.get(f)) chain.push(f);
    const r = await verifyChain(chain, vouchedUntil, attached, checkMac, opts);
    if (r.problem) return { ok: false, chains, problem: r.problem };
    chains.push(r.summary);
  }

  // The newest checkpoint the HSM anchored for a trail whose files are given (its current file, or files rotated from
  // it) must be in the files: otherwise the trail was cut after a checkpoint, or its newest files are missing (the CLI
  // trail has no process log to tell). Without the current file, an anchor beyond the last line given is the trail
  // going on in files not given (retention verifies old files alone; or they were deleted): verified, but incomplete.
  const checked: string[] = [];
  const incomplete: IncompleteTrail[] = [];
  const currentOf = (p: ParsedFile) => resolve(opts.trailDir ?? dirname(p.file), currentFileName(basename(p.file)));
  for (const a of opts.hsmAnchors ?? []) {
    const ofTrail = given.filter((p) => trailId(currentOf(p)) === a.trail);
    if (ofTrail.length === 0) continue;
    const currentFile = ofTrail.find((p) => currentFileName(basename(p.file)) === basename(p.file));
    const trailFile = currentFile?.file ?? join(dirname(ofTrail[0]!.file), currentFileName(basename(ofTrail[0]!.file)));
    const found = parsed.some((p) => p.raw.some((l, i) => p.lines[i]?.seq === a.seq && anchorHash(lineHash(l)) === a.hash));
    if (found) {
      checked.push(trailFile);
      continue;
    }
    const lastSeq = Math.max(0, ...ofTrail.flatMap((p) => p.lines.map((l) => l?.seq ?? 0)));
    if (!currentFile && a.seq > lastSeq) {
      incomplete.push({ trail: trailFile, anchoredSeq: a.seq, lastSeq });
      continue;
    }
    const f = currentFile ?? ofTrail[ofTrail.length - 1]!;
    return {
      ok: false,
      chains,
      problem: {
        file: f.file,
        line: f.raw.length,
        reason: `the HSM anchor of this trail records the checkpoint seq ${a.seq} (hash ${a.hash.slice(0, 16)}...), which is not in the files given: the trail was cut after this line, or a newer file is missing`,
      },
    };
  }

  // A trail cut right after a checkpoint (or missing its newest file) still verifies on its own; the checkpoints the
  // process logged elsewhere must all be in it, except those before a resume point (deleted by retention).
  if (opts.anchors?.length) {
    const present = new Set(parsed.flatMap((p) => p.raw.map((l) => lineHash(l))));
    for (const a of [...opts.anchors].sort((x, y) => x.seq - y.seq)) {
      if (present.has(a.hash)) continue;
      const stem = basename(a.file).replace(/\.jsonl$/, '');
      const same = parsed.filter((p) => basename(p.file).startsWith(stem));
      const chain = chains.find((c) => c.files.some((f) => basename(f).startsWith(stem)));
      if (chain?.startsAfter && a.seq <= chain.startsAfter.seq) continue;
      const last = same[same.length - 1];
      return {
        ok: false,
        chains,
        problem: {
          file: last?.file ?? a.file,
          line: last ? last.raw.length : 0,
          reason: `the checkpoint seq ${a.seq} that the process logged (hash ${a.hash.slice(0, 16)}...) is not in the trail: it was cut after this line, or a file is missing`,
        },
      };
    }
  }
  return { ok: true, chains, anchoredTrails: checked, incomplete };
}

async function verifyChain(
  chain: ParsedFile[],
  vouchedUntil: Map<ParsedFile, number>,
  attached: Map<ParsedFile, ParsedFile>,
  checkMac: MacCheck,
  opts: VerifyOptions,
): Promise<{ summary: ChainSummary; problem?: VerifyProblem }> {
  const summary: ChainSummary = {
    files: chain.map((c) => c.file),
    firstSeq: 0,
    lastSeq: 0,
    lines: 0,
    checkpoints: 0,
    segments: 0,
    resumePoint: { seq: 0, hash: GENESIS },
    notVouched: [],
    started: [],
  };
  const started = new Map<string, StartedCall>();
  let prevHash: string | undefined;
  let prevSeq = 0;
  let prevTime = -Infinity;
  let lastSeal: { file: string; line: number; index: number; seq: number } | undefined;
  let last: { file: string; line: number } | undefined;
  let lastLine: AuditLine | undefined;
  /** Lines of the file before a segment that the segment does not vouch for, waiting for the segment's reason. */
  let pendingUnvouched: { file: string; fromLine: number; toLine: number } | undefined;
  for (const [fileIndex, f] of chain.entries()) {
    const limit = vouchedUntil.get(f) ?? f.raw.length - 1;
    for (let i = 0; i <= limit; i++) {
      const at = { file: f.file, line: i + 1 };
      const line = f.lines[i];
      if (i === f.raw.length - 1 && f.cut) return { summary, problem: { ...at, reason: 'the line is cut short: the file was truncated here' } };
      if (!line) return { summary, problem: { ...at, reason: 'not a valid audit line: edited, forged or damaged' } };
      const problem = (reason: string) => ({ summary, problem: { ...at, reason } });
      if (prevHash === undefined) {
        summary.firstSeq = line.seq;
        const start = chainStart(line, opts.from ?? []);
        if (typeof start === 'string') return problem(start);
        summary.startsAfter = start;
        if (start) prevSeq = start.seq;
      } else if (line.prev !== prevHash) {
        const reason =
          line.seq === prevSeq + 1
            ? `does not follow the line before it: that line (seq ${prevSeq}) or this one was edited`
            : line.seq > prevSeq + 1
              ? `lines seq ${prevSeq + 1} to ${line.seq - 1} before this line were deleted`
              : `out of order: seq ${line.seq} comes after seq ${prevSeq} (lines were moved or inserted)`;
        return problem(reason);
      } else if (line.type !== 'segment' && line.seq !== prevSeq + 1) {
        return problem(`seq ${line.seq} follows seq ${prevSeq}: the line was edited`);
      }
      const time = Date.parse(line.time);
      if (time < prevTime) return problem(`time goes backwards: ${line.time} after ${new Date(prevTime).toISOString()} (the line was edited or moved)`);
      if (line.type === 'segment') {
        const bad = segmentProblem(line, prevHash === undefined ? undefined : { seq: prevSeq, hash: prevHash });
        if (bad) return problem(bad);
      }
      if (line.type === 'checkpoint' || line.type === 'segment') {
        if (line.keyLabel !== opts.keyLabel) {
          return problem(`the ${line.type} was made with the HSM key "${line.keyLabel}", not the configured audit key "${opts.keyLabel}" (audit.keyLabel)`);
        }
        if (!(await checkMac(opts.keyLabel, sealMessage(line), Buffer.from(line.mac, 'hex')))) {
          const since = lastSeal ? `since ${lastSeal.file} line ${lastSeal.line}` : 'since the start';
          return problem(`the ${line.type}'s HSM MAC does not verify: the lines ${since} were rewritten, or the ${line.type} forged`);
        }
        if (line.type === 'checkpoint') summary.checkpoints++;
        else {
          summary.segments++;
          summary.notVouched.push(...notVouchedBy(line, pendingUnvouched, attached.get(f), f.file));
          pendingUnvouched = undefined;
        }
        lastSeal = { ...at, index: fileIndex, seq: line.seq };
      }
      if (line.type === 'event' && line.requestId !== undefined) {
        if (line.outcome === 'started') {
          started.set(line.requestId, { ...at, seq: line.seq, time: line.time, operation: line.operation, keyId: line.keyId, who: line.who, requestId: line.requestId });
        } else started.delete(line.requestId);
      }
      prevHash = lineHash(f.raw[i]!);
      prevSeq = line.seq;
      prevTime = Math.max(prevTime, time);
      summary.lastSeq = line.seq;
      summary.resumePoint = { seq: line.seq, hash: prevHash };
      summary.lines++;
      last = at;
      lastLine = line;
    }
    if (limit < f.raw.length - 1) pendingUnvouched = { file: f.file, fromLine: limit + 2, toLine: f.raw.length };
  }
  summary.started = [...started.values()];
  if (lastLine?.type !== 'checkpoint' && lastLine?.type !== 'segment' && last) {
    // Even a trail still being written has a checkpoint: lines no HSM MAC covers are anyone's (a fabricated file).
    if (!lastSeal) {
      const unsealed = 'no line of this chain is sealed by an HSM checkpoint: nothing in it is evidence (written by hand, or its checkpoints deleted)';
      return { summary, problem: { ...last, reason: opts.allowUnsealedTail ? unsealed : `the trail ends without a checkpoint: ${unsealed}` } };
    }
    if (!opts.allowUnsealedTail) {
      return {
        summary,
        problem: {
          ...last,
          reason: `the trail ends without a checkpoint: the lines after ${lastSeal.file} line ${lastSeal.line} are not sealed (truncated after this line, or still being written: check again after the next checkpoint, or pass --allow-unsealed-tail)`,
        },
      };
    }
    // Accepted as a trail still being written, but what no checkpoint covers yet is not evidence.
    for (let i = lastSeal.index; i < chain.length; i++) {
      const f = chain[i]!;
      const fromLine = i === lastSeal.index ? lastSeal.line + 1 : 1;
      if (fromLine > f.raw.length) continue;
      summary.notVouched.push({
        file: f.file,
        fromLine,
        toLine: f.raw.length,
        lines: f.raw.length - fromLine + 1,
        fromSeq: lastSeal.seq + 1,
        toSeq: summary.lastSeq,
        reason: 'after the last checkpoint, not sealed yet (a trail still being written, or lines added by hand: --allow-unsealed-tail)',
      });
      summary.lines -= f.raw.length - fromLine + 1;
    }
  }
  return { summary };
}

/** Where a chain's first line may begin: at genesis, or after a resume point the operator named. */
function chainStart(line: AuditLine, from: ResumePoint[]): ResumePoint | undefined | string {
  const afterSeq = line.type === 'segment' ? (line.after?.seq ?? 0) : line.seq - 1;
  if (line.prev === GENESIS) {
    if (line.type !== 'segment' && line.seq !== 1) return `the chain starts at seq ${line.seq}, not 1: lines before it were deleted`;
    return undefined;
  }
  const point = from.find((p) => p.hash === line.prev && p.seq === afterSeq);
  if (point) return point;
  return (
    `the chain starts at seq ${line.seq}, after a line that is not in the files given (seq ${afterSeq}, hash ${line.prev.slice(0, 16)}...): ` +
    `older lines were deleted or a file is missing; if a retention policy removed them, name the resume point they ended at with --from <seq>:<hash>`
  );
}

/** A segment must name the line it follows and the seqs between that line and itself. */
function segmentProblem(seg: Segment, before: ResumePoint | undefined): string | undefined {
  const afterSeq = seg.after?.seq ?? 0;
  if (before && (seg.after?.seq !== before.seq || seg.after.hash !== before.hash)) return 'the segment does not name the line before it as the line it continues';
  if (!seg.after && seg.prev !== GENESIS) return 'the segment names no line it continues, but does not start at genesis';
  if (seg.seq <= afterSeq) return `the segment's seq ${seg.seq} does not come after seq ${afterSeq}`;
  const gap = seg.seq - 1 > afterSeq;
  if (gap !== (seg.notVouched !== undefined) || (seg.notVouched && (seg.notVouched.fromSeq !== afterSeq + 1 || seg.notVouched.toSeq !== seg.seq - 1))) {
    return `the segment does not declare exactly the seqs ${afterSeq + 1} to ${seg.seq - 1} it skips`;
  }
  return undefined;
}

/** What a segment does not vouch for: the lines after the line it continues (where they are), or nothing in the files. */
function notVouchedBy(seg: Segment, before: { file: string; fromLine: number; toLine: number } | undefined, unsealed: ParsedFile | undefined, segFile: string): NotVouched[] {
  const seqs = seg.notVouched ? { fromSeq: seg.notVouched.fromSeq, toSeq: seg.notVouched.toSeq } : {};
  const out: NotVouched[] = [];
  if (before) out.push({ ...before, lines: before.toLine - before.fromLine + 1, ...seqs, reason: seg.reason });
  if (unsealed && unsealed.raw.length > 0) out.push({ file: unsealed.file, fromLine: 1, toLine: unsealed.raw.length, lines: unsealed.raw.length, ...seqs, reason: seg.reason });
  if (out.length === 0 && seg.notVouched) out.push({ file: seg.unsealedFile ?? segFile, fromLine: 0, toLine: 0, lines: 0, ...seqs, reason: seg.reason });
  return out;
}
