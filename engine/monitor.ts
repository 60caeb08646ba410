/** `ttg monitor`: live progress of a sweep from the backend's queue statistics. */
import type { Config } from './config.js';
import type { QueueBackend, QueueStats } from '../backends/types.js';
import { fitProgressLine, progressBar, progressLine, ProgressWriter, type MonitorOutput } from './progress-line.js';

export { progressBar };

/** The progress line of a poll, and who holds chunks where the broker tells (a block for logs and tests). */
export function formatStats(s: QueueStats, rate: number | null): string {
  const lines = [progressLine({ ...s, rate })];
  const consumers = Object.entries(s.consumers);
  if (consumers.length > 0) lines.push(`  in hands: ${consumers.map(([c, n]) => `${c}=${n}`).join('  ')}`);
  return lines.join('\n');
}

/**
 * Polls the backend's queue statistics until the sweep is settled (or once,
 * or until asked to stop). On a terminal the progress is one line redrawn in
 * place; piped (or with `write`, one call per line) it is plain lines.
 */
export async function runMonitor(opts: {
  backend: QueueBackend;
  config: Config;
  intervalSeconds: number;
  once: boolean;
  shouldStop: () => boolean;
  /** Resolves when the caller asks to stop, so the wait between polls ends at once (no timer left behind). */
  stopped?: Promise<void>;
  /** Plain lines, one call each (tests, library use); otherwise `output`. */
  write?: (text: string) => void;
  /** Where to write; process.stdout by default (a TTY gets the redrawn line). */
  output?: MonitorOutput;
}): Promise<void> {
  const write = opts.write;
  const output: MonitorOutput = opts.output ?? (write ? { isTTY: false, write: (c: string) => write(c.replace(/\n$/, '')) } : process.stdout);
  const progress = new ProgressWriter(output);
  let last: { at: number; settled: number } | null = null;
  let shown = '';
  try {
    for (;;) {
      const s = await opts.backend.stats();
      if (s.settings === null) {
        progress.update(`waiting for a sweep on ${opts.config.queueBackend} under QUEUE_PREFIX=${opts.config.queuePrefix}...`);
      } else {
        const sweep = `sweep: kernel ${s.settings.kernel}, ${s.settings.totalParams} params in ${s.totalChunks} chunks of ` +
          `${s.settings.chunkSize}, on ${opts.config.queueBackend} (QUEUE_PREFIX=${opts.config.queuePrefix})`;
        if (sweep !== shown) progress.say(sweep);
        shown = sweep;
        const now = Date.now();
        const settled = Math.min(s.totalChunks, s.settledChunks);
        const rate = last ? ((settled - last.settled) * 1000) / Math.max(1, now - last.at) : null;
        last = { at: now, settled };
        const figures = { ...s, settledChunks: settled, rate };
        // A log has room for more: what waits to be taken, and the result entries (duplicates included).
        progress.update(progress.isTTY ? fitProgressLine(figures, progress.columns)
          : `${progressLine(figures)}, ready ${s.ready}, results ${s.results}`, new Date(now));
        // Settled only when the backend itself says so: every chunk of the sweep has a result or a dead letter.
        if (settled >= s.totalChunks && s.totalChunks > 0 && (await opts.backend.isSettled())) {
          progress.say('sweep settled: run `ttg aggregate` for the report');
          return;
        }
      }
      if (opts.once || opts.shouldStop()) return;
      let wait: NodeJS.Timeout | undefined;
      await Promise.race([new Promise((r) => (wait = setTimeout(r, opts.intervalSeconds * 1000))), opts.stopped ?? new Promise(() => {})]);
      clearTimeout(wait);
      if (opts.shouldStop()) return;
    }
  } finally {
    // Ctrl-C or --once: the shell's prompt starts on a line of its own, below the last figures.
    progress.end();
  }
}
