/** Picks the backend QUEUE_BACKEND names; brokers' client libraries load only when used. */
import type { BackendOptions, QueueBackend } from './types.js';
import { MemoryBackend } from './memory.js';

export async function createBackend(opts: BackendOptions): Promise<QueueBackend> {
  switch (opts.config.queueBackend) {
    case 'memory':
      return new MemoryBackend(opts);
    case 'redis': {
      const { RedisBackend } = await import('./redis.js');
      return new RedisBackend(opts);
    }
    case 'rabbitmq': {
      const { RabbitBackend } = await import('./rabbitmq.js');
      return new RabbitBackend(opts);
    }
  }
}
