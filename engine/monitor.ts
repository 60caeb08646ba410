/** `ttg monitor`: live progress of a sweep from the backend's queue statistics. */
import type { Config } from './config.js';
import type { QueueBackend, QueueStats } from '../backends/types.js';

export function progressBar(done: number, total: number, width = 40): string {
  const frac = total > 0 ? Math.min(1, done / total) : 0;
  const filled = Math.round(frac * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(1).padStart(5)}%`;
}

export function formatStats(s: QueueStats, rate: number | null): string {
  // The backend counts chunks of the sweep, never entries: dead letters of malformed tasks or
  // duplicates can never push this past the total.
  const settled = s.settledChunks;
  const lines = [
    `${progressBar(settled, s.totalChunks)}  ${settled}/${s.totalChunks} chunks`,
    `  ready ${s.ready}  in flight ${s.inFlight < 0 ? '?' : s.inFlight}  retrying ${s.retrying < 0 ? '?' : s.retrying}` +
      `  dead-lettered ${s.deadLettered}  results ${s.results}`,
  ];
  if (rate !== null) {
    const left = s.totalChunks - settled;
    const eta = rate > 0 ? `${Math.ceil(left / rate)}s` : '?';
    lines.push(`  rate ${rate.toFixed(1)} chunks/s  eta ${left > 0 ? eta : '-'}`);
  }
  const consumers = Object.entries(s.consumers);
  if (consumers.length > 0) lines.push(`  in hands: ${consumers.map(([c, n]) => `${c}=${n}`).join('  ')}`);
  return lines.join('\n');
}

export async function runMonitor(opts: {
  backend: QueueBackend;
  config: Config;
  intervalSeconds: number;
  once: boolean;
  shouldStop: () => boolean;
  /** Resolves when the caller asks to stop, so the wait between polls ends at once (no timer left behind). */
  stopped?: Promise<void>;
  write?: (text: string) => void;
}): Promise<void> {
  const write = opts.write ?? ((t: string) => process.stdout.write(t + '\n'));
  let last: { at: number; settled: number } | null = null;
  for (;;) {
    const s = await opts.backend.stats();
    if (s.settings === null) {
      write(`waiting for a sweep on ${opts.config.queueBackend} under QUEUE_PREFIX=${opts.config.queuePrefix}...`);
    } else {
      const now = Date.now();
      const settled = s.settledChunks;
      const rate = last ? ((settled - last.settled) * 1000) / Math.max(1, now - last.at) : null;
      last = { at: now, settled };
      write(`${new Date(now).toISOString()}  ${s.settings.kernel} ${s.settings.totalParams} params / ${s.settings.chunkSize}\n${formatStats(s, rate)}`);
      // Settled only when the backend itself says so: every chunk of the sweep has a result or a dead letter.
      if (settled >= s.totalChunks && s.totalChunks > 0 && (await opts.backend.isSettled())) {
        write('sweep settled: run `ttg aggregate` for the report');
        return;
      }
    }
    if (opts.once || opts.shouldStop()) return;
    let wait: NodeJS.Timeout | undefined;
    await Promise.race([new Promise((r) => (wait = setTimeout(r, opts.intervalSeconds * 1000))), opts.stopped ?? new Promise(() => {})]);
    clearTimeout(wait);
    if (opts.shouldStop()) return;
  }
}
