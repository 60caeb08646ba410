/** The Redis backend's registry entry: its variables, and the adapter loaded (with ioredis) only when used. */
import type { BackendEntry } from '../types.js';
import { readRedisEnv, REDIS_VARIABLES, type RedisConnection } from './options.js';

export const redisBackend: BackendEntry<RedisConnection> = {
  variables: REDIS_VARIABLES,
  readEnv: readRedisEnv,
  async create(options) {
    const { RedisBackend } = await import('./backend.js');
    return new RedisBackend(options);
  },
};
