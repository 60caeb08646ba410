/**
 * From the engine's configuration to a backend: the narrow options object a
 * backend takes (backends/types.ts), and the backend QUEUE_BACKEND names,
 * made through the registry.
 */
import type { Config } from './config.js';
import type { Logger } from '../core/log.js';
import { createBackendByName, type BackendConnections, type QueueBackendName } from '../backends/registry.js';
import type { BackendOptions, QueueBackend } from '../backends/types.js';

/** The options backend `name` is given for a worker (or a reader: aggregate, monitor, reset) of this configuration. */
export function backendOptions<K extends QueueBackendName>(
  config: Config, name: K, workerId: string, log: Logger,
): BackendOptions<BackendConnections[K]> {
  return {
    queuePrefix: config.queuePrefix,
    workerId,
    hostName: config.hostName,
    maxRetries: config.maxRetries,
    retryDelayMs: config.retryDelayMs,
    prefetch: config.prefetch,
    connectTimeoutSeconds: config.connectTimeoutSeconds,
    staleThresholdMs: config.staleThresholdMs,
    log,
    connection: config.backends[name],
  };
}

/** The configured backend (QUEUE_BACKEND). */
export function createBackend(opts: { config: Config; workerId: string; log: Logger }): Promise<QueueBackend> {
  const name = opts.config.queueBackend;
  return createBackendByName(name, backendOptions(opts.config, name, opts.workerId, opts.log));
}
