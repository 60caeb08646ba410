/**
 * `ttg run`'s live progress line, on stderr while its in-process workers
 * sweep: the same line as `ttg monitor` (redrawn in place on a terminal,
 * plain stamped lines when piped), fed from the workers' own counters, so it
 * costs the broker nothing (reading a RabbitMQ stream for stats is not free).
 */
import { fitProgressLine, progressLine, ProgressWriter, type MonitorOutput } from './progress-line.js';

/** What the line reads from each in-process worker. */
export interface RunProgressSource {
  readonly chunksInHand: number;
  /** Chunks committed, and chunks given up on (dead-lettered) so far. */
  settled(): { chunks: number; deadLettered: number };
}

export class RunProgress {
  readonly #writer: ProgressWriter;
  readonly #timer: NodeJS.Timeout;
  readonly #sources: readonly RunProgressSource[];
  readonly #totalChunks: number;
  #last: { at: number; settled: number } | null = null;

  /** Starts drawing: every 0.2 s on a terminal, every 2 s when piped. */
  constructor(sources: readonly RunProgressSource[], totalChunks: number, output: MonitorOutput = process.stderr) {
    this.#writer = new ProgressWriter(output);
    this.#sources = sources;
    this.#totalChunks = totalChunks;
    this.#timer = setInterval(() => this.#draw(), this.#writer.isTTY ? 200 : 2000);
  }

  #draw(): void {
    let settled = 0;
    let dead = 0;
    let inFlight = 0;
    for (const s of this.#sources) {
      const n = s.settled();
      settled += n.chunks + n.deadLettered;
      dead += n.deadLettered;
      inFlight += s.chunksInHand;
    }
    const now = Date.now();
    // Over the whole run so far: steadier than the last interval's, and what the ETA should use.
    this.#last ??= { at: now, settled: 0 };
    const seconds = (now - this.#last.at) / 1000;
    const rate = seconds > 0.5 ? (settled - this.#last.settled) / seconds : null;
    const figures = { totalChunks: this.#totalChunks, settledChunks: settled, deadLettered: dead, inFlight, retrying: -1, rate };
    this.#writer.update(this.#writer.isTTY ? fitProgressLine(figures, this.#writer.columns) : progressLine(figures));
  }

  /** Draws the final figures and leaves the cursor on a fresh line. */
  stop(): void {
    clearInterval(this.#timer);
    this.#draw();
    this.#writer.end();
  }
}
