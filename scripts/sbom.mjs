#!/usr/bin/env node
// Writes a CycloneDX 1.5 SBOM (JSON) of the production dependencies, read from package-lock.json alone, so it needs no
// node_modules and no network, and it lists what `npm ci --omit=dev` installs: the production dependencies, their
// dependencies and their required peers, each at the version the lockfile resolves, with its SHA-512 and licence.
// Not `npm sbom`: npm 11's `npm sbom --omit dev` leaves out a production dependency that a dev dependency also names as
// an optional peer (yaml, through vite), and a required peer of a production dependency (@opentelemetry/api, through
// prom-client), both of which `npm ls --omit=dev` lists and the image carries.
//   npm run sbom                      -> sbom.cdx.json
//   node scripts/sbom.mjs --out FILE  (SOURCE_DATE_EPOCH, when set, dates the document: reproducible builds)
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const outAt = args.indexOf('--out');
const out = outAt >= 0 ? args[outAt + 1] : join(root, 'sbom.cdx.json');
if (!out || args.some((a, i) => a.startsWith('--') && a !== '--out') || (outAt < 0 && args.length > 0)) {
  console.error('usage: node scripts/sbom.mjs [--out FILE]');
  process.exit(2);
}

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));
if (!lock.packages) {
  console.error('sbom: package-lock.json has no "packages" (lockfileVersion 2 or newer is needed)');
  process.exit(1);
}

/** Where Node finds `name` from the package installed at `from` (a lockfile key): its own node_modules, then up. */
function resolve(from, name) {
  let dir = from;
  for (;;) {
    const at = dir ? `${dir}/node_modules/${name}` : `node_modules/${name}`;
    if (lock.packages[at]) return at;
    if (!dir) return undefined;
    const i = dir.lastIndexOf('/node_modules/');
    dir = i < 0 ? '' : dir.slice(0, i);
  }
}

/** The names a package needs installed: dependencies, optional ones (when present), and peers not marked optional. */
function needs(entry) {
  const optionalPeers = new Set(Object.entries(entry.peerDependenciesMeta ?? {}).filter(([, m]) => m.optional).map(([n]) => n));
  return [
    ...Object.keys(entry.dependencies ?? {}).map((n) => ({ name: n, optional: false })),
    ...Object.keys(entry.optionalDependencies ?? {}).map((n) => ({ name: n, optional: true })),
    ...Object.keys(entry.peerDependencies ?? {}).filter((n) => !optionalPeers.has(n)).map((n) => ({ name: n, optional: false })),
  ];
}

const nameOf = (key) => key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
const refOf = (key) => `${nameOf(key)}@${lock.packages[key].version}`;

// Walk from the root's production dependencies (not its devDependencies).
const rootEntry = { dependencies: pkg.dependencies, optionalDependencies: pkg.optionalDependencies, peerDependencies: pkg.peerDependencies, peerDependenciesMeta: pkg.peerDependenciesMeta };
const graph = new Map(); // ref -> Set(ref)
const keys = new Map(); // ref -> lockfile key (the first place it is installed)
const rootRef = `${pkg.name}@${pkg.version}`;
const queue = [['', rootEntry, rootRef]];
graph.set(rootRef, new Set());
while (queue.length) {
  const [from, entry, ref] = queue.shift();
  for (const dep of needs(entry)) {
    const key = resolve(from, dep.name);
    if (!key) {
      if (dep.optional) continue; // an optional dependency for another platform
      console.error(`sbom: ${dep.name}, needed by ${ref}, is not in package-lock.json`);
      process.exit(1);
    }
    const target = lock.packages[key];
    if (target.link) {
      console.error(`sbom: ${key} is a link; workspaces are not supported`);
      process.exit(1);
    }
    const depRef = refOf(key);
    graph.get(ref).add(depRef);
    if (!graph.has(depRef)) {
      graph.set(depRef, new Set());
      keys.set(depRef, key);
      queue.push([key, target, depRef]);
    }
  }
}

function licenses(license) {
  if (!license) return undefined;
  // A single SPDX identifier is an id; anything with AND/OR/WITH or parentheses is an expression.
  return /^[A-Za-z0-9.+-]+$/.test(license) ? [{ license: { id: license } }] : [{ expression: license }];
}
function purl(name, version) {
  const [scope, bare] = name.startsWith('@') ? name.split('/') : [undefined, name];
  return `pkg:npm/${scope ? `${encodeURIComponent(scope)}/` : ''}${bare}@${version}`;
}
function hashes(integrity) {
  const out = [];
  for (const part of (integrity ?? '').split(/\s+/).filter(Boolean)) {
    const [alg, b64] = [part.slice(0, part.indexOf('-')), part.slice(part.indexOf('-') + 1)];
    const cdx = { sha512: 'SHA-512', sha384: 'SHA-384', sha256: 'SHA-256', sha1: 'SHA-1' }[alg];
    if (cdx) out.push({ alg: cdx, content: Buffer.from(b64, 'base64').toString('hex') });
  }
  return out;
}

const components = [...keys.entries()]
  .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  .map(([ref, key]) => {
    const e = lock.packages[key];
    const name = nameOf(key);
    return {
      type: 'library',
      'bom-ref': ref,
      name,
      version: e.version,
      scope: 'required',
      purl: purl(name, e.version),
      ...(hashes(e.integrity).length ? { hashes: hashes(e.integrity) } : {}),
      ...(licenses(e.license) ? { licenses: licenses(e.license) } : {}),
    };
  });

const epoch = process.env.SOURCE_DATE_EPOCH;
const bom = {
  bomFormat: 'CycloneDX',
  specVersion: '1.5',
  serialNumber: `urn:uuid:${randomUUID()}`,
  version: 1,
  metadata: {
    timestamp: new Date(epoch ? Number(epoch) * 1000 : Date.now()).toISOString(),
    tools: { components: [{ type: 'application', name: 'xks-hsm-proxy scripts/sbom.mjs' }] },
    component: {
      type: 'application',
      'bom-ref': rootRef,
      name: pkg.name,
      version: pkg.version,
      description: pkg.description,
      purl: purl(pkg.name, pkg.version),
      ...(licenses(pkg.license) ? { licenses: licenses(pkg.license) } : {}),
    },
  },
  components,
  dependencies: [...graph.entries()].map(([ref, deps]) => ({ ref, dependsOn: [...deps].sort() })),
};
writeFileSync(out, JSON.stringify(bom, null, 2) + '\n');
console.log(`sbom: wrote ${out}: CycloneDX 1.5, ${components.length} production components`);
