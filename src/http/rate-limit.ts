// Per key store rate limits: a token bucket refilled continuously. Above the rate a request gets ThrottlingException
// (429) at once: KMS retries, and the HSM never sees more than the operator allowed.

/**
 * How far below a whole token still counts as one. The refill is a sum of floating-point fractions (0.1 per ms at
 * 100 a second), which lands a hair below 1 on the very millisecond the token is due (ten times 0.1 is
 * 0.9999999999999999): without this the token came one clock tick late, every time, and a flood on Date.now()'s whole
 * milliseconds got 91 a second through a limit of 100. The debt a take leaves (at most this much) is carried, not lost.
 */
const WHOLE = 1 - 1e-9;

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  /** Take one token; false when the bucket is empty. `now` in ms. */
  take(now: number): boolean {
    const elapsed = now - this.last;
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
      this.last = now;
    }
    if (this.tokens < WHOLE) return false;
    this.tokens -= 1;
    return true;
  }
}
