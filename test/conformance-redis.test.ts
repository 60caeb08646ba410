import { conformanceSuite } from './conformance.js';
import { REDIS_HOST, REDIS_PORT, requireRedis } from './helpers.js';

conformanceSuite({
  kind: 'redis',
  requireServer: requireRedis,
  env: { REDIS_HOST, REDIS_PORT: String(REDIS_PORT) },
  // A dead consumer's entries stay pending in the group until another claims them as stale.
  crash: async (backend) => {
    await backend.close();
  },
});
