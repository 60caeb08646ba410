/**
 * Backoff for reconnecting to a broker: exponential, capped, optionally
 * jittered (so that workers cut off together do not come back in lockstep).
 * A pure function, tested alone; every backend uses it.
 */
export interface BackoffOptions {
  /** Delay before the first retry. */
  initialMs: number;
  /** No delay is longer than this. */
  maxMs: number;
  /** 0.2 spreads each delay uniformly over ±20 %; 0 (default) gives exact delays. */
  jitter?: number;
  random?: () => number;
}

/** The delay before retry number `attempt` (1 for the first retry), in whole milliseconds. */
export function backoffDelay(attempt: number, opts: BackoffOptions): number {
  const exponent = Math.max(0, Math.min(attempt - 1, 30));
  const base = Math.min(opts.maxMs, opts.initialMs * 2 ** exponent);
  const jitter = opts.jitter ?? 0;
  if (jitter <= 0) return base;
  const random = opts.random ?? Math.random;
  return Math.max(0, Math.round(base * (1 - jitter + 2 * jitter * random())));
}
