/**
 * Fewer, larger writes to the broker (see coalesceWrites).
 */
import type { Duplex } from 'node:stream';
import type { ChannelModel } from 'amqplib';

/**
 * amqplib writes every frame to the socket on its own (a publish, an ack:
 * one write each, hence one system call and, with noDelay, one packet each).
 * Corking the socket at the first write of a turn and uncorking it once the
 * turn's synchronous work is done sends everything written meanwhile in one
 * writev: hundreds of results and acks travel together, as the broker reads
 * them anyway. Nothing waits longer than the current turn. (The socket is
 * amqplib's `connection.stream`; without one this does nothing.)
 */
export function coalesceWrites(conn: ChannelModel): void {
  const stream = (conn as unknown as { connection?: { stream?: Duplex } }).connection?.stream;
  if (!stream || typeof stream.cork !== 'function' || typeof stream.uncork !== 'function') return;
  const write = stream.write;
  let corked = false;
  const uncork = () => {
    corked = false;
    stream.uncork();
  };
  stream.write = function coalescedWrite(this: Duplex, ...args: Parameters<Duplex['write']>): boolean {
    if (!corked) {
      corked = true;
      stream.cork();
      process.nextTick(uncork);
    }
    return write.apply(stream, args);
  } as Duplex['write'];
}
