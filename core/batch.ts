/**
 * Coalescing one-at-a-time calls into batches: calls made while a batch is
 * on its way to the broker wait for the next one, so a worker completing
 * hundreds of chunks a second pays a round trip per batch, not per chunk,
 * while a lone call still leaves at once (at the end of the current turn of
 * the event loop). Each caller gets its own answer, or the batch's error.
 */
export class Batcher<Item, Answer> {
  readonly #send: (items: Item[]) => Promise<Answer[]>;
  readonly #maxBatch: number;
  #queue: Array<{ item: Item; resolve: (a: Answer) => void; reject: (e: unknown) => void }> = [];
  #inFlight = false;
  #scheduled = false;

  /** `send` answers each item, in order. At most `maxBatch` items go in one call. */
  constructor(send: (items: Item[]) => Promise<Answer[]>, maxBatch = 1000) {
    this.#send = send;
    this.#maxBatch = maxBatch;
  }

  /** Items waiting for a batch, or in the one on its way. */
  get pending(): number {
    return this.#queue.length;
  }

  add(item: Item): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#inFlight || this.#scheduled) return;
    this.#scheduled = true;
    // The end of this turn: calls made by one loop over many finished chunks share the batch.
    setImmediate(() => {
      this.#scheduled = false;
      void this.#flush();
    });
  }

  async #flush(): Promise<void> {
    if (this.#inFlight || this.#queue.length === 0) return;
    this.#inFlight = true;
    const batch = this.#queue.splice(0, this.#maxBatch);
    try {
      const answers = await this.#send(batch.map((b) => b.item));
      batch.forEach((b, i) => b.resolve(answers[i]!));
    } catch (err) {
      for (const b of batch) b.reject(err);
    } finally {
      this.#inFlight = false;
      if (this.#queue.length) this.#schedule();
    }
  }
}
