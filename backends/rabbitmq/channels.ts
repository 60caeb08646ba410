/**
 * The channels of a RabbitMQ connection besides the publish and consumer
 * channels: probes (declare, check, bind, purge, delete), each on a channel
 * of its own so that a refusal (404, 405), which closes its channel, costs
 * nothing else; and extra confirm channels for long runs of publishes.
 *
 * A channel whose probe succeeded is still open and clean: it is kept (up to
 * SPARE_CHANNELS per connection) for the next probe, which then saves the
 * round trip of opening one. Probes run side by side on as many channels:
 * the broker answers each channel in turn, so this is how a start-up's
 * declarations overlap (and how a worker learns quickly that a sweep is over).
 */
import type { Channel, ConfirmChannel, Message } from 'amqplib';
import type { Logger } from '../../core/log.js';
import { describe } from './names.js';
import type { Link } from './session.js';

/** Channels of successful probes kept open per connection, about as many as a start-up runs at once. */
const SPARE_CHANNELS = 8;

export async function openChannel(link: Link, log: Logger): Promise<Channel> {
  const ch = await link.conn.createChannel();
  ch.on('error', (err: Error) => log.debug(`RabbitMQ channel error: ${describe(err)}`));
  return ch;
}

/** Runs fn (plain RPCs only: no consumers) on a channel of its own, a spare one when there is one. */
export async function probe<T>(link: Link, log: Logger, fn: (ch: Channel) => Promise<T>): Promise<T> {
  const ch = link.spares.pop() ?? (await openSpare(link, log));
  let ok = false;
  try {
    const result = await fn(ch);
    ok = true;
    return result;
  } finally {
    if (ok && !link.lost && link.spares.length < SPARE_CHANNELS) link.spares.push(ch);
    else ch.close().catch(() => {});
  }
}

async function openSpare(link: Link, log: Logger): Promise<Channel> {
  const ch = await openChannel(link, log);
  ch.once('close', () => {
    const i = link.spares.indexOf(ch);
    if (i >= 0) link.spares.splice(i, 1);
  });
  return ch;
}

/**
 * A confirm channel of its own, for a long run of publishes (the sweep's tasks): the ones on the
 * publish channel (results, the join record) are then not queued behind thousands of them. Returned
 * messages are noted on the link, as the publish channel's are; `onError` sees a refusal.
 */
export async function openPublisher(link: Link, log: Logger, onError: (err: Error) => void): Promise<ConfirmChannel> {
  const ch = await link.conn.createConfirmChannel();
  ch.on('error', (err: Error) => {
    log.debug(`RabbitMQ channel error: ${describe(err)}`);
    onError(err);
  });
  ch.on('return', (msg: Message) => {
    if (typeof msg.properties.messageId === 'string') link.returned.add(msg.properties.messageId);
  });
  return ch;
}
