/**
 * What ttg needs from a RabbitMQ user, and the errors that mean RabbitMQ said no.
 *
 * `minimalRabbitPermissions(prefix)` are the configure/write/read patterns a user needs on its
 * virtual host to run, aggregate, monitor and reset a sweep under QUEUE_PREFIX=prefix (the
 * README's "Security" section shows them; the security fault scenario runs a whole sweep as a
 * user with exactly these). `rabbitRefusal()` turns a refusal (login, virtual host, a
 * permission, a TLS certificate ttg does not trust) into one BrokerRefusedError saying what to
 * fix: these are raised at once, never retried for CONNECT_TIMEOUT_SECONDS.
 */
import { BrokerRefusedError } from '../../core/errors.js';
import { describeTlsFailure, tlsOptions } from '../../core/tls.js';
import { describe, errorCode } from './names.js';
import type { RabbitConnection } from './options.js';

/** A regular expression matching `text` literally. */
function literal(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Every name of a sweep starts with `<prefix>.` (backends/rabbitmq/names.ts): its exchange,
 * queues, streams and exclusive lock queues. Writing also covers the default exchange
 * (`amq.default`), through which the sweep's settings are published to their stream.
 */
export function minimalRabbitPermissions(prefix: string): { configure: string; write: string; read: string } {
  const own = `^${literal(prefix)}\\.`;
  return { configure: own, write: `${own}|^amq\\.default$`, read: own };
}

/** `rabbitmqctl set_permissions …` granting them (quoted for a POSIX shell). */
export function setPermissionsCommand(prefix: string, user: string, vhost: string): string {
  const p = minimalRabbitPermissions(prefix);
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return `rabbitmqctl set_permissions -p ${q(vhost)} ${q(user)} ${q(p.configure)} ${q(p.write)} ${q(p.read)}`;
}

export interface RefusalContext {
  connection: RabbitConnection;
  queuePrefix: string;
}

/** The BrokerRefusedError for `err` when it is a refusal that waiting will not change; null otherwise. */
export function rabbitRefusal(err: unknown, ctx: RefusalContext): BrokerRefusedError | null {
  if (err instanceof BrokerRefusedError) return err; // said already
  const c = ctx.connection;
  const what = `RabbitMQ at ${c.address}`;
  const cause = describe(err);
  const tls = c.tls
    ? describeTlsFailure(err, {
      broker: 'RabbitMQ', address: c.address, host: c.host, caVariable: 'RABBITMQ_TLS_CA_FILE', caFile: c.caFile,
      urlVariable: 'AMQP_URL', clientCertSetting: 'ssl_options.fail_if_no_peer_cert = false in rabbitmq.conf',
    })
    : null;
  if (tls !== null) return new BrokerRefusedError(tls, { cause: err });
  // The login: refused at the handshake (403 before the connection opens).
  if (/Handshake terminated by server: 403|ACCESS[-_]REFUSED - Login/.test(cause)) {
    return new BrokerRefusedError(`${what} refused the login of user '${c.user}' (${cause}); ` +
      'check RABBITMQ_USER and RABBITMQ_PASSWORD (or the user and password in AMQP_URL)', { cause: err });
  }
  // The virtual host: RabbitMQ closes the connection instead of opening it (530 NOT_ALLOWED), which
  // amqplib reports without the reason; either the vhost does not exist or the user may not use it.
  if (/Expected ConnectionOpenOk; got <ConnectionClose|NOT[-_]ALLOWED - (vhost|access to vhost)/.test(cause)) {
    return new BrokerRefusedError(`${what} refused to open the virtual host '${c.vhost}' for user '${c.user}' (${cause}): ` +
      'it does not exist, or the user has no permissions there; check RABBITMQ_VHOST (or the path of AMQP_URL), ' +
      `or create it and grant the user the sweep's permissions: ${setPermissionsCommand(ctx.queuePrefix, c.user, c.vhost)}`,
    { cause: err });
  }
  // A permission: a channel closed with 403 on a declare, bind, publish or consume.
  if (errorCode(err) === 403 || /ACCESS[-_]REFUSED/.test(cause)) {
    const denied = /(?:(configure|write|read) )?access to (\w+) '([^']*)'/.exec(cause);
    const which = denied ? `${denied[1] ? `${denied[1]} ` : ''}access to the ${denied[2]} '${denied[3]}'` : 'an operation on the sweep\'s queues';
    return new BrokerRefusedError(`${what} refused user '${c.user}' ${which} (${cause}); ` +
      `grant the user the sweep's permissions on the virtual host: ${setPermissionsCommand(ctx.queuePrefix, c.user, c.vhost)}`,
    { cause: err });
  }
  return null;
}

/** The session's TLS options (amqps://) and its refusal test, for RabbitSession's options. */
export function sessionSecurity(ctx: RefusalContext): { tls?: { servername?: string; ca?: string }; refusal: (err: unknown) => Error | null } {
  const c = ctx.connection;
  return { ...(c.tls ? { tls: tlsOptions(c.host, c.ca) } : {}), refusal: (err) => rabbitRefusal(err, ctx) };
}
