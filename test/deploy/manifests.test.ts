// deploy/ stays deployable: every Kubernetes manifest parses, the ConfigMap's config passes the proxy's own schema,
// the Deployment's probes point at ports and paths the config serves, and the systemd units run commands that exist.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { ROOT } from '../helpers/built-cli.js';

const K8S = join(ROOT, 'deploy/kubernetes');
const docs = readdirSync(K8S).flatMap((f) => parseAllDocuments(readFileSync(join(K8S, f), 'utf8')).map((d) => ({ file: f, d })));

it('every manifest parses, and kustomization lists every other file', () => {
  for (const { file, d } of docs) expect(d.errors, file).toEqual([]);
  const kustomization = parse(readFileSync(join(K8S, 'kustomization.yaml'), 'utf8'));
  const others = readdirSync(K8S).filter((f) => f !== 'kustomization.yaml').sort();
  expect([...kustomization.resources].sort()).toEqual(others);
});

it('the ConfigMap holds a valid configuration whose listeners the Deployment probes', () => {
  const cm = docs.map((x) => x.d.toJSON()).find((j) => j?.kind === 'ConfigMap');
  const config = parseConfig(cm.data['config.yaml'], 'deploy/kubernetes/configmap.yaml');
  const deployment = docs.map((x) => x.d.toJSON()).find((j) => j?.kind === 'Deployment');
  const spec = deployment.spec;
  expect(spec.replicas).toBeGreaterThanOrEqual(2);
  const container = spec.template.spec.containers[0];
  const ports = Object.fromEntries(container.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
  expect(ports.xks).toBe(config.listeners.http!.port);
  expect(ports.ops).toBe(config.listeners.ops!.port);
  expect(container.readinessProbe.httpGet).toEqual({ path: '/health', port: 'ops' });
  expect(container.livenessProbe.httpGet).toEqual({ path: '/ping', port: 'xks' });
  expect(spec.template.spec.securityContext.runAsNonRoot).toBe(true);
  // Secrets come from the Secret, never the ConfigMap.
  const secret = docs.map((x) => x.d.toJSON()).find((j) => j?.kind === 'Secret');
  const envNames = [config.hsm.pin, ...config.prefixes.flatMap((p) => p.credentials.map((c) => c.secret))].map((r) => ('env' in r ? r.env : r.file));
  for (const name of envNames) expect(Object.keys(secret.stringData)).toContain(name);
});

it('the CronJobs and the systemd timer run the key maintenance commands', () => {
  const jobs = docs.map((x) => x.d.toJSON()).filter((j) => j?.kind === 'CronJob');
  const commands = jobs.map((j) => JSON.stringify(j.spec.jobTemplate.spec.template.spec.containers[0]));
  expect(commands.join(' ')).toMatch(/rotate-due/);
  expect(commands.join(' ')).toMatch(/purge-due/);
  expect(commands.join(' ')).toMatch(/import sweep/);
  const unit = readFileSync(join(ROOT, 'deploy/systemd/xks-keys-maintenance.service'), 'utf8');
  expect(unit).toMatch(/keys rotate-due/);
  expect(unit).toMatch(/keys purge-due/);
  expect(unit).toMatch(/import sweep/);
  expect(readFileSync(join(ROOT, 'deploy/systemd/xks-proxy.service'), 'utf8')).toMatch(/ExecReload=\/bin\/kill -HUP \$MAINPID/);
});

it('keeps the operations port off the network KMS reaches: not in the Service, and only Prometheus may reach it', () => {
  const all = docs.map((x) => x.d.toJSON());
  const deployment = all.find((j) => j?.kind === 'Deployment');
  const podLabels = deployment.spec.template.metadata.labels;
  const container = deployment.spec.template.spec.containers[0];
  const opsPort = container.ports.find((p: { name: string }) => p.name === 'ops').containerPort;
  const isOps = (p: string | number | undefined) => p === 'ops' || p === opsPort;
  // The Service behind KMS's load balancer exposes the XKS port only.
  const service = all.find((j) => j?.kind === 'Service');
  expect(service.spec.ports.map((p: { targetPort: string | number }) => p.targetPort)).toEqual(['xks']);
  // A NetworkPolicy isolates the pods for ingress (the kubelet's probes come from the node, which is always allowed).
  const policies = all.filter((j) => j?.kind === 'NetworkPolicy');
  const selects = (p: { spec: { podSelector: { matchLabels?: Record<string, string> } } }) =>
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
