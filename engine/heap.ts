/**
 * The V8 heap of a worker, bounded so that its memory does not grow with the
 * length of its sweep.
 *
 * What a worker keeps is small (a heap snapshot holds ~6 MB live), but with
 * V8's defaults its resident size grew with the sweep: the young generation
 * doubles towards 2 × 16 MB semi-spaces as survivors accumulate over the run,
 * and promoted garbage piles up in the old generation until V8's limit (about
 * three times the live size) calls a major collection. A 100M-parameter sweep
 * peaked ~25 MB above a 10M one. The heap's sizes can only be given when node
 * starts (`--max-semi-space-size` makes every start ~30 ms slower: the modules
 * load through a small young generation), but two flags are read as the heap
 * runs: a growth factor of 1 keeps the young generation at the size it has
 * reached, and the old generation grows by 20% between major collections. V8
 * puts a growth factor below 2 back to 2 whenever it sets up a heap, that is
 * at every pool thread's start, so the pool's threads set them once their own
 * heap is up (engine/thread.ts), and the last one to start leaves them set for
 * the whole process (V8's flags are process-wide). The price: more frequent
 * collections, measurable only where chunks are tiny and many
 * (docs/bench/queue-path-log.md).
 */
import v8 from 'node:v8';

export function boundHeap(): void {
  v8.setFlagsFromString('--semi-space-growth-factor=1');
  v8.setFlagsFromString('--heap-growing-percent=20');
}
