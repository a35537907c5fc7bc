// The HSM seam stays where it is (docs/design.md, "Layers"): pkcs11js and its constants only under src/hsm, and the
// services depend on the KeyStore interface (src/hsm/key-store.ts), not on the HsmConnection class. Plain regular
// expressions over the source text: cheap, and enough for code written in one style.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = fileURLToPath(new URL('../../src', import.meta.url));

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return tsFiles(path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

/** Every .ts file under src/ outside src/hsm, as [path relative to src/, text]. */
const outside = tsFiles(SRC)
  .map((f) => [relative(SRC, f).split('\\').join('/'), readFileSync(f, 'utf8')] as const)
  .filter(([path]) => !path.startsWith('hsm/'));

/** The import statements of a file (multi-line ones included), without comments. */
function imports(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  return [...code.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s*['"][^'"]+['"]/gm), ...code.matchAll(/^\s*import\s*['"][^'"]+['"]/gm)].map((m) => m[0]);
}

describe('the HSM seam', () => {
  it('finds the source files', () => {
    expect(outside.length).toBeGreaterThan(20);
    expect(outside.some(([p]) => p.startsWith('keys/'))).toBe(true);
  });

  it('no file outside src/hsm imports pkcs11js, imports P from hsm/module, or uses a P.CK* constant', () => {
    const offences: string[] = [];
    for (const [path, text] of outside) {
      for (const stmt of imports(text)) {
        if (/['"]pkcs11js['"]/.test(stmt)) offences.push(`${path}: imports pkcs11js`);
        if (/hsm\/module(\.js)?['"]/.test(stmt) && /[{,]\s*P\s*[,}]/.test(stmt)) offences.push(`${path}: imports P from hsm/module`);
      }
      const code = text.replace(/^\s*\/\/.*$/gm, '');
      for (const m of code.matchAll(/\bP\.CK\w*/g)) offences.push(`${path}: uses ${m[0]}`);
    }
    expect(offences).toEqual([]);
  });

  it('only the wiring (src/proxy.ts, src/cli) imports the HsmConnection class as a value', () => {
    const offences: string[] = [];
    for (const [path, text] of outside) {
      if (path === 'proxy.ts' || path.startsWith('cli/')) continue;
      for (const stmt of imports(text)) {
        if (/^\s*(?:import|export)\s+type\b/.test(stmt)) continue;
        // `import { type HsmConnection }` is a type import too.
        if (/[{,]\s*HsmConnection\s*(?:[,}]|as\b)/.test(stmt)) offences.push(`${path}: ${stmt.trim().replace(/\s+/g, ' ')}`);
      }
    }
    expect(offences).toEqual([]);
  });

  it('keys, import, audit and xks reach the HSM only through the KeyStore interface', () => {
    const offences = outside
      .filter(([path]) => /^(keys|import|audit|xks)\//.test(path))
      .flatMap(([path, text]) => imports(text).filter((s) => /hsm\/hsm-connection(\.js)?['"]/.test(s)).map(() => `${path}: imports hsm-connection`));
    expect(offences).toEqual([]);
  });
});
