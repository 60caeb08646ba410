/**
 * The RabbitMQ backend tests' common set-up: an environment with each file's defaults, backends
 * opened in-process on it, and an `after` clean-up that closes them and resets every prefix used.
 */
import { RabbitBackend } from '../backends/rabbitmq/backend.js';
import { silentLogger } from '../core/log.js';
import { backendOptions } from '../engine/backend.js';
import { loadConfig } from '../engine/config.js';
import { RABBIT_HOST, RABBIT_PORT } from './helpers.js';

export function rabbitFixture(defaults: Record<string, string | number>) {
  const prefixes = new Set<string>();
  const opened: RabbitBackend[] = [];
  const env = (prefix: string, extra: Record<string, string | number> = {}): Record<string, string> => {
    const e: Record<string, string> = {
      USE_QUEUE: 'true', QUEUE_BACKEND: 'rabbitmq', RABBITMQ_HOST: RABBIT_HOST, RABBITMQ_PORT: String(RABBIT_PORT),
      QUEUE_PREFIX: prefix, THREADS: '1',
    };
    for (const [k, v] of Object.entries({ ...defaults, ...extra })) e[k] = String(v);
    return e;
  };
  const open = (prefix: string, workerId: string, extra: Record<string, string | number> = {}): RabbitBackend => {
    prefixes.add(prefix);
    const backend = new RabbitBackend(backendOptions(loadConfig(env(prefix, { WORKER_ID: workerId, ...extra })), 'rabbitmq', workerId, silentLogger));
    opened.push(backend);
    return backend;
  };
  /** Closes every backend opened, then resets every prefix used (for `after`). */
  const cleanup = async (): Promise<void> => {
    for (const b of opened) await b.close().catch(() => {});
    for (const prefix of prefixes) {
      const cleaner = new RabbitBackend(backendOptions(loadConfig(env(prefix)), 'rabbitmq', 'cleanup', silentLogger));
      await cleaner.reset().catch(() => {});
      await cleaner.close();
    }
  };
  return { env, open, opened, prefixes, cleanup };
}
