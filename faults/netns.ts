/**
 * Workers as separate hosts, and a network that can cut one of them off.
 *
 * 'netns': each host is a network namespace with a veth pair into a bridge
 * in the root namespace (10.71.S.1/24 on the bridge, .10+i for host i). The
 * brokers listen on 127.0.0.1 only, so a TCP forwarder (test/relay.ts's
 * TcpRelay, run by this process in the root namespace) listens on the bridge
 * address and forwards to the broker; workers are started with
 * `ip netns exec` and reach the broker at that address. cut(i) sets host i's
 * bridge-side veth down: its packets are silently dropped (no reset, no
 * error), as when a node loses its network; its open TCP connections stall
 * and resume, or time out, when heal(i) sets it up again.
 *
 * 'relay' (where namespaces cannot be made: not root, no `ip`): each host
 * reaches the broker through its own TcpRelay on 127.0.0.1; cut(i) takes it
 * down (connections cut, new ones refused), heal(i) brings it back.
 *
 * Names carry the creating process's pid (base 36), so that leftovers of a
 * process that died before close() are found and removed by the next
 * create(); close() runs in a finally block and removes everything made.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { TcpRelay } from '../test/relay.js';
import type { BrokerAddress } from './access.js';

const run = promisify(execFile);

/** Ports of this suite's forwarders and relays (the fault suite's private range). */
const PORTS = { first: 7100, last: 7199 } as const;

export interface HostNetwork {
  readonly variant: 'netns' | 'relay';
  /** Why the fallback ran, when it did. */
  readonly fallbackReason: string | null;
  /** The address host i's workers reach the broker at. */
  via(i: number): BrokerAddress;
  /** The command that runs a worker on host i (empty: the root namespace). */
  wrap(i: number): string[];
  cut(i: number): Promise<void>;
  heal(i: number): Promise<void>;
  close(): Promise<void>;
}

async function ip(args: string[]): Promise<string> {
  const { stdout } = await run('ip', args, { timeout: 20_000 });
  return stdout;
}

let labs = 0;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes namespaces and bridges left by fault runs whose process is gone. */
async function removeLeftovers(): Promise<void> {
  const owner = (name: string) => {
    const m = /^(?:ttgf-|tfb|tfv)([0-9a-z]+)x\d+/.exec(name);
    return m ? parseInt(m[1]!, 36) : null;
  };
  for (const line of (await ip(['netns', 'list'])).split('\n')) {
    const name = line.split(' ')[0]!;
    const pid = owner(name);
    if (pid !== null && !alive(pid)) await ip(['netns', 'del', name]).catch(() => {});
  }
  // Bridges and bridge-side veths (a veth whose namespace outlived its name: sockets still draining in it).
  for (const line of (await ip(['-o', 'link', 'show'])).split('\n')) {
    const name = /^\d+: (tf[bv][^:@]+)/.exec(line)?.[1];
    const pid = name ? owner(name) : null;
    if (name && pid !== null && !alive(pid)) await ip(['link', 'del', name]).catch(() => {});
  }
}

/** A /24 under 10.71/16 that no interface here uses yet (`index` keeps this process's networks apart). */
async function freeSubnet(index: number): Promise<number> {
  const used = await ip(['-o', 'addr', 'show']);
  const start = (process.pid * 7 + index * 13) % 250;
  for (let k = 0; k < 250; k++) {
    const s = ((start + k) % 250) + 1;
    if (!used.includes(`10.71.${s}.`)) return s;
  }
  throw new Error('no free 10.71.x.0/24 subnet for the namespaces');
}

/** Starts a relay on the first free port of the suite's range at `host`. */
async function relayOn(target: BrokerAddress, host: string): Promise<TcpRelay> {
  for (let port = PORTS.first; port <= PORTS.last; port++) {
    const relay = new TcpRelay(target.host, target.port, host);
    relay.port = port;
    try {
      await relay.up();
      return relay;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  throw new Error(`no free port in ${PORTS.first}–${PORTS.last} on ${host}`);
}

class NamespaceNetwork implements HostNetwork {
  readonly variant = 'netns' as const;
  readonly fallbackReason = null;
  readonly #tag: string;
  readonly #hosts: number;
  readonly #subnet: number;
  #forwarder: TcpRelay | null = null;
  #made: { namespaces: string[]; bridge: string | null } = { namespaces: [], bridge: null };

  constructor(tag: string, hosts: number, subnet: number) {
    this.#tag = tag;
    this.#hosts = hosts;
    this.#subnet = subnet;
  }

  get #bridge() {
    return `tfb${this.#tag}`;
  }

  #ns(i: number) {
    return `ttgf-${this.#tag}-h${i}`;
  }

  #hostSide(i: number) {
    return `tfv${this.#tag}h${i}`;
  }

  async build(target: BrokerAddress): Promise<void> {
    const net = `10.71.${this.#subnet}`;
    await ip(['link', 'add', this.#bridge, 'type', 'bridge']);
    this.#made.bridge = this.#bridge;
    await ip(['addr', 'add', `${net}.1/24`, 'dev', this.#bridge]);
    await ip(['link', 'set', this.#bridge, 'up']);
    for (let i = 0; i < this.#hosts; i++) {
      const ns = this.#ns(i);
      const inner = `tfv${this.#tag}n${i}`;
      await ip(['netns', 'add', ns]);
      this.#made.namespaces.push(ns);
      await ip(['link', 'add', this.#hostSide(i), 'type', 'veth', 'peer', 'name', inner]);
      await ip(['link', 'set', inner, 'netns', ns]);
      await ip(['link', 'set', this.#hostSide(i), 'master', this.#bridge]);
      await ip(['link', 'set', this.#hostSide(i), 'up']);
      await ip(['-n', ns, 'addr', 'add', `${net}.${10 + i}/24`, 'dev', inner]);
      await ip(['-n', ns, 'link', 'set', inner, 'up']);
      await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    this.#forwarder = await relayOn(target, `${net}.1`);
  }

  via(): BrokerAddress {
    return { host: `10.71.${this.#subnet}.1`, port: this.#forwarder!.port };
  }

  wrap(i: number): string[] {
    return ['ip', 'netns', 'exec', this.#ns(i)];
  }

  async cut(i: number): Promise<void> {
    await ip(['link', 'set', this.#hostSide(i), 'down']);
  }

  async heal(i: number): Promise<void> {
    await ip(['link', 'set', this.#hostSide(i), 'up']);
  }

  async close(): Promise<void> {
    await this.#forwarder?.down();
    this.#forwarder = null;
    // Deleting a veth end deletes its peer too. Done by name, before the namespaces: a namespace whose
    // sockets are still retransmitting into a cut link outlives its name, and its veth with it.
    for (let i = 0; i < this.#made.namespaces.length; i++) await ip(['link', 'del', this.#hostSide(i)]).catch(() => {});
    for (const ns of this.#made.namespaces.splice(0)) await ip(['netns', 'del', ns]).catch(() => {});
    if (this.#made.bridge) await ip(['link', 'del', this.#made.bridge]).catch(() => {});
    this.#made.bridge = null;
  }
}

class RelayNetwork implements HostNetwork {
  readonly variant = 'relay' as const;
  readonly fallbackReason: string | null;
  readonly #relays: TcpRelay[];

  constructor(relays: TcpRelay[], reason: string | null) {
    this.#relays = relays;
    this.fallbackReason = reason;
  }

  via(i: number): BrokerAddress {
    return { host: '127.0.0.1', port: this.#relays[i]!.port };
  }

  wrap(): string[] {
    return [];
  }

  cut(i: number): Promise<void> {
    return this.#relays[i]!.down();
  }

  heal(i: number): Promise<void> {
    return this.#relays[i]!.up();
  }

  async close(): Promise<void> {
    for (const r of this.#relays) await r.down();
  }
}

/**
 * `hosts` hosts reaching the broker at `target`: namespaces where they can be
 * made, else relays (`TTG_FAULT_PARTITION=relay` asks for the relays).
 */
export async function hostNetwork(hosts: number, target: BrokerAddress): Promise<HostNetwork> {
  let reason: string | null = process.env['TTG_FAULT_PARTITION'] === 'relay' ? 'TTG_FAULT_PARTITION=relay' : null;
  if (reason === null) {
    try {
      const index = labs++;
      await removeLeftovers();
      const lab = new NamespaceNetwork(`${process.pid.toString(36)}x${index}`, hosts, await freeSubnet(index));
      try {
        await lab.build(target);
        return lab;
      } catch (err) {
        await lab.close();
        throw err;
      }
    } catch (err) {
      reason = `network namespaces could not be made (${(err as Error).message.split('\n')[0]})`;
    }
  }
  const relays: TcpRelay[] = [];
  for (let i = 0; i < hosts; i++) relays.push(await relayOn(target, '127.0.0.1'));
  return new RelayNetwork(relays, reason);
}
