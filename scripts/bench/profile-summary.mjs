// Summarises a V8 .cpuprofile (node --cpu-prof): self time per function and per source file, idle excluded.
// Usage: node scripts/bench/profile-summary.mjs file.cpuprofile [topN]
import { readFileSync } from 'node:fs';

export function summarise(file, top = 25) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (let i = 0; i < prof.samples.length; i++) {
    const id = prof.samples[i];
    self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
  }
  const fn = new Map();
  const files = new Map();
  let busy = 0;
  for (const [id, us] of self) {
    const cf = byId.get(id).callFrame;
    if (cf.functionName === '(idle)') continue;
    busy += us;
    const url = cf.url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/');
    const name = `${cf.functionName || '(anonymous)'} ${url ? `${url}:${cf.lineNumber + 1}` : ''}`.trim();
    fn.set(name, (fn.get(name) ?? 0) + us);
    const group = url ? url.replace(/^(node_modules\/(@[^/]+\/)?[^/]+)\/.*$/, '$1') : cf.functionName;
    files.set(group, (files.get(group) ?? 0) + us);
  }
  const rows = (m) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: Math.round(us / 1000), pct: Math.round((1000 * us) / busy) / 10 }));
  return { busyMs: Math.round(busy / 1000), functions: rows(fn), files: rows(files) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const s = summarise(process.argv[2], Number(process.argv[3] ?? 25));
  console.log(`busy ${s.busyMs} ms`);
  console.log('\nself time by function:');
  for (const r of s.functions) console.log(`${String(r.pct).padStart(5)}%  ${String(r.ms).padStart(6)} ms  ${r.name}`);
  console.log('\nself time by file or package:');
  for (const r of s.files) console.log(`${String(r.pct).padStart(5)}%  ${String(r.ms).padStart(6)} ms  ${r.name}`);
}
