/**
 * A TCP relay to a broker that a test can take down and bring back: every
 * relayed connection is cut and new ones are refused while it is down, as in
 * a network cut or a broker restart. Clients connect to `port`.
 */
import net from 'node:net';

export class TcpRelay {
  readonly #target: { host: string; port: number };
  readonly #listenHost: string;
  #server: net.Server | null = null;
  #sockets = new Set<net.Socket>();
  /** The relay's port: chosen by the first up(), kept by later ones. */
  port = 0;

  /** `listenHost`: where clients reach the relay (another address than 127.0.0.1, e.g. a bridge that network namespaces route to). */
  constructor(targetHost: string, targetPort: number, listenHost = '127.0.0.1') {
    this.#target = { host: targetHost, port: targetPort };
    this.#listenHost = listenHost;
  }

  /** Starts accepting connections (again). */
  async up(): Promise<void> {
    if (this.#server) return;
    const server = net.createServer((client) => {
      const upstream = net.connect(this.#target.port, this.#target.host);
      for (const sock of [client, upstream]) {
        this.#sockets.add(sock);
        sock.on('error', () => {});
        sock.on('close', () => {
          this.#sockets.delete(sock);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, this.#listenHost, resolve);
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.#server = server;
  }

  /** Cuts every relayed connection and stops accepting new ones. */
  async down(): Promise<void> {
    const server = this.#server;
    this.#server = null;
    for (const sock of this.#sockets) sock.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** A free TCP port on 127.0.0.1 (for a child's METRICS_PORT). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
