// `xks audit verify`: checks the hash chain and the HSM checkpoints across a trail's files and names the first line
// where an edit, a deletion, a reordering, an insertion or a truncation happened. Reading is pure; only the MAC check
// goes to the HSM (through `checkMac`).
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { AuditLineSchema, GENESIS, checkpointMessage, lineHash, type AuditLine } from './audit-record.js';

export type MacCheck = (keyLabel: string, message: Buffer, mac: Buffer) => Promise<boolean>;

export interface VerifyProblem {
  file: string;
  /** 1-based line number in that file. */
  line: number;
  reason: string;
}

export interface ChainSummary {
  files: string[];
  firstSeq: number;
  lastSeq: number;
  lines: number;
  checkpoints: number;
  /** The chain begins after a line that is not in the files given (older files archived elsewhere). */
  continuesEarlierFiles: boolean;
}

export interface VerifyResult {
  ok: boolean;
  chains: ChainSummary[];
  problem?: VerifyProblem | undefined;
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

export async function verifyTrail(
  files: string[],
  checkMac: MacCheck,
  opts: { allowUnsealedTail?: boolean; anchors?: Anchor[] } = {},
): Promise<VerifyResult> {
  const parsed = files.map(parseFile);
  // Link files into chains.
  const lastHash = new Map<string, ParsedFile>();
  for (const p of parsed) if (p.raw.length && !p.cut) lastHash.set(lineHash(p.raw[p.raw.length - 1]!), p);
  const next = new Map<ParsedFile, ParsedFile>();
  const heads: ParsedFile[] = [];
  for (const p of parsed) {
    const first = p.lines[0];
    const before = first ? lastHash.get(first.prev) : undefined;
    if (before && before !== p && !next.has(before)) next.set(before, p);
    else heads.push(p);
  }
  const chains: ChainSummary[] = [];
  for (const head of heads) {
    const chain: ParsedFile[] = [];
    for (let f: ParsedFile | undefined = head; f; f = next.get(f)) chain.push(f);
    const r = await verifyChain(chain, checkMac, opts.allowUnsealedTail === true);
    if (r.problem) return { ok: false, chains, problem: r.problem };
    chains.push(r.summary);
  }
  // A trail cut right after a checkpoint (or missing its newest file) still verifies on its own; the checkpoints the
  // process logged elsewhere must all be in it.
  if (opts.anchors?.length) {
    const present = new Set(parsed.flatMap((p) => p.raw.map((l) => lineHash(l))));
    for (const a of [...opts.anchors].sort((x, y) => x.seq - y.seq)) {
      if (present.has(a.hash)) continue;
      const base = basename(a.file);
      const same = parsed.filter((p) => basename(p.file).startsWith(base.replace(/\.jsonl$/, '')));
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
  return { ok: true, chains };
}

async function verifyChain(
  chain: ParsedFile[],
  checkMac: MacCheck,
  allowUnsealedTail: boolean,
): Promise<{ summary: ChainSummary; problem?: VerifyProblem }> {
  const summary: ChainSummary = {
    files: chain.map((c) => c.file),
    firstSeq: 0,
    lastSeq: 0,
    lines: 0,
    checkpoints: 0,
    continuesEarlierFiles: false,
  };
  let prevHash: string | undefined;
  let prevSeq: number | undefined;
  let lastCheckpoint: { file: string; line: number } | undefined;
  let last: { file: string; line: number } | undefined;
  for (const f of chain) {
    if (f.raw.length === 0) return { summary, problem: { file: f.file, line: 1, reason: 'the file is empty: truncated' } };
    for (let i = 0; i < f.raw.length; i++) {
      const at = { file: f.file, line: i + 1 };
      const line = f.lines[i];
      const isLast = i === f.raw.length - 1;
      if (isLast && f.cut) return { summary, problem: { ...at, reason: 'the line is cut short: the file was truncated here' } };
      if (!line) return { summary, problem: { ...at, reason: 'not a valid audit line: edited, forged or damaged' } };
      if (prevHash === undefined) {
        summary.firstSeq = line.seq;
        summary.continuesEarlierFiles = line.prev !== GENESIS;
        if (line.prev === GENESIS && line.seq !== 1) return { summary, problem: { ...at, reason: `the chain starts at seq ${line.seq}, not 1: lines before it were deleted` } };
      } else if (line.prev !== prevHash) {
        const reason =
          line.seq === prevSeq! + 1
            ? `does not follow the line before it: that line (seq ${prevSeq}) or this one was edited`
            : line.seq > prevSeq! + 1
              ? `lines seq ${prevSeq! + 1} to ${line.seq - 1} before this line were deleted`
              : `out of order: seq ${line.seq} comes after seq ${prevSeq} (lines were moved or inserted)`;
        return { summary, problem: { ...at, reason } };
      } else if (line.seq !== prevSeq! + 1) {
        return { summary, problem: { ...at, reason: `seq ${line.seq} follows seq ${prevSeq}: the line was edited` } };
      }
      if (line.type === 'checkpoint') {
        const ok = await checkMac(line.keyLabel, checkpointMessage(line), Buffer.from(line.mac, 'hex'));
        if (!ok) {
          const since = lastCheckpoint ? `since ${lastCheckpoint.file} line ${lastCheckpoint.line}` : 'since the start';
          return { summary, problem: { ...at, reason: `the checkpoint's HSM MAC does not verify: the lines ${since} were rewritten, or the checkpoint forged` } };
        }
        summary.checkpoints++;
        lastCheckpoint = at;
      }
      prevHash = lineHash(f.raw[i]!);
      prevSeq = line.seq;
      summary.lastSeq = line.seq;
      summary.lines++;
      last = at;
    }
  }
  const lastLine = chain[chain.length - 1]!.lines.at(-1);
  if (lastLine?.type !== 'checkpoint' && !allowUnsealedTail && last) {
    const from = lastCheckpoint ? `after ${lastCheckpoint.file} line ${lastCheckpoint.line}` : 'from the start';
    return {
      summary,
      problem: {
        ...last,
        reason: `the trail ends without a checkpoint: the lines ${from} are not sealed (truncated after this line, or still being written: check again after the next checkpoint, or pass --allow-unsealed-tail)`,
      },
    };
  }
  return { summary };
}
