/**
 * The Redis backend's own variables: REDIS_URL, or REDIS_HOST / REDIS_PORT,
 * REDIS_PASSWORD, and REDIS_TLS_CA_FILE (for rediss://). Read at start-up
 * through the backend registry, with every other variable, before any
 * connection is made.
 */
import { integer, raw, type Env } from '../../core/env.js';
import { ConfigError } from '../../core/errors.js';
import { redact, registerSecret } from '../../core/log.js';
import { caSetting } from '../../core/tls.js';

export const REDIS_VARIABLES = ['REDIS_HOST', 'REDIS_PORT', 'REDIS_URL', 'REDIS_PASSWORD', 'REDIS_TLS_CA_FILE'] as const;

export interface RedisConnection {
  /** Full connection URL when REDIS_URL is set (may hold a password). */
  url: string | null;
  host: string;
  port: number;
  password: string | null;
  /** host:port, safe to print. */
  address: string;
  /** The database number (REDIS_URL's path; 0 when absent). */
  db: number;
  /** rediss://: TLS, the server's certificate verified. */
  tls: boolean;
  /** REDIS_TLS_CA_FILE: its path and PEM text (null: the system's CAs, and NODE_EXTRA_CA_CERTS). */
  caFile: string | null;
  ca: string | null;
  /** The ACL user (REDIS_URL's user name; Redis calls the password-only login `default`), for messages. */
  user: string;
}

/** Parses and checks the Redis variables; throws ConfigError naming the first bad one. */
export function readRedisEnv(env: Env): RedisConnection {
  const url = raw(env, 'REDIS_URL') ?? null;
  const password = env['REDIS_PASSWORD'] || null;
  registerSecret(password);
  if (url !== null) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError(`REDIS_URL must be a URL like redis://[:password@]host:6379[/db] or rediss://..., got "${redact(url)}"`);
    }
    if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
      throw new ConfigError(`REDIS_URL must start with redis:// or rediss://, got "${redact(url)}"`);
    }
    registerSecret(parsed.password);
    // Checked here, with every other variable, so a bad database never gets as far as a connection.
    const dbText = parsed.pathname.replace(/^\//, '');
    if (dbText !== '' && !/^\d{1,5}$/.test(dbText)) {
      throw new ConfigError(`REDIS_URL's database (the path after the port) must be a number, got "${redact(dbText)}"`);
    }
    const port = parsed.port ? Number(parsed.port) : 6379;
    const tls = parsed.protocol === 'rediss:';
    const user = parsed.username && (parsed.password || password) ? decodeURIComponent(parsed.username) : 'default';
    return {
      url, host: parsed.hostname, port, password, address: `${parsed.hostname}:${port}`, db: dbText === '' ? 0 : Number(dbText),
      tls, ...caOf(env, tls), user,
    };
  }
  const host = raw(env, 'REDIS_HOST') ?? 'ttg-redis';
  const port = integer(env, 'REDIS_PORT', 6379, 1, 65535);
  return { url: null, host, port, password, address: `${host}:${port}`, db: 0, tls: false, ...caOf(env, false), user: 'default' };
}

/** REDIS_TLS_CA_FILE (core/tls.ts): checked before any connection. */
function caOf(env: Env, tls: boolean): { caFile: string | null; ca: string | null } {
  return caSetting(env, 'REDIS_TLS_CA_FILE', tls, 'Redis', 'REDIS_URL=rediss://host:port');
}

