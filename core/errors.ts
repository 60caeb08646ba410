/**
 * The one set of error classes, shared by engine/ and every backend, with
 * stable names. Each message says what the user can
 * change; `exitCode` is what the `ttg` command exits with when the error
 * reaches it (docs/design.md: 2 for configuration or usage, 1 for runtime).
 */

export class TtgError extends Error {
  readonly exitCode: number = 1;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A bad environment variable or command-line flag. Raised before any connection is made. */
export class ConfigError extends TtgError {
  override readonly exitCode = 2;
}

/** The queue already holds a sweep whose settings differ from this worker's. */
export class SettingsMismatchError extends TtgError {
  override readonly exitCode = 2;
}

/**
 * A queue of the sweep exists on the broker with another layout than this
 * ttg makes (left by an older version): waiting cannot fix it, `ttg reset` can.
 */
export class QueueLayoutError extends TtgError {
  override readonly exitCode = 2;
}

/** The broker could not be reached (or was lost) for longer than the bounded retry time. */
export class BrokerUnavailableError extends TtgError {}

/**
 * The broker answered and said no: wrong credentials, a TLS certificate ttg does not trust, a
 * missing virtual host, permissions (a Redis ACL, RabbitMQ's configure/write/read) that do not
 * cover the sweep. Waiting will not change the answer, so it is raised at the first attempt
 * rather than after CONNECT_TIMEOUT_SECONDS, and it is a configuration error (exit 2, which a
 * Kubernetes Job's podFailurePolicy treats as final); the message says what to fix. A subclass of
 * BrokerUnavailableError, so everything that stops a worker on a lost broker stops it on this too.
 */
export class BrokerRefusedError extends BrokerUnavailableError {
  override readonly exitCode = 2;
}

/** A task message that cannot be processed as it stands (not JSON, missing fields, bad range). */
export class MalformedTaskError extends TtgError {}

/** A chunk failed on purpose (SIMULATE_FAULT_RATE). */
export class SimulatedFaultError extends TtgError {}

/** The sweep's queue state vanished under a running worker ('ttg reset' while it was busy). */
export class SweepGoneError extends TtgError {}

/** The same words on every backend when a sweep is reset under a running worker. */
export function sweepGoneMessage(prefix: string): string {
  return `the sweep under QUEUE_PREFIX=${prefix} was deleted while this worker ran ('ttg reset'?): stopping, ` +
    'its chunks in hand are dropped; start workers again for a new sweep';
}
