/**
 * The RabbitMQ backend's own variables: AMQP_URL, or RABBITMQ_HOST,
 * RABBITMQ_PORT, RABBITMQ_USER, RABBITMQ_PASSWORD and RABBITMQ_VHOST; and
 * RABBITMQ_TLS_CA_FILE for amqps://. Read at start-up through the backend
 * registry, before any connection is made.
 */
import { integer, raw, type Env } from '../../core/env.js';
import { ConfigError } from '../../core/errors.js';
import { redact, registerSecret } from '../../core/log.js';
import { caSetting } from '../../core/tls.js';

export const RABBITMQ_VARIABLES = [
  'RABBITMQ_HOST', 'RABBITMQ_PORT', 'RABBITMQ_USER', 'RABBITMQ_PASSWORD', 'RABBITMQ_VHOST', 'AMQP_URL', 'RABBITMQ_TLS_CA_FILE',
] as const;

export interface RabbitConnection {
  /** Connection URL with credentials: never log it, log `address`. */
  url: string;
  /** scheme://host:port/vhost, safe to print. */
  address: string;
  host: string;
  /** The user and virtual host, for messages (no secret). */
  user: string;
  vhost: string;
  /** amqps://: TLS, the server's certificate verified. */
  tls: boolean;
  /** RABBITMQ_TLS_CA_FILE: its path and PEM text (null: the system's CAs, and NODE_EXTRA_CA_CERTS). */
  caFile: string | null;
  ca: string | null;
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
    const tls = parsed.protocol === 'amqps:';
    const port = parsed.port || (tls ? '5671' : '5672');
    // amqplib's reading of the URL: the path without its slash, percent-decoded, is the vhost ('/' when empty).
    const vhost = parsed.pathname.length > 1 ? decodeURIComponent(parsed.pathname.slice(1)) : '/';
    return {
      url, address: `${parsed.protocol}//${parsed.hostname}:${port}${parsed.pathname || '/'}`, host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
      user: parsed.username ? decodeURIComponent(parsed.username) : 'guest', vhost, tls, ...caOf(env, tls),
    };
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
    host, user, vhost, tls: false, ...caOf(env, false),
  };
}

/** RABBITMQ_TLS_CA_FILE (core/tls.ts): checked before any connection. */
function caOf(env: Env, tls: boolean): { caFile: string | null; ca: string | null } {
  return caSetting(env, 'RABBITMQ_TLS_CA_FILE', tls, 'RabbitMQ', 'AMQP_URL=amqps://user:password@host:5671/vhost');
}

