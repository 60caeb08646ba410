/**
 * The worker's HTTP endpoints on METRICS_PORT (docs/design.md), for the kubelet
 * and Prometheus:
 *   /healthz  200 while the process is alive and its event loop turns (the
 *             answer comes from that loop, so a blocked loop fails the probe);
 *             503 once the worker has hit a fatal error and is on its way out
 *   /readyz   200 once connected to the broker and the sweep is initialized
 *             (static mode: once the thread pool is up); 503 before, and
 *             while a lost broker connection is being retried
 *   /metrics  Prometheus text format (engine/metrics.ts)
 * A port that is taken (several workers on one machine) is not fatal: the
 * worker says so once and runs without endpoints.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../core/log.js';
import type { WorkerMetrics } from './metrics.js';

export interface Probe {
  ok: boolean;
  /** Said in the body, so `curl /readyz` tells why. */
  detail: string;
}

export interface EndpointOptions {
  port: number;
  metrics: WorkerMetrics;
  health: () => Probe;
  readiness: () => Probe;
  log: Logger;
  /** Interface to listen on; all of them by default (the kubelet probes the pod's address). */
  host?: string;
}

export class WorkerEndpoints {
  readonly #opts: EndpointOptions;
  #server: Server | null = null;

  constructor(opts: EndpointOptions) {
    this.#opts = opts;
  }

  /** The port listened on (useful with port 0 in tests), or null when not listening. */
  get port(): number | null {
    const address = this.#server?.address();
    return address && typeof address === 'object' ? (address as AddressInfo).port : null;
  }

  /** Starts listening; resolves once listening, or once the failure to listen has been logged. */
  async start(): Promise<void> {
    const { metrics, health, readiness, log } = this.#opts;
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const probe = (p: Probe) => {
        res.writeHead(p.ok ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`${p.ok ? 'ok' : 'not ok'}: ${p.detail}\n`);
      };
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
      } else if (path === '/healthz') {
        probe(health());
      } else if (path === '/readyz') {
        probe(readiness());
      } else if (path === '/metrics') {
        metrics.registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
          (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${String(err)}\n`),
        );
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /readyz or /metrics\n');
      }
    });
    // Probes come every few seconds: keep-alive sockets would only hold the process open at exit.
    server.keepAliveTimeout = 1000;
    await new Promise<void>((resolve) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const why = err.code === 'EADDRINUSE' ? 'is in use (another worker on this machine?)' : `cannot be opened (${err.message})`;
        log.warn(`METRICS_PORT ${this.#opts.port} ${why}: running without /healthz, /readyz and /metrics; ` +
          'give each worker its own METRICS_PORT, or 0 to turn them off');
        resolve();
      });
      server.listen({ port: this.#opts.port, host: this.#opts.host }, () => {
        this.#server = server;
        log.debug(`serving /healthz, /readyz and /metrics on port ${this.port}`);
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    const server = this.#server;
    this.#server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
