// deploy/ stays deployable: every Kubernetes manifest parses; each vendor overlay's patches apply to resources the base
// has (by kind and name), and the rendered overlay (kustomize's own build when `kubectl kustomize` or `kustomize` is
// installed, and always a strategic merge done here) holds a config that passes the proxy's schema, probes that point
// at ports and paths the config serves, health.fleetSize equal to the replicas and the HPA's minimum, and the vendor's
// client (its library under a mount, its config file, groups, writable paths, environment) in the Deployment and in
// every CronJob; the import sweep runs every 5 minutes everywhere (CronJob, systemd timer, docs/byok.md); the systemd
// drop-ins say what the overlays say; the TLS load balancer fronts the XKS port only.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { ROOT } from '../helpers/built-cli.js';

type Obj = Record<string, any>;
const K8S = join(ROOT, 'deploy/kubernetes');
const BASE = join(K8S, 'base');
const VENDORS = ['luna', 'cloudhsm', 'nshield'] as const;
type Vendor = (typeof VENDORS)[number];

const yamlFiles = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.yaml'));
function loadDocs(dir: string, files: string[]): Obj[] {
  return files.flatMap((f) =>
    parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map((d) => {
      expect(d.errors, `${dir}/${f}`).toEqual([]);
      return d.toJSON() as Obj;
    }),
  );
}

// --- A strategic merge patch, as far as these manifests need one -----------------------------------------------------

/** Lists Kubernetes merges by a key (the API's patchMergeKey); any other list is replaced. */
const MERGE_KEY: Record<string, string> = { containers: 'name', initContainers: 'name', volumes: 'name', env: 'name', volumeMounts: 'mountPath', ports: 'containerPort' };
function merge(base: any, patch: any, key?: string): any {
  if (Array.isArray(base) && Array.isArray(patch) && key && MERGE_KEY[key]) {
    const k = MERGE_KEY[key]!;
    const out = base.map((b) => {
      const p = patch.find((x) => x[k] === b[k]);
      return p ? merge(b, p) : b;
    });
    for (const p of patch) if (!base.some((b) => b[k] === p[k])) out.push(p);
    return out;
  }
  if (base && patch && typeof base === 'object' && typeof patch === 'object' && !Array.isArray(base) && !Array.isArray(patch)) {
    const out = { ...base };
    for (const [k, v] of Object.entries(patch)) out[k] = k in base ? merge(base[k], v, k) : v;
    return out;
  }
  return patch;
}

interface Kustomization {
  resources: string[];
  configMapGenerator?: { name: string; files: string[]; options?: { disableNameSuffixHash?: boolean; labels?: Obj } }[];
  patches?: { path: string; target?: { kind: string; name?: string } }[];
  components?: string[];
}

/** Renders an overlay the way kustomize does for what it uses (resources, configMapGenerator, patches). */
function renderHere(vendor: Vendor): Obj[] {
  const dir = join(K8S, 'overlays', vendor);
  const k = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
  expect(k.resources).toEqual(['../../base']);
  let resources = loadDocs(BASE, baseKustomization().resources);
  for (const g of k.configMapGenerator ?? []) {
    // No hash suffix: the Deployment and CronJobs refer to the name as it is, and an edit reaches running pods.
    expect(g.options?.disableNameSuffixHash, `${vendor} configMapGenerator`).toBe(true);
    const data = Object.fromEntries(g.files.map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
    resources.push({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: g.name, labels: g.options?.labels ?? {} }, data });
  }
  for (const p of k.patches ?? []) {
    const patch = parse(readFileSync(join(dir, p.path), 'utf8')) as Obj;
    const applies = (r: Obj) =>
      p.target ? r.kind === p.target.kind && (!p.target.name || r.metadata.name === p.target.name) : r.kind === patch.kind && r.metadata.name === patch.metadata.name;
    const hits = resources.filter(applies);
    expect(hits.length, `${vendor}/${p.path} applies to no resource of the base`).toBeGreaterThan(0);
    resources = resources.map((r) => (applies(r) ? merge(r, { ...patch, metadata: { ...patch.metadata, name: r.metadata.name } }) : r));
  }
  return resources;
}

function baseKustomization(): Kustomization {
  return parse(readFileSync(join(BASE, 'kustomization.yaml'), 'utf8')) as Kustomization;
}

/** kustomize's own rendering, when a kustomize is installed (not on Debian by default); undefined otherwise. */
const KUSTOMIZE: string[] | undefined = (() => {
  if (spawnSync('kubectl', ['kustomize', '--help'], { encoding: 'utf8' }).status === 0) return ['kubectl', 'kustomize'];
  if (spawnSync('kustomize', ['version'], { encoding: 'utf8' }).status === 0) return ['kustomize', 'build'];
  return undefined;
})();
if (!KUSTOMIZE) console.warn('kustomize is not installed (kubectl kustomize or kustomize): the overlays are checked with this test\'s own merge only.');
function renderWithKustomize(dir: string): Obj[] {
  const r = spawnSync(KUSTOMIZE![0]!, [...KUSTOMIZE!.slice(1), dir], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return parseAllDocuments(r.stdout).map((d) => d.toJSON() as Obj);
}

// --- What every rendering must hold ---------------------------------------------------------------------------------

const one = (rs: Obj[], kind: string, name?: string) => {
  const found = rs.filter((r) => r.kind === kind && (!name || r.metadata.name === name));
  expect(found, `${kind} ${name ?? ''}`).toHaveLength(1);
  return found[0]!;
};
/** The pod specs that run the proxy's code: the Deployment's and every CronJob's. */
const podSpecs = (rs: Obj[]) => [
  { what: 'Deployment', spec: one(rs, 'Deployment').spec.template.spec },
  ...rs.filter((r) => r.kind === 'CronJob').map((c) => ({ what: `CronJob ${c.metadata.name}`, spec: c.spec.jobTemplate.spec.template.spec })),
];
/** JSON with object keys sorted: the same object whatever order kustomize writes its keys in. */
const canonical = (v: unknown): string =>
  v && typeof v === 'object' && !Array.isArray(v)
    ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Obj)[k])}`).join(',')}}`
    : Array.isArray(v) ? `[${v.map(canonical).join(',')}]` : JSON.stringify(v);
/** What the vendor's client adds to a pod: every mount, volume and variable but the proxy's own. */
function clientOf(spec: Obj) {
  const c = spec.containers[0];
  return {
    mounts: (c.volumeMounts as Obj[]).filter((m) => !['config', 'data'].includes(m.name)).map((m) => `${m.mountPath}${m.readOnly ? ':ro' : ':rw'}`).sort(),
    volumes: (spec.volumes as Obj[]).filter((v) => !['config', 'data'].includes(v.name)).map(canonical).sort(),
    env: ((c.env ?? []) as Obj[]).filter((e) => !['XKS_CONFIG', 'UV_THREADPOOL_SIZE'].includes(e.name)).map((e) => `${e.name}=${e.value}`).sort(),
    supplementalGroups: spec.securityContext?.supplementalGroups ?? [],
  };
}

function checkRendered(vendor: Vendor, rs: Obj[]) {
  const cm = one(rs, 'ConfigMap', 'xks-proxy-config');
  const config = parseConfig(cm.data['config.yaml'], `deploy/kubernetes/overlays/${vendor}/config.yaml`);
  expect(config.hsm.profile).toBe(vendor);
  const deployment = one(rs, 'Deployment', 'xks-proxy');
  const spec = deployment.spec;
  // One fleet size: the replicas, the HPA's floor, and what GetHealthStatus tells KMS.
  expect(spec.replicas).toBeGreaterThanOrEqual(2);
  expect(one(rs, 'HorizontalPodAutoscaler').spec.minReplicas).toBe(spec.replicas);
  expect(config.health.fleetSize, 'health.fleetSize = replicas = HPA minReplicas').toBe(spec.replicas);

  const container = spec.template.spec.containers[0];
  const ports = Object.fromEntries(container.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
  expect(ports.xks).toBe(config.listeners.http!.port);
  expect(ports.ops).toBe(config.listeners.ops!.port);
  expect(container.readinessProbe.httpGet).toEqual({ path: '/health', port: 'ops' });
  expect(container.livenessProbe.httpGet).toEqual({ path: '/ping', port: 'xks' });
  // Secrets come from the Secret, never the ConfigMap.
  const secret = one(rs, 'Secret');
  const envNames = [config.hsm.pin, ...config.prefixes.flatMap((p) => p.credentials.map((c) => c.secret))].map((r) => ('env' in r ? r.env : r.file));
  for (const name of envNames) expect(Object.keys(secret.stringData)).toContain(name);

  const profile = parse(readFileSync(join(ROOT, 'hsm', `${vendor}.yaml`), 'utf8')) as { modulePaths: string[] };
  const deploymentClient = clientOf(spec.template.spec);
  for (const { what, spec: pod } of podSpecs(rs)) {
    expect(pod.securityContext.runAsUser, what).toBe(10001);
    expect(pod.securityContext.runAsNonRoot, what).toBe(true);
    const c = pod.containers[0];
    // The config is mounted as a directory (a subPath mount never sees the ConfigMap change) and XKS_CONFIG is in it.
    const configMount = c.volumeMounts.find((m: Obj) => m.name === 'config');
    expect(configMount.subPath, what).toBeUndefined();
    const xksConfig = c.env.find((e: Obj) => e.name === 'XKS_CONFIG').value;
    expect(xksConfig, what).toBe(`${configMount.mountPath}/config.yaml`);
    // The profile's library is inside a mount of the vendor's client.
    expect(
      c.volumeMounts.some((m: Obj) => profile.modulePaths[0]!.startsWith(`${m.mountPath}/`)),
      `${what}: ${profile.modulePaths[0]} is under no mount`,
    ).toBe(true);
    // Every pod that runs the proxy's code carries the same client as the Deployment.
    expect(clientOf(pod), what).toEqual(deploymentClient);
    // Every volume is mounted, every mount has a volume.
    const volumes = new Set(pod.volumes.map((v: Obj) => v.name));
    for (const m of c.volumeMounts) expect(volumes.has(m.name), `${what}: mount ${m.mountPath}`).toBe(true);
  }

  const mounts = deploymentClient.mounts;
  const env = deploymentClient.env;
  switch (vendor) {
    case 'luna':
      // The client directory and Chrystoki.conf, read-only; the client finds its config through the variable.
      expect(mounts).toEqual(['/etc/Chrystoki.conf:ro', '/usr/safenet/lunaclient:ro']);
      expect(env).toEqual(['ChrystokiConfigurationPath=/etc']);
      break;
    case 'cloudhsm':
      // Library and configuration read-only; the library's log directory writable.
      expect(mounts).toEqual(['/opt/cloudhsm/etc:ro', '/opt/cloudhsm/lib:ro', '/opt/cloudhsm/run:rw']);
      expect(spec.template.spec.volumes.find((v: Obj) => v.name === 'cloudhsm-run').emptyDir).toBeDefined();
      break;
    case 'nshield':
      // The software read-only, the Security World's key data writable, the nfast group, and the two variables.
      expect(mounts).toEqual(['/opt/nfast/kmdata/local:rw', '/opt/nfast:ro']);
      expect(env).toEqual(['CKNFAST_ASSUME_SINGLE_PROCESS=0', 'CKNFAST_LOADSHARING=1']);
      expect(deploymentClient.supplementalGroups).toHaveLength(1);
      break;
  }
}

// --- The tests ------------------------------------------------------------------------------------------------------

it('every base manifest parses, the base kustomization lists every one, and the base carries no vendor', () => {
  const files = yamlFiles(BASE).filter((f) => f !== 'kustomization.yaml').sort();
  expect([...baseKustomization().resources].sort()).toEqual(files);
  const docs = loadDocs(BASE, files);
  expect(JSON.stringify(docs)).not.toMatch(/lunaclient|cloudhsm|nfast/);
  // The overlays bring the config: the base has none of its own.
  expect(docs.filter((d) => d.kind === 'ConfigMap')).toEqual([]);
});

describe.each(VENDORS)('overlay %s', (vendor) => {
  const dir = join(K8S, 'overlays', vendor);

  it('patches only resources the base has, and renders a deployable, consistent set (this test\'s merge)', () => {
    for (const f of yamlFiles(dir)) loadDocs(dir, [f]);
    checkRendered(vendor, renderHere(vendor));
  });

  it.skipIf(!KUSTOMIZE)('kustomize builds it, with the same result as this test\'s merge (skipped without kubectl kustomize or kustomize)', () => {
    const built = renderWithKustomize(dir);
    checkRendered(vendor, built);
    const names = (rs: Obj[]) => rs.map((r) => `${r.kind}/${r.metadata.name}`).sort();
    const here = renderHere(vendor);
    expect(names(built)).toEqual(names(here));
    for (const { what, spec } of podSpecs(built)) {
      const mine = podSpecs(here).find((p) => p.what === what)!;
      expect(clientOf(spec), what).toEqual(clientOf(mine.spec));
    }
  });

  it('has a systemd drop-in that says what the overlay says', () => {
    const dropIn = readFileSync(join(ROOT, 'deploy/systemd/vendors', `${vendor}.conf`), 'utf8');
    expect(dropIn).toMatch(/^\[Service\]$/m);
    const client = clientOf(one(renderHere(vendor), 'Deployment').spec.template.spec);
    const environment = [...dropIn.matchAll(/^Environment=(.*)$/gm)].flatMap((m) => m[1]!.split(/\s+/)).sort();
    expect(environment).toEqual(client.env);
    const writable = [...dropIn.matchAll(/^ReadWritePaths=(.*)$/gm)].flatMap((m) => m[1]!.split(/\s+/)).sort();
    expect(writable).toEqual(client.mounts.filter((m) => m.endsWith(':rw')).map((m) => m.slice(0, -3)));
    if (vendor === 'nshield') expect(dropIn).toMatch(/^SupplementaryGroups=nfast$/m);
  });
});

it('the import sweep runs every 5 minutes everywhere, as docs/byok.md says, and once', () => {
  const docs = loadDocs(BASE, baseKustomization().resources);
  const jobs = docs.filter((d) => d.kind === 'CronJob');
  const runs = (j: Obj) => JSON.stringify(j.spec.jobTemplate.spec.template.spec.containers[0].args ?? j.spec.jobTemplate.spec.template.spec.containers[0].command);
  const sweeps = jobs.filter((j) => /import.*sweep/.test(runs(j)));
  expect(sweeps).toHaveLength(1);
  expect(sweeps[0]!.spec.schedule).toBe('*/5 * * * *');
  expect(jobs.filter((j) => /rotate-due/.test(runs(j))).map((j) => j.spec.schedule)).toEqual(['17 3 * * *']);
  expect(jobs.filter((j) => /purge-due/.test(runs(j)))).toHaveLength(1);
  // docs/byok.md's cron line.
  expect(readFileSync(join(ROOT, 'docs/byok.md'), 'utf8')).toMatch(/^\s*\*\/5 \* \* \* \*\s+xks import sweep$/m);
  // systemd: the sweep in its own service, on a 5-minute timer; the daily maintenance does not sweep.
  const systemd = join(ROOT, 'deploy/systemd');
  expect(readFileSync(join(systemd, 'xks-import-sweep.service'), 'utf8')).toMatch(/^ExecStart=.* import sweep$/m);
  expect(readFileSync(join(systemd, 'xks-import-sweep.timer'), 'utf8')).toMatch(/^OnCalendar=\*:0\/5$/m);
  const maintenance = readFileSync(join(systemd, 'xks-keys-maintenance.service'), 'utf8');
  expect(maintenance).toMatch(/^ExecStart=.* keys rotate-due$/m);
  expect(maintenance).toMatch(/^ExecStart=.* keys purge-due$/m);
  expect(maintenance).not.toMatch(/import sweep/);
  expect(readFileSync(join(systemd, 'xks-proxy.service'), 'utf8')).toMatch(/ExecReload=\/bin\/kill -HUP \$MAINPID/);
});

it('keeps the operations port off the network KMS reaches: not in the Service, and only Prometheus may reach it', () => {
  const all = loadDocs(BASE, baseKustomization().resources);
  const deployment = one(all, 'Deployment');
  const podLabels = deployment.spec.template.metadata.labels;
  const container = deployment.spec.template.spec.containers[0];
  const opsPort = container.ports.find((p: { name: string }) => p.name === 'ops').containerPort;
  const isOps = (p: string | number | undefined) => p === 'ops' || p === opsPort;
  // The Service behind KMS's load balancer exposes the XKS port only.
  const service = one(all, 'Service');
  expect(service.spec.ports.map((p: { targetPort: string | number }) => p.targetPort)).toEqual(['xks']);
  // A NetworkPolicy isolates the pods for ingress (the kubelet's probes come from the node, which is always allowed).
  const policies = all.filter((j) => j?.kind === 'NetworkPolicy');
  const selects = (p: Obj) =>
    Object.entries(p.spec.podSelector.matchLabels ?? {}).every(([k, v]) => podLabels[k] === v);
  const mine = policies.filter(selects);
  expect(mine.length, 'a NetworkPolicy selecting the proxy pods').toBeGreaterThan(0);
  const rules = mine.flatMap((p) => {
    expect(p.spec.policyTypes).toContain('Ingress');
    return p.spec.ingress ?? [];
  });
  // The XKS port is open (to the load balancer).
  expect(rules.some((r: { ports?: { port: string | number }[] }) => r.ports?.some((p) => p.port === 'xks'))).toBe(true);
  // Every rule that admits the ops port (a rule without ports admits every port) names its peers by label: never
  // everyone, never an address block.
  for (const r of rules as { ports?: { port: string | number }[]; from?: Record<string, any>[] }[]) {
    if (r.ports && !r.ports.some((p) => isOps(p.port))) continue;
    expect(r.from?.length, `a rule admits ${JSON.stringify(r.ports ?? 'every port')} from anywhere`).toBeGreaterThan(0);
    for (const peer of r.from!) {
      expect(peer.ipBlock, 'an address block may reach the ops port').toBeUndefined();
      expect(Object.keys(peer.podSelector?.matchLabels ?? {}).length, `peer ${JSON.stringify(peer)} is not a labelled pod`).toBeGreaterThan(0);
    }
  }
});

describe('the TLS load balancer component', () => {
  const dir = join(K8S, 'components/nlb-tls');

  it('ends TLS 1.2+ on 443 in front of the XKS port of the proxy pods, never the operations port', () => {
    const k = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8'));
    expect(k.kind).toBe('Component');
    const [svc] = loadDocs(dir, k.resources);
    const podLabels = one(loadDocs(BASE, baseKustomization().resources), 'Deployment').spec.template.metadata.labels;
    expect(svc!.kind).toBe('Service');
    expect(svc!.spec.type).toBe('LoadBalancer');
    for (const [key, value] of Object.entries(svc!.spec.selector)) expect(podLabels[key]).toBe(value);
    expect(svc!.spec.ports).toEqual([{ name: 'https', port: 443, targetPort: 'xks', protocol: 'TCP' }]);
    const a = svc!.metadata.annotations;
    expect(a['service.beta.kubernetes.io/aws-load-balancer-ssl-ports']).toBe('443');
    expect(a['service.beta.kubernetes.io/aws-load-balancer-ssl-cert']).toMatch(/^arn:aws:acm:/);
    expect(a['service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy']).toMatch(/TLS13-1-2/);
  });

  it.skipIf(!KUSTOMIZE)('an overlay with the component builds (skipped without kubectl kustomize or kustomize)', async () => {
    const { mkdtempSync, cpSync, appendFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const tmp = mkdtempSync(join(tmpdir(), 'xks-kustomize-'));
    try {
      cpSync(join(ROOT, 'deploy'), join(tmp, 'deploy'), { recursive: true });
      const overlay = join(tmp, 'deploy/kubernetes/overlays/luna');
      appendFileSync(join(overlay, 'kustomization.yaml'), 'components:\n  - ../../components/nlb-tls\n');
      const built = renderWithKustomize(overlay);
      expect(built.filter((r) => r.kind === 'Service').map((r) => r.metadata.name).sort()).toEqual(['xks-proxy', 'xks-proxy-nlb']);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

it('the demo container is published on loopback only: its credentials are public', () => {
  // Every `docker run` of the demo (no XKS_CONFIG: the container makes the demo token and credentials) in the README
  // and the Dockerfile publishes its ports on 127.0.0.1, never on every interface of the host.
  const texts = [readFileSync(join(ROOT, 'README.md'), 'utf8'), readFileSync(join(ROOT, 'Dockerfile'), 'utf8')];
  const runs = texts.flatMap((t) => t.replace(/\\\n/g, ' ').split('\n')).filter((l) => /\b(docker|podman) run\b/.test(l));
  const demos = runs.filter((l) => !l.includes('XKS_CONFIG'));
  expect(demos.length).toBeGreaterThanOrEqual(2);
  for (const run of demos) {
    const published = [...run.matchAll(/(?:-p|--publish)[ =](\S+)/g)].map((m) => m[1]);
    expect(published.length, run).toBeGreaterThan(0);
    for (const p of published) expect(p, run).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
  }
});

it('nothing under deploy/kubernetes is left out: every directory is the base, an overlay or a component', () => {
  expect(readdirSync(K8S).sort()).toEqual(['base', 'components', 'overlays']);
  expect(readdirSync(join(K8S, 'overlays')).sort()).toEqual([...VENDORS].sort());
  for (const v of VENDORS) expect(existsSync(join(K8S, 'overlays', v, 'kustomization.yaml'))).toBe(true);
});
