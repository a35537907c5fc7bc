// The request budget: KMS gives up on a call after 250 ms, so the proxy never holds one longer than its budget. One
// sweeping timer for all requests in flight instead of a timer per request (the hot path stays free of timer churn);
// its 5 ms tick is the precision.

export interface Deadline {
  at: number;
  expire: () => void;
}

export class Deadlines {
  private readonly inFlight = new Set<Deadline>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly now: () => number,
    private readonly tickMs = 5,
  ) {}

  /** Call `expire` if the request is still in flight at `now() + budgetMs`; remove() when it finishes. */
  add(budgetMs: number, expire: () => void): Deadline {
    const d = { at: this.now() + budgetMs, expire };
    this.inFlight.add(d);
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), this.tickMs);
      this.timer.unref();
    }
    return d;
  }

  remove(d: Deadline): void {
    this.inFlight.delete(d);
  }

  private sweep(): void {
    if (this.inFlight.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const now = this.now();
    for (const d of this.inFlight) {
      if (d.at > now) continue;
      this.inFlight.delete(d);
      d.expire();
    }
  }
}
