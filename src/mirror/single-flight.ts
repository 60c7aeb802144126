/**
 * Coalesces concurrent work on one key: the first caller (leader) runs `work`, later callers
 * (followers) wait for the same promise. The key is free again as soon as the work settles.
 */
export class SingleFlight<T> {
  private readonly running = new Map<string, Promise<T>>();

  /** Runs `work` unless a call for `key` is already under way, whose result is shared. */
  do(key: string, work: () => Promise<T>): Promise<T> {
    const existing = this.running.get(key);
    if (existing !== undefined) return existing;
    const p = (async () => {
      try {
        return await work();
      } finally {
        this.running.delete(key);
      }
    })();
    this.running.set(key, p);
    return p;
  }

  get size(): number {
    return this.running.size;
  }
}
