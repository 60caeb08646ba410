/**
 * Every Redis name of a sweep, built here and nowhere else. Beside the task
 * stream `<p>:tasks` (group `<p>-workers`) and the result stream
 * `<p>:results`: `<p>:meta` (the sweep's settings), `<p>:done` and
 * `<p>:dead-chunks` (chunk id → 1: what is settled), `<p>:attempts` (chunk
 * id → failures), `<p>:delayed` (retries waiting out their delay), `<p>:dead`
 * (dead-letter stream), `<p>:redrives` (chunk id → its re-drives, see
 * redrive-7.lua), `<p>:joined` (consumer name → who joined the sweep) and
 * `<p>:consumer:worker-<id>` (the lease on a consumer name); and the pub/sub
 * channel `<p>:events`.
 */
export function redisKeys(prefix: string) {
  return {
    tasks: `${prefix}:tasks`,
    results: `${prefix}:results`,
    group: `${prefix}-workers`,
    meta: `${prefix}:meta`,
    done: `${prefix}:done`,
    dead: `${prefix}:dead`,
    deadChunks: `${prefix}:dead-chunks`,
    attempts: `${prefix}:attempts`,
    delayed: `${prefix}:delayed`,
    redrives: `${prefix}:redrives`,
    joined: `${prefix}:joined`,
    /** Pub/sub channel (not a key): told `settled` when the sweep's last chunk settles, so waiting workers leave at once. */
    events: `${prefix}:events`,
    lease: (consumer: string) => `${prefix}:consumer:${consumer}`,
    /** SCAN pattern of the lease keys (the prefix's characters are never glob syntax, see config). */
    leasePattern: `${prefix}:consumer:*`,
  };
}
export type Keys = ReturnType<typeof redisKeys>;

