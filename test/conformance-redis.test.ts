import { after } from 'node:test';
import { Redis } from 'ioredis';
import { conformanceSuite } from './conformance.js';
import { REDIS_HOST, REDIS_PORT, requireRedis } from './helpers.js';

let raw: Redis | null = null;
after(async () => {
  await raw?.quit();
});

conformanceSuite({
  kind: 'redis',
  requireServer: requireRedis,
  env: { REDIS_HOST, REDIS_PORT: String(REDIS_PORT) },
  broker: { host: REDIS_HOST, port: REDIS_PORT, portVariable: 'REDIS_PORT' },
  redeliversByItself: false,
  injectTask: async (prefix, fields) => {
    raw ??= new Redis({ host: REDIS_HOST, port: REDIS_PORT });
    await raw.xadd(`${prefix}:tasks`, '*', ...Object.entries(fields).flatMap(([k, v]) => [k, String(v)]));
  },
});
