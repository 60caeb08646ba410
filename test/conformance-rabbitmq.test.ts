import { conformanceSuite } from './conformance.js';
import { RABBIT_HOST, RABBIT_PORT, requireRabbit } from './helpers.js';

conformanceSuite({
  kind: 'rabbitmq',
  requireServer: requireRabbit,
  env: { RABBITMQ_HOST: RABBIT_HOST, RABBITMQ_PORT: String(RABBIT_PORT) },
  // The broker requeues a closed connection's unacknowledged deliveries.
  crash: async (backend) => {
    await backend.close();
  },
});
