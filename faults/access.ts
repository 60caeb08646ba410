/**
 * Broker access for a fault scenario: the variables that reach the broker
 * and the secrets no log line may contain. On the machine's shared brokers
 * every sweep runs as a user made for the run, with a random password in
 * the URL (REDIS_URL, AMQP_URL), so a leak is visible, and the user is
 * deleted afterwards.
 *
 * - Redis: an ACL user per sweep, limited to the sweep's keys and channels
 *   and kept from the server-wide commands (`~<prefix>:* &<prefix>:* +@all
 *   -@dangerous +info`: INFO is ioredis's ready check), removed by close()
 *   (or, should the process end before, by an exit hook).
 * - RabbitMQ: one user per process (`rabbitmqctl` takes most of a second
 *   per call), permissions on vhost `/`, removed by closeSharedAccess() (and,
 *   should the process end without it, by an exit hook). The URL names no
 *   AMQP heartbeat: ttg's own choice (from STALE_THRESHOLD_MS) is under test.
 *
 * Scenarios on private brokers (broker restarts, TLS) make their own
 * BrokerAccess with the same shape.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RABBIT_HOST, RABBIT_PORT, REDIS_HOST, REDIS_PORT, requireRabbit, requireRedis } from '../test/helpers.js';
import type { FaultBackend } from './types.js';

export interface BrokerAddress {
  host: string;
  port: number;
}

export interface BrokerAccess {
  backend: FaultBackend;
  /** Where the broker listens (what a relay or forwarder in front of it forwards to). */
  address: BrokerAddress;
  /** The variables that reach the broker, through `via` (a relay's address) when given. */
  env(via?: BrokerAddress): Record<string, string>;
  /** Strings that must appear in no log line (each password, as given and percent-encoded). */
  secrets: string[];
  /** Removes what was made for this access (a user); safe to call twice. */
  close(): Promise<void>;
}

function password(): string {
  // A marker a reader recognises in a leaked line, and 24 random hex digits.
  return `ttgsecret${randomBytes(12).toString('hex')}`;
}

function secretForms(secret: string): string[] {
  return [...new Set([secret, encodeURIComponent(secret)])];
}

/** An ACL user on the shared Redis limited to `prefix`'s keys and channels, with a random password. */
export async function redisAccess(prefix: string): Promise<BrokerAccess> {
  await requireRedis();
  const user = `ttgfault-${randomBytes(4).toString('hex')}`;
  const secret = password();
  const admin = await redisAdmin();
  try {
    await admin.call('ACL', 'SETUSER', user, 'reset', 'on', `>${secret}`, `~${prefix}:*`, `&${prefix}:*`, '+@all', '-@dangerous', '+info');
  } finally {
    admin.disconnect();
  }
  let closed = false;
  const deleteAtExit = () => {
    try {
      execFileSync('redis-cli', ['-h', REDIS_HOST, '-p', String(REDIS_PORT), 'ACL', 'DELUSER', user], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      // Nothing more can be done at exit; the user's name says where it came from.
    }
  };
  process.once('exit', deleteAtExit);
  return {
    backend: 'redis',
    address: { host: REDIS_HOST, port: REDIS_PORT },
    env: (via) => ({
      REDIS_URL: `redis://${user}:${encodeURIComponent(secret)}@${via?.host ?? REDIS_HOST}:${via?.port ?? REDIS_PORT}`,
    }),
    secrets: secretForms(secret),
    async close() {
      if (closed) return;
      closed = true;
      process.removeListener('exit', deleteAtExit);
      const c = await redisAdmin();
      try {
        await c.call('ACL', 'DELUSER', user);
      } finally {
        c.disconnect();
      }
    },
  };
}

function rabbitmqctl(args: string[], input?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile('rabbitmqctl', args, { timeout: 60_000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`rabbitmqctl ${args[0]} failed: ${stderr.trim() || err.message}`));
      else resolve();
    });
    // The password goes on stdin, never on a command line another process could read.
    child.stdin!.end(input ?? '');
  });
}

let sharedRabbit: Promise<{ user: string; secret: string }> | null = null;
let sharedRabbitUser: string | null = null;

/** Deletes the shared RabbitMQ user if the process ends without closeSharedAccess(). */
function deleteRabbitUserAtExit(): void {
  if (sharedRabbitUser === null) return;
  try {
    execFileSync('rabbitmqctl', ['delete_user', sharedRabbitUser], { stdio: 'ignore', timeout: 30_000 });
  } catch {
    // Nothing more can be done at exit; the user's name says where it came from.
  }
  sharedRabbitUser = null;
}

/** The shared RabbitMQ's fault user (made on first use, one per process), with a 1 s heartbeat in the URL. */
export async function rabbitAccess(): Promise<BrokerAccess> {
  await requireRabbit();
  sharedRabbit ??= (async () => {
    const user = `ttgfault-${process.pid}-${randomBytes(3).toString('hex')}`;
    const secret = password();
    await rabbitmqctl(['add_user', user], secret);
    sharedRabbitUser = user;
    process.once('exit', deleteRabbitUserAtExit);
    await rabbitmqctl(['set_permissions', '-p', '/', user, '.*', '.*', '.*']);
    return { user, secret };
  })();
  let made: { user: string; secret: string };
  try {
    made = await sharedRabbit;
  } catch (err) {
    sharedRabbit = null;
    throw err;
  }
  return {
    backend: 'rabbitmq',
    address: { host: RABBIT_HOST, port: RABBIT_PORT },
    env: (via) => ({
      AMQP_URL: `amqp://${made.user}:${encodeURIComponent(made.secret)}@${via?.host ?? RABBIT_HOST}:${via?.port ?? RABBIT_PORT}/%2F`,
    }),
    secrets: secretForms(made.secret),
    // Shared by every sweep of the process: closeSharedAccess() removes it.
    close: async () => {},
  };
}

/** The access a scenario gets by default on the shared brokers. */
export function sharedBrokerAccess(backend: FaultBackend, prefix: string): Promise<BrokerAccess> {
  return backend === 'redis' ? redisAccess(prefix) : rabbitAccess();
}

/** Deletes the process's RabbitMQ fault user (the runner and the tests call it at the end). */
export async function closeSharedAccess(): Promise<void> {
  const made = sharedRabbit;
  sharedRabbit = null;
  if (!made) return;
  const { user } = await made.catch(() => ({ user: null }));
  if (user === null) return;
  await rabbitmqctl(['delete_user', user]);
  sharedRabbitUser = null;
  process.removeListener('exit', deleteRabbitUserAtExit);
}

/** A client of the shared Redis as its administrator (to look at or add to a sweep's streams by hand); quit() it after. */
export async function redisAdmin(): Promise<Redis> {
  await requireRedis();
  const c = new Redis({ host: REDIS_HOST, port: REDIS_PORT, lazyConnect: true, maxRetriesPerRequest: 2 });
  await c.connect();
  return c;
}
