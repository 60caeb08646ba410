/** Every Redis name of a sweep, built here and nowhere else. */
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
    lease: (consumer: string) => `${prefix}:consumer:${consumer}`,
    /** SCAN pattern of the lease keys (the prefix's characters are never glob syntax, see config). */
    leasePattern: `${prefix}:consumer:*`,
  };
}
export type Keys = ReturnType<typeof redisKeys>;

