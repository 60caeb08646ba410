/**
 * The RabbitMQ backend's own variables: AMQP_URL, or RABBITMQ_HOST,
 * RABBITMQ_PORT, RABBITMQ_USER, RABBITMQ_PASSWORD and RABBITMQ_VHOST. Read
 * at start-up through the backend registry, before any connection is made.
 */
import { integer, raw, type Env } from '../../core/env.js';
import { ConfigError } from '../../core/errors.js';
import { redact, registerSecret } from '../../core/log.js';

export const RABBITMQ_VARIABLES = ['RABBITMQ_HOST', 'RABBITMQ_PORT', 'RABBITMQ_USER', 'RABBITMQ_PASSWORD', 'RABBITMQ_VHOST', 'AMQP_URL'] as const;

export interface RabbitConnection {
  /** Connection URL with credentials: never log it, log `address`. */
  url: string;
  /** scheme://host:port/vhost, safe to print. */
  address: string;
}

/** Parses and checks the RabbitMQ variables; throws ConfigError naming the first bad one. */
export function readRabbitEnv(env: Env): RabbitConnection {
  const url = raw(env, 'AMQP_URL');
  if (url !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError(`AMQP_URL must be a URL like amqp://user:password@host:5672/vhost or amqps://..., got "${redact(url)}"`);
    }
    if (parsed.protocol !== 'amqp:' && parsed.protocol !== 'amqps:') {
      throw new ConfigError(`AMQP_URL must start with amqp:// or amqps://, got "${redact(url)}"`);
    }
    registerSecret(parsed.password);
    const port = parsed.port || (parsed.protocol === 'amqps:' ? '5671' : '5672');
    return { url, address: `${parsed.protocol}//${parsed.hostname}:${port}${parsed.pathname || '/'}` };
  }
  const host = raw(env, 'RABBITMQ_HOST') ?? 'ttg-rabbitmq';
  const port = integer(env, 'RABBITMQ_PORT', 5672, 1, 65535);
  const user = env['RABBITMQ_USER'] || 'guest';
  // The default guest password is no secret; one the user set is.
  registerSecret(env['RABBITMQ_PASSWORD']);
  const password = env['RABBITMQ_PASSWORD'] || 'guest';
  const vhost = env['RABBITMQ_VHOST'] || '/';
  return {
    url: `amqp://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/${encodeURIComponent(vhost)}`,
    address: `amqp://${host}:${port}/${vhost === '/' ? '' : vhost}`,
  };
}

