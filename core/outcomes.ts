/**
 * The outcomes a backend reports, the same words whatever the broker (a
 * backend maps its own codes, e.g. the Redis scripts' return codes, onto
 * these in one place).
 */

/** What became of a failed delivery (QueueBackend.fail). */
export type FailOutcome =
  /** It will come back after the retry delay. */
  | 'retried'
  /** Its last attempt, or a task that is not a chunk of the sweep: it is in the dead letters. */
  | 'dead-lettered'
  /** This worker no longer owned it: nothing changed. */
  | 'not-owner';

export const FAIL_OUTCOMES: readonly FailOutcome[] = ['retried', 'dead-lettered', 'not-owner'];
