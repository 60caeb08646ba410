/**
 * V8's optimising compiler, held back for a worker's first half second.
 *
 * A worker of a short sweep spends more CPU compiling than working: `node --trace-opt` on one
 * of two workers of a 1M-parameter Redis sweep in chunks of 100 (≈ 0.3 s, spawn → exit) shows
 * about 70 TurboFan compiles, the largest the kernel runner's sweep loop (51 ms) and the pool's
 * inline path (44 ms) — compiles of code that has done most of its work by the time they land,
 * taking the second core from the other worker and from the broker. Interpreted and baseline
 * (Sparkplug) code runs those first chunks about as fast, so a worker starts with TurboFan off
 * and turns it back on after half a second, when a longer sweep starts to pay for it; the
 * WebAssembly kernel is compiled by its own tiers and is not touched.
 *
 * Measured with `node dist/bench/ab.js` (interleaved, medians; docs/bench/queue-path-log.md,
 * entry 29), spawn → all exited and CPU per worker: Redis 1M params / chunk 100, 316 → 260 ms
 * and 217 → 158 ms on one day, 478 → 444 ms and 309 → 261 ms on a slower one; Redis 10M / 1000
 * 342 → 285 ms; RabbitMQ 1M / 1000 424 → 330 ms (593 → 511 ms on the slower day); Redis 10M /
 * 100 (1.5 s) unchanged. Left off for good, TurboFan would cost a long sweep 5–9%; turned back
 * on after 1 s rather than 0.5 s, +8% on that 1.5 s sweep.
 *
 * Not with KERNEL_IMPL=js: the JS kernel computes small chunks on the worker's main thread, and
 * unoptimised for half a second a short sweep took 25–40% longer (Redis 1M / 100 and 10M / 1000).
 *
 * The compiler is also turned back on when the pool starts its threads with itself, at the
 * worker's start (costly chunks): node checks its built-in modules' code cache against a hash
 * of V8's flags, and a thread started while the flags differ from node's start compiles its
 * bootstrap from source (first chunk 122 → 143 ms without it, measured when placeholder chunks
 * of 10,000 still started the threads with the pool). A pool that starts its threads at its
 * first range, mid-sweep, leaves the compiler held back: turning it on then, for good or while
 * the thread starts, cost more than the bootstrap (docs/bench/queue-path-log.md, entry 29).
 */
import v8 from 'node:v8';

let deferred = false;
let timer: NodeJS.Timeout | null = null;

/** Turns TurboFan off for `ms`, then back on; the timer does not keep the process alive. */
export function deferOptimisingCompiler(ms = 500): void {
  if (deferred) return;
  deferred = true;
  v8.setFlagsFromString('--no-turbofan');
  timer = setTimeout(restoreOptimisingCompiler, ms);
  timer.unref();
}

/** Turns TurboFan back on now, if it was deferred (idempotent). */
export function restoreOptimisingCompiler(): void {
  if (!deferred) return;
  deferred = false;
  if (timer !== null) clearTimeout(timer);
  timer = null;
  v8.setFlagsFromString('--turbofan');
}

/** Whether TurboFan is held back now (for tests and the pool). */
export function optimisingCompilerDeferred(): boolean {
  return deferred;
}
