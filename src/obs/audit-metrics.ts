// The audit trail's health as Prometheus metrics, read from the trail when scraped: lines written, checkpoints made,
// failures by step, lines not yet sealed, and the age of the last checkpoint. Alert on
// `xks_audit_sealing == 0` (a step keeps failing) and on `xks_audit_unsealed_lines > 0 and
// xks_audit_last_checkpoint_age_seconds > 2 * checkpointSeconds` (lines wait for a seal that does not come).
import client from 'prom-client';

/** What these metrics read (audit/audit-trail.ts's AuditTrailStatus has it; obs imports nothing from the rest of src). */
export interface AuditSealStatus {
  /** The step that last failed and has not succeeded since: the trail is not being sealed. */
  failing: string | undefined;
  unsealedLines: number;
  lastSealAt: number | undefined;
  openedAt: number;
  lines: number;
  checkpoints: number;
  failures: Readonly<Record<string, number>>;
}

export function registerAuditMetrics(registry: client.Registry, status: () => AuditSealStatus | undefined): void {
  new client.Counter({
    name: 'xks_audit_lines_total',
    help: 'Lines written to the audit trail by this process since it started (events, checkpoints, segments)',
    registers: [registry],
    collect() {
      const s = status();
      if (!s) return;
      this.reset();
      this.inc(s.lines);
    },
  });
  new client.Counter({
    name: 'xks_audit_checkpoints_total',
    help: 'Audit checkpoints made (MAC made in the HSM, line written) by this process since it started',
    registers: [registry],
    collect() {
      const s = status();
      if (!s) return;
      this.reset();
      this.inc(s.checkpoints);
    },
  });
  new client.Counter({
    name: 'xks_audit_checkpoint_failures_total',
    help: 'Failures to seal the audit trail by step: checkpoint (the MAC in the HSM), write (the file), anchor (the HSM anchor)',
    labelNames: ['stage'],
    registers: [registry],
    collect() {
      const s = status();
      if (!s) return;
      this.reset();
      for (const [stage, n] of Object.entries(s.failures)) this.inc({ stage }, n);
    },
  });
  new client.Gauge({
    name: 'xks_audit_unsealed_lines',
    help: 'Audit lines written since the last checkpoint',
    registers: [registry],
    collect() {
      const s = status();
      if (s) this.set(s.unsealedLines);
    },
  });
  new client.Gauge({
    name: 'xks_audit_last_checkpoint_age_seconds',
    aggregator: 'max', // across workers (AggregatorRegistry)
    help: 'Seconds since the last audit checkpoint (since the trail was opened, when none was made or found since)',
    registers: [registry],
    collect() {
      const s = status();
      if (s) this.set((Date.now() - (s.lastSealAt ?? s.openedAt)) / 1000);
    },
  });
  new client.Gauge({
    name: 'xks_audit_sealing',
    aggregator: 'min', // across workers (AggregatorRegistry)
    help: '1 while the audit trail is being sealed, 0 while a step of sealing it fails (health is then not ACTIVE)',
    registers: [registry],
    collect() {
      const s = status();
      if (s) this.set(s.failing ? 0 : 1);
    },
  });
}
