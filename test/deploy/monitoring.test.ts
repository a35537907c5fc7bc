// deploy/monitoring/ stays true to the proxy: `promtool check rules` accepts the alert rules and `promtool test rules`
// passes their unit tests; every series the rules and the Grafana dashboard query, and every label they match or group
// by, is one a real proxy (HTTPS, operations listener, audit trail, a real token) exports on /metrics; the scrape
// example's job and port are the ones the rules and the Kubernetes config use.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/built-cli.js';
import { httpGet, parseMetrics, type Sample } from '../helpers/ops-metrics.js';
import { createTestPki, type TestPki } from '../helpers/pki.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startProxyOnToken } from '../helpers/proxy-on-token.js';
import { createTestToken } from '../helpers/test-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';

const MON = join(ROOT, 'deploy/monitoring');
const RULES = join(MON, 'prometheus-rules.yaml');
const DASHBOARD = join(MON, 'grafana-dashboard.json');

const PROMTOOL = (() => {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  return r.status === 0;
})();
if (!PROMTOOL) {
  console.warn('SKIPPED: promtool is not installed (Debian package "prometheus"; scripts/setup.sh installs it): the alert rules were not checked.');
}

describe.skipIf(!PROMTOOL)('promtool (Debian package "prometheus", installed by scripts/setup.sh)', () => {
  it('check rules accepts the alert rules', () => {
    const out = execFileSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
    expect(out).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('the rules pass their unit tests (prometheus-rules.test.yaml)', () => {
    const r = spawnSync('promtool', ['test', 'rules', 'prometheus-rules.test.yaml'], { cwd: MON, encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/SUCCESS/);
  });

  it('every alert has a unit test', () => {
    const rules = (parse(readFileSync(RULES, 'utf8')) as RuleFile).groups.flatMap((g) => g.rules.map((r) => r.alert));
    const tests = parse(readFileSync(join(MON, 'prometheus-rules.test.yaml'), 'utf8')) as { tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[] };
    const firedInATest = new Set(tests.tests.flatMap((t) => t.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
    for (const alert of rules) expect(firedInATest, alert).toContain(alert);
  });
});

interface RuleFile {
  groups: { name: string; rules: { alert: string; expr: string; labels: { severity: string }; annotations: Record<string, string> }[] }[];
}

// --- PromQL, as far as these files use it -------------------------------------------------------------------------

const STRING = /"(?:[^"\\]|\\.)*"/g;
/** Metric names: identifiers outside strings, ranges and grouping clauses that are ours (xks_*) or Prometheus's `up`. */
function metricNames(expr: string): string[] {
  const bare = expr.replace(STRING, '""').replace(/\[[^\]]*\]/g, '').replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  return [...new Set([...bare.matchAll(/\b[a-zA-Z_:][a-zA-Z0-9_:]*\b/g)].map((m) => m[0]).filter((n) => n.startsWith('xks_') || n === 'up'))];
}
/** Label names in selectors' matchers, per metric name. */
function matchedLabels(expr: string): { metric: string; label: string }[] {
  const out: { metric: string; label: string }[] = [];
  for (const sel of expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{((?:[^}"]|"(?:[^"\\]|\\.)*")*)\}/g)) {
    for (const m of sel[2]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"/g)) out.push({ metric: sel[1]!, label: m[1]! });
  }
  return out;
}
/** Label names in by/without/on/ignoring clauses. */
function groupingLabels(expr: string): string[] {
  const bare = expr.replace(STRING, '""');
  return [...bare.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((l) => l.trim()).filter(Boolean));
}

it('reads PromQL the way the checks below assume', () => {
  const e = 'histogram_quantile(0.99, sum by (job, le) (rate(xks_request_duration_seconds_bucket{operation!="none",job=~"$job"}[5m]))) > 0.2 and on (job) up{job="x"} == 1';
  expect(metricNames(e)).toEqual(['xks_request_duration_seconds_bucket', 'up']);
  expect(matchedLabels(e)).toEqual([
    { metric: 'xks_request_duration_seconds_bucket', label: 'operation' },
    { metric: 'xks_request_duration_seconds_bucket', label: 'job' },
    { metric: 'up', label: 'job' },
  ]);
  expect(groupingLabels(e)).toEqual(['job', 'le', 'job']);
});

// --- What a real proxy exports -------------------------------------------------------------------------------------

/** Labels every series gets from the scrape (Prometheus adds them), on top of the proxy's own. */
const TARGET_LABELS = ['job', 'instance'];

let pki: TestPki;
let t: TestProxy;
let exported: Map<string, string>; // name -> type, from the # TYPE lines
let samples: Sample[];

beforeAll(async () => {
  const token = createTestToken('monitoring-kit');
  pki = createTestPki();
  t = await startProxyOnToken({
    token,
    config: {
      listeners: {
        http: { host: '127.0.0.1', port: 0 },
        https: { host: '127.0.0.1', port: 0, certFile: pki.server.cert, keyFile: pki.server.key },
        ops: { host: '127.0.0.1', port: 0 },
      },
      audit: { dir: join(token.dir, 'audit'), checkpointEvery: 2 },
      hsm: { keyCountIntervalMs: 200 },
      prefixes: [
        {
          path: 'example/uri/path/prefix',
          region: 'us-east-1',
          credentials: [{ accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS', secret: { file: 'secret1' }, created: '2026-01-01' }],
        },
      ],
    },
    keys: { foo: { encrypt: true, decrypt: true } },
  });
  const ops = `http://127.0.0.1:${t.proxy.opsListening!.http!.port}`;
  // Traffic, so that every family has samples: requests, HSM calls, encryptions, a health check, audit lines.
  const xks = xksClient(t.httpUrl);
  const enc = await xks.encrypt('foo', Buffer.from('monitoring'));
  expect(enc.status).toBe(200);
  expect((await xks.decrypt('foo', decryptFields(enc.json))).status).toBe(200);
  expect((await xks.health()).status).toBe(200);
  expect((await httpGet(`${ops}/health`)).status).toBe(200);
  let text = '';
  for (let i = 0; i < 50; i++) {
    text = (await httpGet(`${ops}/metrics`)).text;
    if (/^xks_keys\{/m.test(text)) break; // the background key count has run
    await new Promise((r) => setTimeout(r, 100));
  }
  exported = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
  samples = parseMetrics(text);
});

afterAll(async () => {
  await t?.stop();
  pki?.cleanup();
});

/** The family a series name belongs to (a histogram's _bucket, _sum and _count are its own). */
function family(name: string): string | undefined {
  if (exported.has(name)) return name;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  return m && exported.get(m[1]!) === 'histogram' ? m[1] : undefined;
}
function labelsOf(name: string): Set<string> {
  return new Set([...TARGET_LABELS, ...samples.filter((s) => s.name === name).flatMap((s) => Object.keys(s.labels))]);
}

function checkExpr(where: string, expr: string, allowUp: boolean) {
  const names = metricNames(expr);
  expect(names.length, `${where}: queries no series of the proxy: ${expr}`).toBeGreaterThan(0);
  for (const name of names) {
    if (name === 'up' && allowUp) continue;
    expect(family(name), `${where}: ${name} is not exported by the proxy`).toBeDefined();
    expect(
      samples.some((s) => s.name === name),
      `${where}: ${name} had no sample in the scrape (the test's traffic should produce one)`,
    ).toBe(true);
  }
  for (const { metric, label } of matchedLabels(expr)) {
    if (metric === 'up') continue;
    expect([...labelsOf(metric)], `${where}: ${metric} has no label ${label}`).toContain(label);
  }
  const available = new Set(names.flatMap((n) => [...labelsOf(n)]));
  for (const label of groupingLabels(expr)) expect([...available], `${where}: groups by ${label}, which none of ${names} has`).toContain(label);
}

describe('the alert rules', () => {
  const file = parse(readFileSync(RULES, 'utf8')) as RuleFile;

  it('query only series and labels the proxy exports', () => {
    for (const g of file.groups) for (const r of g.rules) checkExpr(`alert ${r.alert}`, r.expr, true);
  });

  it('each has a severity, a summary, a description and a runbook section in docs/monitoring.md', () => {
    const doc = readFileSync(join(ROOT, 'docs/monitoring.md'), 'utf8');
    const anchors = new Set([...doc.matchAll(/^#+ (.+)$/gm)].map((m) => m[1]!.toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')));
    for (const g of file.groups) {
      for (const r of g.rules) {
        expect(['warning', 'critical'], r.alert).toContain(r.labels.severity);
        expect(r.annotations.summary, r.alert).toBeTruthy();
        expect(r.annotations.description, r.alert).toBeTruthy();
        const anchor = /^docs\/monitoring\.md#(.+)$/.exec(r.annotations.runbook ?? '')?.[1];
        expect(anchor, `${r.alert} runbook`).toBeDefined();
        expect([...anchors], `${r.alert}: docs/monitoring.md has no section #${anchor}`).toContain(anchor);
      }
    }
  });
});

describe('the Grafana dashboard', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
  const panels: { title: string; type: string; targets?: { expr: string }[] }[] = dashboard.panels;

  it('queries only series and labels the proxy exports, in every panel and variable', () => {
    const queried = panels.filter((p) => p.type !== 'row');
    expect(queried.length).toBeGreaterThan(10);
    for (const p of queried) {
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const target of p.targets!) checkExpr(`panel "${p.title}"`, target.expr, false);
    }
    for (const v of dashboard.templating.list.filter((x: { type: string }) => x.type === 'query')) {
      const inner = /^label_values\((.*),\s*([a-zA-Z_]+)\)$/.exec(v.definition);
      expect(inner, v.name).not.toBeNull();
      checkExpr(`variable ${v.name}`, inner![1]!, false);
      expect([...labelsOf(metricNames(inner![1]!)[0]!)], `variable ${v.name}`).toContain(inner![2]);
    }
  });

  it('shows what an operator watches: requests by outcome, latency percentiles, HSM calls and sessions, keys by state, credential and certificate age', () => {
    const exprs = panels.flatMap((p) => (p.targets ?? []).map((x) => x.expr)).join('\n');
    expect(exprs).toMatch(/sum by \(operation, outcome\) \(rate\(xks_requests_total/);
    for (const q of ['0.5', '0.9', '0.99']) expect(exprs).toContain(`histogram_quantile(${q}, sum by (operation, le) (rate(xks_request_duration_seconds_bucket`);
    for (const name of ['xks_hsm_call_duration_seconds_bucket', 'xks_hsm_sessions', 'xks_keys', 'xks_sigv4_credential_age_seconds', 'xks_tls_certificate_expiry_days', 'xks_audit_sealing']) {
      expect(exprs, name).toContain(name);
    }
    // Every panel reads the data source variable, so the dashboard imports into any Grafana.
    for (const p of panels.filter((x) => x.type !== 'row')) expect(JSON.stringify(p), p.title).toContain('${datasource}');
  });
});

describe('the scrape example', () => {
  it('names the job the rules expect and scrapes the operations port of the Kubernetes config', () => {
    const scrape = parse(readFileSync(join(MON, 'prometheus-scrape.yaml'), 'utf8')) as { scrape_configs: { job_name: string }[] };
    const jobs = scrape.scrape_configs.map((s) => s.job_name);
    expect(jobs).toContain('xks-proxy');
    const rules = readFileSync(RULES, 'utf8');
    for (const j of rules.matchAll(/job="([^"]+)"/g)) expect(jobs).toContain(j[1]);
    for (const vendor of ['luna', 'cloudhsm', 'nshield']) {
      const opsPort = parse(readFileSync(join(ROOT, 'deploy/kubernetes/overlays', vendor, 'config.yaml'), 'utf8')).listeners.ops.port;
      expect(readFileSync(join(MON, 'prometheus-scrape.yaml'), 'utf8'), vendor).toContain(String(opsPort));
    }
  });
});
