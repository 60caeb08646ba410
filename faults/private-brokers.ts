/**
 * Private brokers for the fault suite: a Redis and a RabbitMQ node started by the test on
 * their own ports and data directories, so they can be restarted, killed or given TLS
 * without touching the machine's shared brokers (127.0.0.1:6379 and :5672).
 *
 * Both are plain child processes of the test; `stopAll()` (also run on process exit)
 * takes down every one still running.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const running = new Set<{ killNow(): void }>();
process.once('exit', () => {
  for (const b of running) b.killNow();
});

/** Resolves when a TCP connect to host:port succeeds; rejects after timeoutMs, naming what it waited for. */
export async function waitForPort(host: string, port: number, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port });
      const done = (v: boolean) => {
        s.destroy();
        resolve(v);
      };
      s.setTimeout(500, () => done(false));
      s.once('connect', () => done(true));
      s.once('error', () => done(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${host}:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves once no process has this pid (a SIGKILLed VM takes a moment to let go of its ports). */
async function pidGone(pid: number | undefined, timeoutMs = 15_000): Promise<void> {
  if (!pid) return;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    if (Date.now() > deadline) throw new Error(`process ${pid} did not exit within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

// ---------------------------------------------------------------------------------------------
// TLS material

export interface TestCertificates {
  dir: string;
  /** The CA that signed the server certificate. */
  caFile: string;
  certFile: string;
  keyFile: string;
  /** A second, unrelated CA: trusting only it must make the TLS handshake fail. */
  wrongCaFile: string;
}

/** A self-signed CA and a server certificate for localhost/127.0.0.1 signed by it, made with openssl. */
export function makeTestCertificates(dir = mkdtempSync(path.join(os.tmpdir(), 'ttg-tls-'))): TestCertificates {
  mkdirSync(dir, { recursive: true });
  const run = (args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
  };
  const ca = (name: string) => {
    run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
      '-keyout', `${name}.key`, '-out', `${name}.pem`]);
  };
  ca('ttg-test-ca');
  ca('ttg-wrong-ca');
  writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  run(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', 'server.key', '-out', 'server.csr']);
  run(['x509', '-req', '-in', 'server.csr', '-CA', 'ttg-test-ca.pem', '-CAkey', 'ttg-test-ca.key', '-CAcreateserial',
    '-days', '2', '-extfile', 'san.ext', '-out', 'server.pem']);
  return {
    dir,
    caFile: path.join(dir, 'ttg-test-ca.pem'),
    certFile: path.join(dir, 'server.pem'),
    keyFile: path.join(dir, 'server.key'),
    wrongCaFile: path.join(dir, 'ttg-wrong-ca.pem'),
  };
}

// ---------------------------------------------------------------------------------------------
// Redis

export interface PrivateRedisOptions {
  /** Plain TCP port; 0 turns plain TCP off (TLS only). */
  port: number;
  /** Persist every write before answering (`appendonly yes`, `appendfsync always`), so a SIGKILL loses nothing. */
  durable?: boolean;
  /** Serve TLS on this port with these certificates (clients are not asked for certificates). */
  tls?: { port: number; certs: TestCertificates };
  /** Extra `--name value` arguments, e.g. ['--requirepass', 's3cret']. */
  args?: string[];
  /** ACL lines written to an ACL file the server loads (e.g. 'user app on >pw ~ttg:* &ttg:* +@all'). */
  aclLines?: string[];
}

export class PrivateRedis {
  readonly dir: string;
  #child: ChildProcess | undefined;
  #log: string;
  #handle = { killNow: () => this.#child?.kill('SIGKILL') };

  constructor(readonly options: PrivateRedisOptions) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), `ttg-redis-${options.port || options.tls?.port}-`));
    this.#log = path.join(this.dir, 'redis.log');
    if (options.aclLines) writeFileSync(path.join(this.dir, 'users.acl'), options.aclLines.join('\n') + '\n');
  }

  /** The port clients should use (TLS when configured, else plain). */
  get port(): number {
    return this.options.tls?.port ?? this.options.port;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  async start(timeoutMs = 10_000): Promise<void> {
    if (this.#child && this.#child.exitCode === null && this.#child.signalCode === null) return;
    const o = this.options;
    const args = ['--bind', '127.0.0.1', '--port', String(o.port), '--dir', this.dir, '--save', '',
      '--logfile', this.#log, '--daemonize', 'no'];
    if (o.durable) args.push('--appendonly', 'yes', '--appendfsync', 'always');
    else args.push('--appendonly', 'no');
    if (o.tls) {
      args.push('--tls-port', String(o.tls.port), '--tls-cert-file', o.tls.certs.certFile, '--tls-key-file',
        o.tls.certs.keyFile, '--tls-ca-cert-file', o.tls.certs.caFile, '--tls-auth-clients', 'no');
    }
    if (o.aclLines) args.push('--aclfile', path.join(this.dir, 'users.acl'));
    args.push(...(o.args ?? []));
    this.#child = spawn('redis-server', args, { stdio: 'ignore' });
    running.add(this.#handle);
    const child = this.#child;
    const failed = new Promise<never>((_, reject) =>
      child.once('exit', (code, signal) => reject(new Error(`private redis-server exited (${code ?? signal}) at start: ${this.logTail()}`))));
    await Promise.race([waitForPort('127.0.0.1', this.port, timeoutMs, 'private redis-server'), failed]);
    failed.catch(() => undefined);
  }

  /** SIGKILL: the harshest restart; with `durable` nothing acknowledged is lost. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    child.kill('SIGKILL');
    await exited(child);
    running.delete(this.#handle);
  }

  /** SIGTERM: Redis's own orderly shutdown. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    child.kill('SIGTERM');
    await exited(child);
    running.delete(this.#handle);
  }

  async restart(how: 'kill' | 'stop' = 'kill'): Promise<void> {
    await (how === 'kill' ? this.kill() : this.stop());
    await this.start();
  }

  logTail(lines = 20): string {
    return existsSync(this.#log) ? readFileSync(this.#log, 'utf8').split('\n').slice(-lines).join('\n') : '(no log)';
  }

  /** Stops the server and removes its data directory. */
  async dispose(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

export interface PrivateRabbitOptions {
  /** AMQP port; the Erlang distribution port is port + 20000 (keep ports ≤ 45000). */
  port: number;
  /** Node name stem; unique per test (default `ttg<port>`). */
  name?: string;
  /** An AMQPS listener on this port with these certificates (clients are not asked for certificates). */
  tls?: { port: number; certs: TestCertificates };
  /** Extra lines for rabbitmq.conf. */
  confLines?: string[];
}

/**
 * A RabbitMQ node of its own: own node name, ports, Mnesia directory and Erlang cookie
 * (HOME is its directory). Starting takes about 6 s on this machine; a restart keeps its
 * durable queues and their messages.
 */
export class PrivateRabbit {
  readonly dir: string;
  readonly node: string;
  #child: ChildProcess | undefined;
  #handle = { killNow: () => this.#killBeam() };

  constructor(readonly options: PrivateRabbitOptions) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), `ttg-rabbit-${options.port}-`));
    this.node = `${options.name ?? `ttg${options.port}`}@localhost`;
    mkdirSync(path.join(this.dir, 'mnesia'), { recursive: true });
    mkdirSync(path.join(this.dir, 'log'), { recursive: true });
    const conf = [`listeners.tcp.default = 127.0.0.1:${options.port}`, 'loopback_users = none'];
    if (options.tls) {
      const c = options.tls.certs;
      conf.push(`listeners.ssl.default = 127.0.0.1:${options.tls.port}`, `ssl_options.cacertfile = ${c.caFile}`,
        `ssl_options.certfile = ${c.certFile}`, `ssl_options.keyfile = ${c.keyFile}`, 'ssl_options.verify = verify_none',
        'ssl_options.fail_if_no_peer_cert = false');
    }
    conf.push(...(options.confLines ?? []));
    writeFileSync(path.join(this.dir, 'rabbitmq.conf'), conf.join('\n') + '\n');
    writeFileSync(path.join(this.dir, 'enabled_plugins'), '[].\n');
    writeFileSync(path.join(this.dir, 'env.conf'), '\n');
  }

  get port(): number {
    return this.options.tls?.port ?? this.options.port;
  }

  #env(): NodeJS.ProcessEnv {
    const d = this.dir;
    return {
      ...process.env,
      HOME: d,
      RABBITMQ_CONF_ENV_FILE: path.join(d, 'env.conf'),
      RABBITMQ_NODENAME: this.node,
      RABBITMQ_NODE_PORT: String(this.options.port),
      RABBITMQ_DIST_PORT: String(this.options.port + 20000),
      RABBITMQ_MNESIA_BASE: path.join(d, 'mnesia'),
      RABBITMQ_LOG_BASE: path.join(d, 'log'),
      RABBITMQ_PID_FILE: path.join(d, 'rabbit.pid'),
      RABBITMQ_CONFIG_FILE: path.join(d, 'rabbitmq.conf'),
      RABBITMQ_ENABLED_PLUGINS_FILE: path.join(d, 'enabled_plugins'),
      ERL_EPMD_ADDRESS: '127.0.0.1',
    };
  }

  /** Runs rabbitmqctl against this node; throws with its output when it fails. */
  ctl(...args: string[]): string {
    const r = spawnSync('/usr/lib/rabbitmq/bin/rabbitmqctl', ['-n', this.node, ...args], { env: this.#env(), encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`rabbitmqctl ${args.join(' ')} on ${this.node} failed: ${r.stderr || r.stdout}`);
    return r.stdout;
  }

  async start(timeoutMs = 60_000): Promise<void> {
    if (this.#child && this.#child.exitCode === null && this.#child.signalCode === null) return;
    this.#child = spawn('/usr/lib/rabbitmq/bin/rabbitmq-server', [], {
      env: this.#env(), stdio: ['ignore', 'ignore', 'ignore'], cwd: this.dir,
    });
    running.add(this.#handle);
    const child = this.#child;
    const failed = new Promise<never>((_, reject) =>
      child.once('exit', (code, signal) => reject(new Error(`private rabbitmq-server ${this.node} exited (${code ?? signal}) at start; logs in ${this.dir}/log`))));
    await Promise.race([waitForPort('127.0.0.1', this.options.port, timeoutMs, `private RabbitMQ ${this.node}`), failed]);
    if (this.options.tls) await Promise.race([waitForPort('127.0.0.1', this.options.tls.port, timeoutMs, `private RabbitMQ ${this.node} (TLS)`), failed]);
    failed.catch(() => undefined);
  }

  #beamPid(): number | undefined {
    const file = path.join(this.dir, 'rabbit.pid');
    if (!existsSync(file)) return this.#child?.pid;
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : this.#child?.pid;
  }

  #killBeam(): void {
    const pid = this.#beamPid();
    try {
      if (pid) process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    this.#child?.kill('SIGKILL');
  }

  /** SIGKILL of the Erlang VM: the broker dies without a goodbye to its clients. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    const beam = this.#beamPid();
    this.#killBeam();
    await exited(child);
    await pidGone(beam);
    running.delete(this.#handle);
  }

  /** `rabbitmqctl stop`: an orderly shutdown (clients get connection.close). */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    const beam = this.#beamPid();
    try {
      this.ctl('stop');
    } catch {
      this.#killBeam();
    }
    await exited(child);
    await pidGone(beam);
    running.delete(this.#handle);
  }

  async restart(how: 'kill' | 'stop' = 'stop'): Promise<void> {
    await (how === 'kill' ? this.kill() : this.stop());
    await this.start();
  }

  /** Adds a user with full permissions on the default vhost (or those given). */
  addUser(user: string, password: string, perms: [string, string, string] = ['.*', '.*', '.*'], vhost = '/'): void {
    this.ctl('add_user', user, password);
    this.ctl('set_permissions', '-p', vhost, user, ...perms);
  }

  async dispose(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Stops every private broker still running (tests call it in `after`). */
export async function stopAllPrivateBrokers(): Promise<void> {
  for (const b of running) b.killNow();
  running.clear();
}
