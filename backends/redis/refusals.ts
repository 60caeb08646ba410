/**
 * What ttg needs from a Redis user, and the errors that mean Redis said no.
 *
 * `minimalRedisAcl(prefix)` is the least an ACL user needs to run, aggregate, monitor and reset
 * a sweep under QUEUE_PREFIX=prefix (the README's "Security" section shows it; the security
 * fault scenario runs a whole sweep as a user with exactly these rules). `redisRefusal()` turns
 * a refusal (wrong password, an ACL that lacks a command, a key or the channel, a TLS
 * certificate ttg does not trust) into one BrokerRefusedError saying what to fix: these are
 * raised at once, never retried for CONNECT_TIMEOUT_SECONDS.
 */
import { createHash } from 'node:crypto';
import { BrokerRefusedError } from '../../core/errors.js';
import { redact } from '../../core/log.js';
import { describeTlsFailure } from '../../core/tls.js';
import type { RedisConnection } from './options.js';
import { isRedisError } from './replies.js';
import { loadScripts } from './scripts.js';

/**
 * The commands ttg sends, directly or from its Lua scripts (a script runs with its caller's
 * ACL). INFO is ioredis's ready check (it waits out a Redis still loading its data after a
 * restart); CLIENT ID and CLIENT UNBLOCK let an idle worker leave the moment the sweep settles;
 * SCAN finds the consumer-name leases `ttg reset` deletes.
 */
export const REDIS_COMMANDS = [
  'ping', 'info', 'client|setname', 'client|id', 'client|unblock', 'evalsha', 'eval',
  'xadd', 'xreadgroup', 'xack', 'xautoclaim', 'xclaim', 'xpending', 'xrange', 'xrevrange', 'xlen', 'xtrim', 'xinfo|groups', 'xgroup|create',
  'hget', 'hmget', 'hgetall', 'hkeys', 'hset', 'hdel', 'hlen', 'hexists', 'hincrby',
  'get', 'set', 'pexpire', 'exists', 'del', 'scan',
  'zadd', 'zrange', 'zrangebyscore', 'zrem', 'zcard',
  'time', 'publish', 'subscribe',
] as const;

/**
 * The ACL rules of a user that may run sweeps under QUEUE_PREFIX=prefix and nothing else:
 * its keys (`prefix:*`), its event channel, and the commands above (every other command,
 * FLUSHALL and CONFIG among them, denied). For `ACL SETUSER name on >password <rules>`.
 */
export function minimalRedisAcl(prefix: string): string[] {
  return ['resetkeys', `~${prefix}:*`, 'resetchannels', `&${prefix}:events`, '-@all', ...REDIS_COMMANDS.map((c) => `+${c}`)];
}

export interface RefusalContext {
  connection: RedisConnection;
  queuePrefix: string;
}

/** The BrokerRefusedError for `err` when it is a refusal that waiting will not change; null otherwise. */
export function redisRefusal(err: unknown, ctx: RefusalContext): BrokerRefusedError | null {
  if (err instanceof BrokerRefusedError) return err; // said already
  const c = ctx.connection;
  const what = `Redis at ${c.address}`;
  const cause = redact(err instanceof Error ? err.message : String(err)).trim();
  const tls = c.tls
    ? describeTlsFailure(err, {
      broker: 'Redis', address: c.address, host: c.host, caVariable: 'REDIS_TLS_CA_FILE', caFile: c.caFile,
      urlVariable: 'REDIS_URL', clientCertSetting: 'tls-auth-clients no, or optional, in redis.conf',
    })
    : null;
  if (tls !== null) return new BrokerRefusedError(tls, { cause: err });
  if (isRedisError(err, 'NOAUTH')) {
    return new BrokerRefusedError(`${what} asks for a password and none was given (${cause}); ` +
      'put it in REDIS_URL (redis://user:password@host:port) or REDIS_PASSWORD', { cause: err });
  }
  if (isRedisError(err, 'WRONGPASS', 'invalid password', 'invalid username-password')) {
    return new BrokerRefusedError(`${what} refused the login of user '${c.user}' (${cause}); ` +
      'check the user name and password in REDIS_URL (or REDIS_PASSWORD), and that the user is enabled (ACL SETUSER … on)', { cause: err });
  }
  const denied = deniedPermission(cause, ctx.queuePrefix);
  if (denied !== null) {
    return new BrokerRefusedError(`${what} refused user '${c.user}' ${denied.what} (${cause}); ` +
      `its ACL lacks what ttg needs: ACL SETUSER ${c.user} ${denied.grant} (the README's "Security" section lists the whole minimal ACL)`,
    { cause: err });
  }
  return null;
}

/** What an ACL refusal (NOPERM, or its wording inside a script) denied, and the rule that grants it. */
function deniedPermission(message: string, prefix: string): { what: string; grant: string } | null {
  const keys = { what: `the keys of QUEUE_PREFIX=${prefix}`, grant: `~${prefix}:*` };
  const channel = { what: `the channel ${prefix}:events`, grant: `&${prefix}:events` };
  if (/^NOPERM/.test(message)) {
    const command = /permissions to run the '([^']+)' command/.exec(message)?.[1];
    if (command !== undefined) return { what: `the command ${command.toUpperCase()}`, grant: `+${command.toLowerCase()}` };
    if (/\bkeys?\b/.test(message)) return keys;
    if (/\bchannels?\b/.test(message)) return channel;
    return { what: 'a command or key', grant: minimalRedisAcl(prefix).join(' ') };
  }
  // Inside a script Redis 7 words it differently and names the script's line, not the command.
  const inScript = /The user executing the script can't (.+?) script: ([0-9a-f]{40}), on @user_script:(\d+)/.exec(message);
  if (inScript === null) return null;
  const [, action, sha, line] = inScript;
  if (/access at least one of the keys/.test(action!)) return keys;
  if (/publish to the channel/.test(action!)) return channel;
  const command = scriptCommandAt(sha!, Number(line));
  return command !== null
    ? { what: `the command ${command.toUpperCase()} (in a ttg script)`, grant: `+${command.toLowerCase()}` }
    : { what: 'a command a ttg script runs', grant: minimalRedisAcl(prefix).join(' ') };
}

/** The command (`xgroup|create`, `xack`) that line `line` of the ttg script with this SHA-1 calls. */
function scriptCommandAt(sha: string, line: number): string | null {
  for (const script of loadScripts().values()) {
    if (createHash('sha1').update(script.lua).digest('hex') !== sha) continue;
    const text = script.lua.split('\n')[line - 1] ?? '';
    const call = /redis\.p?call\(\s*'([A-Za-z]+)'(?:\s*,\s*'([A-Za-z]+)')?/.exec(text);
    if (call === null) return null;
    const [, name, sub] = call;
    const withSub = sub !== undefined && REDIS_COMMANDS.includes(`${name}|${sub}`.toLowerCase() as (typeof REDIS_COMMANDS)[number]);
    return (withSub ? `${name}|${sub}` : name!).toLowerCase();
  }
  return null;
}
