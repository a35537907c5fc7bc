// What the xks_keys gauge shows: the token's external keys by state, counted in the background at a fixed interval.
// Counting searches every object in the token (on SoftHSM 169 ms at 400 keys, on the event loop), so a scrape only
// reads the last count and never touches the HSM: scrapers cannot stall the proxy, and a hung HSM cannot hang /metrics.
// The keys and their states come from the wiring (proxy.ts): obs imports nothing from the rest of src.

/** A key as counted: only its state matters here. */
export interface CountedKey {
  readonly state: string;
}

export interface KeyCounts {
  /** Every state the key model has, 0 when no key is in it. */
  byState: ReadonlyMap<string, number>;
  /** When the token was read (Date.now()). */
  countedAt: number;
}

export class KeyCount {
  private last: KeyCounts | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  /** `list`: the external keys in the token (never the proxy's own); `states`: every state a key can be in. */
  constructor(
    private readonly list: () => Promise<readonly CountedKey[]>,
    private readonly states: readonly string[],
    private readonly intervalMs: number,
  ) {}

  /** The last count; undefined until one succeeded. */
  get latest(): KeyCounts | undefined {
    return this.last;
  }

  /** Count now, then every intervalMs after the previous count ended (a slow HSM never stacks counts up). */
  async start(): Promise<void> {
    await this.count();
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.count().finally(() => this.schedule()), this.intervalMs);
    this.timer.unref();
  }

  private async count(): Promise<void> {
    // A failed count (the HSM down or recovering) keeps the last one; its age shows how old it is.
    const keys = await this.list().catch(() => undefined);
    if (!keys) return;
    const byState = new Map<string, number>(this.states.map((s) => [s, 0]));
    for (const k of keys) byState.set(k.state, (byState.get(k.state) ?? 0) + 1);
    this.last = { byState, countedAt: Date.now() };
  }
}
