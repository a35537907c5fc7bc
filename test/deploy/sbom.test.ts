// `npm run sbom` writes a CycloneDX SBOM of exactly the production dependencies: the packages npm itself resolves for
// `--omit=dev` from the lockfile, each with the lockfile's version, SHA-512 and licence, none of the dev tools; and
// the container image carries it at /app/sbom.cdx.json.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ROOT } from '../helpers/built-cli.js';

interface Component {
  type: string;
  'bom-ref': string;
  name: string;
  version: string;
  purl: string;
  hashes?: { alg: string; content: string }[];
  licenses?: ({ license: { id: string } } | { expression: string })[];
}

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'));
let dir: string;
let bom: { bomFormat: string; specVersion: string; serialNumber: string; metadata: any; components: Component[]; dependencies: { ref: string; dependsOn: string[] }[] };
let output: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xks-sbom-'));
  const file = join(dir, 'sbom.cdx.json');
  output = execFileSync('npm', ['run', '--silent', 'sbom', '--', '--out', file], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  bom = JSON.parse(readFileSync(file, 'utf8'));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** What npm resolves for a production install, from the lockfile alone: name@version of every package in the tree. */
function npmProductionTree(): Set<string> {
  const tree = JSON.parse(
    execFileSync('npm', ['ls', '--omit=dev', '--all', '--json', '--package-lock-only'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 }),
  );
  const seen = new Set<string>();
  const walk = (deps: Record<string, { version: string; dependencies?: Record<string, unknown> }> | undefined) => {
    for (const [name, d] of Object.entries(deps ?? {})) {
      seen.add(`${name}@${d.version}`);
      walk(d.dependencies as never);
    }
  };
  walk(tree.dependencies);
  return seen;
}

it('is CycloneDX 1.5 JSON describing this application', () => {
  expect(output).toMatch(/CycloneDX 1\.5, \d+ production components/);
  expect(bom.bomFormat).toBe('CycloneDX');
  expect(bom.specVersion).toBe('1.5');
  expect(bom.serialNumber).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);
  expect(bom.metadata.component).toMatchObject({ type: 'application', name: 'xks-hsm-proxy', version: pkg.version, licenses: [{ license: { id: pkg.license } }] });
  expect(Number.isNaN(Date.parse(bom.metadata.timestamp))).toBe(false);
});

it('lists exactly the packages npm installs for production, and no dev tool', () => {
  const listed = new Set(bom.components.map((c) => `${c.name}@${c.version}`));
  expect([...listed].sort()).toEqual([...npmProductionTree()].sort());
  for (const name of Object.keys(pkg.dependencies)) expect([...listed].some((r) => r.startsWith(`${name}@`)), name).toBe(true);
  for (const dev of Object.keys(pkg.devDependencies)) expect([...listed].some((r) => r.startsWith(`${dev}@`)), dev).toBe(false);
});

it('gives each component its purl, the lockfile SHA-512 and licence', () => {
  for (const c of bom.components) {
    const entry = lock.packages[`node_modules/${c.name}`] ?? Object.entries(lock.packages).find(([k, v]: [string, any]) => k.endsWith(`/node_modules/${c.name}`) && v.version === c.version)?.[1];
    expect(entry, c.name).toBeDefined();
    expect(c.purl).toBe(`pkg:npm/${c.name.replace(/^@/, '%40')}@${c.version}`);
    const sha512 = Buffer.from(entry.integrity.replace(/^sha512-/, ''), 'base64').toString('hex');
    expect(c.hashes, c.name).toEqual([{ alg: 'SHA-512', content: sha512 }]);
    if (entry.license) expect(JSON.stringify(c.licenses), c.name).toContain(entry.license);
  }
});

it('records the dependency graph: the application needs its direct dependencies, every reference resolves', () => {
  const refs = new Set([bom.metadata.component['bom-ref'], ...bom.components.map((c) => c['bom-ref'])]);
  const rootDeps = bom.dependencies.find((d) => d.ref === bom.metadata.component['bom-ref'])!;
  expect(rootDeps.dependsOn.map((r) => r.replace(/@[^@]+$/, '')).sort()).toEqual(Object.keys(pkg.dependencies).sort());
  for (const d of bom.dependencies) {
    expect(refs.has(d.ref), d.ref).toBe(true);
    for (const r of d.dependsOn) expect(refs.has(r), `${d.ref} -> ${r}`).toBe(true);
  }
});

it('the container image carries it at /app/sbom.cdx.json, made in the build stage from the lockfile', () => {
  const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const build = dockerfile.slice(0, dockerfile.lastIndexOf('\nFROM '));
  const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  expect(build).toMatch(/^COPY scripts\/sbom\.mjs \.\/scripts\/$/m);
  expect(build).toMatch(/^RUN node scripts\/sbom\.mjs --out \/src\/sbom\.cdx\.json$/m);
  // The SBOM is made after package-lock.json is in the build stage.
  expect(build.indexOf('COPY package.json package-lock.json')).toBeLessThan(build.indexOf('scripts/sbom.mjs'));
  expect(runtime).toMatch(/^WORKDIR \/app$/m);
  expect(runtime).toMatch(/^COPY --from=build \/src\/sbom\.cdx\.json \.\/sbom\.cdx\.json$/m);
  // .dockerignore lets the script into the build context.
  expect(readFileSync(join(ROOT, '.dockerignore'), 'utf8')).not.toMatch(/^scripts\/?$/m);
  expect(readFileSync(join(ROOT, 'README.md'), 'utf8')).toContain('/app/sbom.cdx.json');
});
