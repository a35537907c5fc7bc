// The layer rule of docs/design.md ("Layers"): each folder of src/ imports only folders below it in RANK, so no two
// folders import each other and data flows one way. Reads every src/**/*.ts file's import, export-from and dynamic
// import specifiers (type-only ones too: a type is a dependency as much as a value) with TypeScript's own scanner,
// which skips comments and strings. Token-free.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = fileURLToPath(new URL('../src', import.meta.url));

/**
 * Lower ranks sit below higher ones; a unit may import only units of a lower rank (never its own rank's siblings).
 * A unit is a folder of src/ or a file at its top: errors.ts (the one error base class, importing nothing) is at the
 * bottom, proxy.ts (the wiring) at the top, under the cli that runs it.
 */
const RANK: Readonly<Record<string, number>> = {
  'errors.ts': 0,
  hsm: 1, // the token: nothing of the project
  obs: 1, // logger and metrics: a leaf that proxy.ts feeds
  keys: 2, // the key model, on hsm
  audit: 3, // the audit trail, on hsm and keys (the CLI lock is a claim)
  import: 4, // bring your own key, on keys and hsm
  xks: 4, // the XKS operations, on keys and hsm
  config: 4, // the config file, on keys (policies, encryption limits) and hsm (profiles)
  http: 5, // the listeners and handlers, on the services
  'proxy.ts': 6, // the wiring
  cli: 7, // the commands, on the wiring and the services
};

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return tsFiles(path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

/** The unit of a path relative to src/: its first folder, or the file's own name at the top. */
function unitOf(rel: string): string {
  return rel.split('/')[0]!;
}

interface Import {
  /** The importing file, relative to src/. */
  file: string;
  /** The specifier as written. */
  spec: string;
  from: string;
  to: string;
}

/** Every import of one file into another unit of src/, from the file's text (comments and strings are not imports). */
function crossImports(file: string, text: string): Import[] {
  return ts
    .preProcessFile(text, true, true)
    .importedFiles.map((f) => f.fileName)
    .filter((spec) => spec.startsWith('.'))
    .map((spec) => ({ file, spec, target: relative(SRC, resolve(SRC, dirname(file), spec)).split('\\').join('/') }))
    .filter(({ target }) => !target.startsWith('..'))
    // NodeNext specifiers name the emitted .js file: its source is the .ts.
    .map(({ file, spec, target }) => ({ file, spec, from: unitOf(file), to: unitOf(target.replace(/\.js$/, '.ts')) }))
    .filter((i) => i.from !== i.to);
}

/** The rule, over source files given as [path relative to src/, text]: what breaks it, one line each. */
function layerOffences(files: readonly (readonly [string, string])[]): string[] {
  const offences: string[] = [];
  const imports = files.flatMap(([file, text]) => crossImports(file, text));
  for (const unit of new Set(files.map(([file]) => unitOf(file)))) {
    if (RANK[unit] === undefined) offences.push(`${unit}: not in RANK (test/layers.test.ts): give it its place in docs/design.md's layers`);
  }
  for (const i of imports) {
    const from = RANK[i.from];
    const to = RANK[i.to];
    if (from === undefined || to === undefined || to < from) continue;
    offences.push(`${i.file}: imports '${i.spec}': ${i.from} (rank ${from}) may import only units below it, not ${i.to} (rank ${to})`);
  }
  const edges = new Set(imports.map((i) => `${i.from} -> ${i.to}`));
  for (const e of [...edges].sort()) {
    const [a, b] = e.split(' -> ') as [string, string];
    if (a < b && edges.has(`${b} -> ${a}`)) offences.push(`${a} and ${b} import each other`);
  }
  return offences;
}

const sources = tsFiles(SRC).map((f) => [relative(SRC, f).split('\\').join('/'), readFileSync(f, 'utf8')] as const);

describe('the layers of src/', () => {
  it('finds the source files and their imports', () => {
    expect(sources.length).toBeGreaterThan(50);
    const edges = new Set(sources.flatMap(([file, text]) => crossImports(file, text)).map((i) => `${i.from} -> ${i.to}`));
    expect(edges).toContain('keys -> hsm');
    expect(edges).toContain('cli -> proxy.ts');
  });

  it('every folder imports only folders below it, and no two import each other', () => {
    expect(layerOffences(sources)).toEqual([]);
  });

  it('names the file and the import that break the rule', () => {
    const offences = layerOffences([
      ['hsm/session-pool.ts', "import type { Logger } from '../obs/logger.js';"],
      ['obs/logger.ts', "export { HsmError } from '../hsm/errors.js';"],
      ['keys/catalogue.ts', "// import { x } from '../xks/operations.js';\nconst s = \"import '../xks/aad.js'\";"],
      ['xks/aad.ts', "const m = await import('../http/routes.js');"],
      ['tools/x.ts', "import { E } from '../errors.js';"],
    ]);
    expect(offences).toEqual([
      "tools: not in RANK (test/layers.test.ts): give it its place in docs/design.md's layers",
      "hsm/session-pool.ts: imports '../obs/logger.js': hsm (rank 1) may import only units below it, not obs (rank 1)",
      "obs/logger.ts: imports '../hsm/errors.js': obs (rank 1) may import only units below it, not hsm (rank 1)",
      "xks/aad.ts: imports '../http/routes.js': xks (rank 4) may import only units below it, not http (rank 5)",
      'hsm and obs import each other',
    ]);
  });
});
