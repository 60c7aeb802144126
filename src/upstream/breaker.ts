/**
 * A circuit breaker per upstream registry: after FAILURES consecutive failures (no answer, a 5xx,
 * a revalidation slower than revalidate_timeout) the registry is marked down for a backoff period
 * (BASE_MS, doubling up to MAX_MS while it stays down). While it is down requests fail at once
 * (cached content is then served stale without waiting); after the backoff exactly one request
 * goes through as a probe, and its success brings the registry back.
 */
export const BREAKER_FAILURES = 3;
const BASE_MS = 5_000;
const MAX_MS = 60_000;

export type Admission = { ok: true } | { ok: false; retryAt: number; failures: number };

export class Breaker {
  private failures = 0;
  private openUntil = 0;
  private backoffMs = BASE_MS;
  private probing = false;

  constructor(
    /** Told when the registry is marked down (with when it is retried) and when it is back. */
    private readonly onChange: (down: boolean, retryAt: number, failures: number) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether a request may go now; when not, when the registry is tried again. */
  admit(): Admission {
    if (this.failures < BREAKER_FAILURES) return { ok: true };
    const now = this.now();
    if (now < this.openUntil || this.probing) return { ok: false, retryAt: Math.max(this.openUntil, now), failures: this.failures };
    this.probing = true;
    return { ok: true };
  }

  success(): void {
    const wasDown = this.failures >= BREAKER_FAILURES;
    this.failures = 0;
    this.backoffMs = BASE_MS;
    this.probing = false;
    if (wasDown) this.onChange(false, 0, 0);
  }

  failure(): void {
    this.failures++;
    if (this.probing) {
      this.probing = false;
      this.backoffMs = Math.min(this.backoffMs * 2, MAX_MS);
    } else if (this.failures !== BREAKER_FAILURES) return;
    this.openUntil = this.now() + this.backoffMs;
    this.onChange(true, this.openUntil, this.failures);
  }

  get down(): boolean {
    return this.failures >= BREAKER_FAILURES;
  }
}
