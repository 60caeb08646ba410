/**
 * The terminal monitor's output: one progress line (settled of total, rate,
 * ETA, in flight, retrying, dead-lettered), redrawn in place on a TTY and
 * written as plain lines when piped, so a log file or `| grep` gets text,
 * not escape codes.
 */

/** What the line shows; counts as the backend gives them (a negative count: the broker cannot tell). */
export interface ProgressFigures {
  totalChunks: number;
  settledChunks: number;
  deadLettered: number;
  inFlight: number;
  retrying: number;
  /** Chunks settled per second over the last polls; null before two polls. */
  rate: number | null;
}

export function progressBar(done: number, total: number, width = 30): string {
  const frac = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const pct = `${(frac * 100).toFixed(1)}%`;
  if (width <= 0) return pct;
  const filled = Math.round(frac * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct}`;
}

export function formatDuration(seconds: number): string {
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * The progress line. Counts never exceed their totals: settled is clamped to
 * the sweep's chunks and dead-lettered to the settled ones, whatever a
 * backend reports (dead letters of messages that were never chunks, say).
 */
export function progressLine(f: ProgressFigures, barWidth = 30): string {
  const total = Math.max(0, f.totalChunks);
  const settled = Math.min(total, Math.max(0, f.settledChunks));
  const dead = Math.min(settled, Math.max(0, f.deadLettered));
  const left = total - settled;
  const known = (n: number) => (n < 0 ? '?' : String(n));
  const eta = left === 0 ? 'done' : f.rate !== null && f.rate > 0 ? formatDuration(left / f.rate) : '?';
  // A comma list, so that every figure fits an 80-column terminal whole for sweeps of up to 999 chunks.
  return `${progressBar(settled, total, barWidth)} ${settled}/${total} chunks, ${f.rate === null ? '-' : f.rate.toFixed(1)}/s, ` +
    `eta ${eta}, in flight ${known(f.inFlight)}, retrying ${known(f.retrying)}, dead-lettered ${dead}`;
}

/**
 * The line for a terminal `columns` wide: the bar shrinks (down to none) so
 * that the figures themselves are never cut off.
 */
export function fitProgressLine(f: ProgressFigures, columns: number): string {
  const bare = progressLine(f, 0).length;
  const room = (columns || 80) - 1 - bare - 3;
  return progressLine(f, room >= 10 ? Math.min(30, room) : 0);
}

/** Where the monitor writes: a terminal (redraw in place) or anything else (plain lines). */
export interface MonitorOutput {
  isTTY?: boolean;
  columns?: number;
  write(chunk: string): unknown;
}

/** Clear the line, back to its start. */
const REDRAW = '\r\x1b[2K';

/**
 * Writes progress lines: on a TTY each one replaces the last (cut to the
 * terminal's width, so it never wraps into a second line it could not
 * redraw); otherwise each is a line of its own, stamped with the time.
 */
export class ProgressWriter {
  readonly #out: MonitorOutput;
  #open = false;

  constructor(out: MonitorOutput) {
    this.#out = out;
  }

  get isTTY(): boolean {
    return Boolean(this.#out.isTTY);
  }

  /** The terminal's width (0 when unknown or not a terminal). */
  get columns(): number {
    return this.#out.columns ?? 0;
  }

  /** The current progress: redrawn in place on a TTY, a new plain line otherwise. */
  update(line: string, now = new Date()): void {
    if (this.isTTY) {
      // A pty without a size (under script(1), some CI runners) reports 0 columns: assume 80.
      const width = Math.max(20, (this.#out.columns || 80) - 1);
      this.#out.write(REDRAW + (line.length > width ? line.slice(0, width - 1) + '…' : line));
      this.#open = true;
    } else {
      this.#out.write(`${now.toISOString()}  ${line}\n`);
    }
  }

  /** A message of its own (the sweep's settings, the end): it ends the redrawn line first. */
  say(message: string): void {
    this.end();
    this.#out.write(message + '\n');
  }

  /** Leaves the cursor on a fresh line (before exiting, so the shell prompt does not overwrite the last figures). */
  end(): void {
    if (this.#open) this.#out.write('\n');
    this.#open = false;
  }
}
