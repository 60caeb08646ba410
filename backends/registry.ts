/**
 * The backends, listed once. Everything that needs the list (QUEUE_BACKEND's
 * accepted values, `ttg run --backend`, the variables config reads and the
 * deployment checks) takes it from here. A new backend is one line below and
 * its own folder (docs/contributing.md).
 */
import type { BackendEntry, BackendOptions, QueueBackend } from './types.js';
import { memoryBackend } from './memory.js';
import { redisBackend } from './redis/entry.js';
import { rabbitmqBackend } from './rabbitmq/entry.js';

export const BACKENDS = {
  redis: redisBackend,
  rabbitmq: rabbitmqBackend,
  memory: memoryBackend,
} as const;

export type QueueBackendName = keyof typeof BACKENDS;
export const QUEUE_BACKENDS = Object.keys(BACKENDS) as QueueBackendName[];

type ConnectionOf<E> = E extends BackendEntry<infer C> ? C : never;
/** Each backend's connection settings, by name. */
export type BackendConnections = { [K in QueueBackendName]: ConnectionOf<(typeof BACKENDS)[K]> };

/** Every variable some backend reads, once each. */
export const BACKEND_VARIABLES: readonly string[] = [...new Set(Object.values(BACKENDS).flatMap((b) => b.variables))];

/** Reads every backend's variables (so a bad one is reported whichever backend is chosen, as before). */
export function readBackendEnv(env: Record<string, string | undefined>): BackendConnections {
  const out: Record<string, unknown> = {};
  for (const [name, entry] of Object.entries(BACKENDS)) out[name] = entry.readEnv(env);
  return out as BackendConnections;
}

/** Makes the backend `name` with its connection settings. */
export function createBackendByName<K extends QueueBackendName>(
  name: K, options: BackendOptions<BackendConnections[K]>,
): Promise<QueueBackend> {
  return (BACKENDS[name] as BackendEntry<BackendConnections[K]>).create(options);
}
