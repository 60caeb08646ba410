/**
 * Fault suite, security (issue 9, item 7; issue 10's fail-fast): on each broker,
 *
 * - `tls`: a whole sweep over rediss:// / amqps:// against a private broker whose certificate
 *   is signed by a CA made here with openssl, the CA given with REDIS_TLS_CA_FILE /
 *   RABBITMQ_TLS_CA_FILE, ends in the golden aggregate; `ttg aggregate` by host name with the CA
 *   given through NODE_EXTRA_CA_CERTS instead agrees; a wrong CA and no CA each make a worker
 *   exit 2 at once with one line naming the address and the fix.
 * - `acl`: a user with exactly the minimal permissions the README documents (a Redis ACL
 *   limited to the sweep's prefix; RabbitMQ configure/write/read patterns on the vhost) runs a
 *   whole sweep with retries to the golden aggregate, then `ttg aggregate`, `ttg monitor --once`
 *   and `ttg reset --yes`, which leaves nothing of the sweep behind; a wrong password, a user
 *   lacking one permission (and, on RabbitMQ, a missing vhost) each fail at once with one line.
 *
 * No password appears in any line any process prints. The brokers are private (own ports in
 * 7300–7389, own data directories): the machine's shared brokers are never touched.
 */
import { Redis } from 'ioredis';
import { minimalRabbitPermissions } from '../../backends/rabbitmq/refusals.js';
import { minimalRedisAcl } from '../../backends/redis/refusals.js';
import { PrivateRedis } from '../private-brokers.js';
import type { FaultRunOptions, FaultScenario, FaultScenarioResult } from '../types.js';
import {
  acquireRabbit, Checks, checkRefusal, freePorts, rabbitLeftovers, rabbitPlan, runSweep, runTtg, secret, testCertificates, workerEnv,
} from './security-kit.js';

/** The quick version (npm test) sweeps 10,000 parameters; the full one 100,000 (both have golden figures). */
function sweepSize(options: FaultRunOptions): { total: number; chunkSize: number; workers: number } {
  return options.quick ? { total: 10_000, chunkSize: 500, workers: 2 } : { total: 100_000, chunkSize: 1000, workers: 3 };
}

/** Failed attempts on purpose, so the retry path (delayed retries, dead-letter exchange) runs under the same permissions. */
const WITH_RETRIES = { SIMULATE_FAULT_RATE: 0.2, MAX_RETRIES: 12, RETRY_DELAY_MS: 20 } as const;

async function guarded(checks: Checks, body: () => Promise<void>): Promise<FaultScenarioResult> {
  try {
    await body();
  } catch (err) {
    checks.expect(false, `the scenario stopped: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  }
  return checks.result();
}

// ---------------------------------------------------------------------------------------------- Redis

async function redisTls(options: FaultRunOptions): Promise<FaultScenarioResult> {
  const checks = new Checks('tls', 'redis', options);
  const password = secret('redis-tls-pw');
  checks.secrets(password);
  const certs = testCertificates();
  const [tlsPort] = await freePorts(1);
  // TLS only: the plain port is off, so nothing of the sweep can travel in clear.
  const redis = new PrivateRedis({ port: 0, tls: { port: tlsPort!, certs }, args: ['--requirepass', password] });
  return guarded(checks, async () => {
    await redis.start();
    checks.note(`private redis-server with TLS only on 127.0.0.1:${tlsPort} (a CA and server certificate made with openssl)`);
    const prefix = secret('sec-tls');
    const address = `127.0.0.1:${tlsPort}`;
    const url = `rediss://:${password}@127.0.0.1:${tlsPort}`;
    const size = sweepSize(options);
    await runSweep(checks, { label: 'sweep over rediss:// with REDIS_TLS_CA_FILE', env: workerEnv('redis', prefix, { REDIS_URL: url, REDIS_TLS_CA_FILE: certs.caFile }), ...size });
    // By host name (SNI, the certificate's DNS name) and with Node's own variable instead of ttg's.
    const viaNode = checks.record(await runTtg(['aggregate', '--json'], {
      ...workerEnv('redis', prefix, { REDIS_URL: `rediss://:${password}@localhost:${tlsPort}`, NODE_EXTRA_CA_CERTS: certs.caFile }),
    }), false);
    checks.expect(viaNode.code === 0 && JSON.parse(viaNode.stdout.trim().split('\n').at(-1) ?? '{}')['total_params'] === size.total,
      `ttg aggregate via localhost with NODE_EXTRA_CA_CERTS: exit 0 with the whole sweep, got ${viaNode.code}: ${viaNode.stderr.slice(-400)}`);
    checks.note('ttg aggregate via rediss://localhost with the CA in NODE_EXTRA_CA_CERTS (no REDIS_TLS_CA_FILE) reads the same complete sweep');
    const refused = workerEnv('redis', secret('sec-tls-refused'), { REDIS_URL: url });
    await Promise.all([
      checkRefusal(checks, {
        label: 'a wrong CA (REDIS_TLS_CA_FILE names an unrelated CA)', env: { ...refused, REDIS_TLS_CA_FILE: certs.wrongCaFile },
        cause: /not signed by a CA ttg trusts/, mentions: [address, `REDIS_TLS_CA_FILE=${certs.wrongCaFile}`],
      }),
      checkRefusal(checks, {
        label: 'no CA given', env: refused, cause: /not signed by a CA ttg trusts/, mentions: [address, 'set REDIS_TLS_CA_FILE'],
      }),
    ]);
  }).finally(() => redis.dispose());
}

async function redisAcl(options: FaultRunOptions): Promise<FaultScenarioResult> {
  const checks = new Checks('acl', 'redis', options);
  const pw = { admin: secret('admin-pw'), sweeper: secret('sweeper-pw'), lacking: secret('lacking-pw') };
  checks.secrets(...Object.values(pw));
  const prefix = secret('sec-acl');
  const refusedPrefix = secret('sec-acl-refused');
  const acl = minimalRedisAcl(prefix);
  const refusedAcl = minimalRedisAcl(refusedPrefix);
  const [port] = await freePorts(1);
  const redis = new PrivateRedis({
    port: port!,
    aclLines: [
      'user default off',
      `user admin on >${pw.admin} ~* &* +@all`,
      `user sweeper on >${pw.sweeper} ${acl.join(' ')}`,
      // The minimal ACL of their prefix but one command short: XACK, which of what a sweep without failures
      // runs only the commit script (complete-5.lua) runs.
      `user lacking-command on >${pw.lacking} ${refusedAcl.filter((r) => r !== '+xack').join(' ')}`,
      // The same commands, but the keys of another prefix.
      `user other-keys on >${pw.lacking} ${refusedAcl.map((r) => (r === `~${refusedPrefix}:*` ? '~someone-else:*' : r)).join(' ')}`,
    ],
  });
  const admin = () => new Redis({ host: '127.0.0.1', port: port!, username: 'admin', password: pw.admin, lazyConnect: true, maxRetriesPerRequest: 1 });
  return guarded(checks, async () => {
    await redis.start();
    checks.note(`private redis-server on 127.0.0.1:${port}, default user off; the sweep's user has exactly: ${acl.join(' ')}`);
    const address = `127.0.0.1:${port}`;
    const as = (user: string, password: string, p = prefix) => workerEnv('redis', p, { REDIS_URL: `redis://${user}:${password}@127.0.0.1:${port}` });
    const size = sweepSize(options);
    await runSweep(checks, {
      label: 'sweep as the minimal ACL user (20% of attempts failed on purpose, so retries wait in the delayed set)',
      env: { ...as('sweeper', pw.sweeper), ...WITH_RETRIES, STALE_CHECK_INTERVAL_SECONDS: 0.5, STALE_THRESHOLD_MS: 600 }, ...size,
    });
    for (const args of [['aggregate'], ['monitor', '--once'], ['reset', '--yes']]) {
      const run = checks.record(await runTtg(args, as('sweeper', pw.sweeper)), false);
      checks.expect(run.code === 0, `ttg ${args.join(' ')} as the minimal ACL user exits 0, got ${run.code}: ${run.stderr.slice(-400)}`);
    }
    const client = admin();
    try {
      const left = await client.keys(`${prefix}*`);
      checks.expect(left.length === 0, `ttg reset as the minimal ACL user deletes every key of the sweep; left: ${left.join(' ')}`);
    } finally {
      client.disconnect();
    }
    checks.note('ttg aggregate, ttg monitor --once and ttg reset --yes ran as the minimal ACL user; reset left no key of the sweep');
    await Promise.all([
      checkRefusal(checks, {
        label: 'a wrong password', env: as('sweeper', `not-${pw.sweeper}`, refusedPrefix),
        cause: /refused the login of user 'sweeper'/, mentions: [address, 'REDIS_URL'],
      }),
      checkRefusal(checks, {
        label: 'an ACL without XACK (run only inside the commit script here)',
        env: { ...as('lacking-command', pw.lacking, refusedPrefix), TOTAL_PARAMS: 1000, CHUNK_SIZE: 500 },
        cause: /refused user 'lacking-command' the command XACK/, mentions: [address, 'ACL SETUSER lacking-command +xack'],
      }),
      checkRefusal(checks, {
        label: 'an ACL for the keys of another prefix', env: as('other-keys', pw.lacking, refusedPrefix),
        cause: /refused user 'other-keys' the keys of QUEUE_PREFIX=/, mentions: [address, `~${refusedPrefix}:*`],
      }),
    ]);
  }).finally(() => redis.dispose());
}

// ---------------------------------------------------------------------------------------------- RabbitMQ

async function rabbitTls(options: FaultRunOptions): Promise<FaultScenarioResult> {
  const checks = new Checks('tls', 'rabbitmq', options);
  const user = rabbitPlan.users.tls;
  checks.secrets(...Object.values(rabbitPlan.users).map((u) => u.password));
  const certs = testCertificates();
  return guarded(checks, async () => {
    const rabbit = await acquireRabbit();
    try {
      checks.note(`private RabbitMQ node ${rabbit.node.node} with an AMQPS listener on 127.0.0.1:${rabbit.tlsPort}`);
      const prefix = secret('sec-tls');
      const url = `amqps://${user.name}:${user.password}@127.0.0.1:${rabbit.tlsPort}`;
      const address = `amqps://127.0.0.1:${rabbit.tlsPort}/`;
      const size = sweepSize(options);
      await runSweep(checks, { label: 'sweep over amqps:// with RABBITMQ_TLS_CA_FILE', env: workerEnv('rabbitmq', prefix, { AMQP_URL: url, RABBITMQ_TLS_CA_FILE: certs.caFile }), ...size });
      const viaNode = checks.record(await runTtg(['aggregate', '--json'], {
        ...workerEnv('rabbitmq', prefix, { AMQP_URL: `amqps://${user.name}:${user.password}@localhost:${rabbit.tlsPort}`, NODE_EXTRA_CA_CERTS: certs.caFile }),
      }), false);
      if (checks.expect(viaNode.code === 0 && JSON.parse(viaNode.stdout.trim().split('\n').at(-1) ?? '{}')['total_params'] === size.total,
        `ttg aggregate via localhost with NODE_EXTRA_CA_CERTS: exit 0 with the whole sweep, got ${viaNode.code}: ${viaNode.stderr.slice(-400)}`)) {
        checks.note('ttg aggregate via amqps://localhost with the CA in NODE_EXTRA_CA_CERTS (no RABBITMQ_TLS_CA_FILE) reads the same complete sweep');
      }
      const refused = workerEnv('rabbitmq', secret('sec-tls-refused'), { AMQP_URL: url });
      await Promise.all([
        checkRefusal(checks, {
          label: 'a wrong CA (RABBITMQ_TLS_CA_FILE names an unrelated CA)', env: { ...refused, RABBITMQ_TLS_CA_FILE: certs.wrongCaFile },
          cause: /not signed by a CA ttg trusts/, mentions: [address, `RABBITMQ_TLS_CA_FILE=${certs.wrongCaFile}`],
        }),
        checkRefusal(checks, {
          label: 'no CA given', env: refused, cause: /not signed by a CA ttg trusts/, mentions: [address, 'set RABBITMQ_TLS_CA_FILE'],
        }),
      ]);
    } finally {
      await rabbit.release();
    }
  });
}

async function rabbitAcl(options: FaultRunOptions): Promise<FaultScenarioResult> {
  const checks = new Checks('acl', 'rabbitmq', options);
  const { sweepPrefix: prefix, refusedPrefix, users: { sweeper, lacking } } = rabbitPlan;
  checks.secrets(...Object.values(rabbitPlan.users).map((u) => u.password));
  return guarded(checks, async () => {
    const rabbit = await acquireRabbit();
    try {
      const p = minimalRabbitPermissions(prefix);
      checks.note(`private RabbitMQ node ${rabbit.node.node}; the sweep's user has exactly configure ${p.configure}, write ${p.write}, read ${p.read} on vhost /`);
      const as = (user: string, password: string, pre = prefix, vhost = '') =>
        workerEnv('rabbitmq', pre, { AMQP_URL: `amqp://${user}:${password}@127.0.0.1:${rabbit.port}/${vhost}` });
      const address = `amqp://127.0.0.1:${rabbit.port}/`;
      const size = sweepSize(options);
      await runSweep(checks, {
        label: 'sweep as the minimal-permissions user (20% of attempts failed on purpose, so retries go through the retry queue)',
        env: { ...as(sweeper.name, sweeper.password), ...WITH_RETRIES }, ...size,
      });
      for (const args of [['aggregate'], ['monitor', '--once'], ['reset', '--yes']]) {
        const run = checks.record(await runTtg(args, as(sweeper.name, sweeper.password)), false);
        checks.expect(run.code === 0, `ttg ${args.join(' ')} as the minimal-permissions user exits 0, got ${run.code}: ${run.stderr.slice(-400)}`);
      }
      const left = await rabbitLeftovers(rabbit.port, prefix);
      if (checks.expect(left.length === 0, `ttg reset as the minimal-permissions user deletes the sweep's queues and exchanges; left: ${left.join(', ')}`)) {
        checks.note('ttg aggregate, ttg monitor --once and ttg reset --yes ran as the minimal-permissions user; reset left no queue or exchange of the sweep');
      }
      await Promise.all([
        checkRefusal(checks, {
          label: 'a wrong password', env: as(sweeper.name, `not-${sweeper.password}`, refusedPrefix),
          cause: new RegExp(`refused the login of user '${sweeper.name}'`), mentions: [address, 'RABBITMQ_PASSWORD'],
        }),
        checkRefusal(checks, {
          label: 'a missing vhost', env: as(sweeper.name, sweeper.password, refusedPrefix, 'no-such-vhost'),
          cause: /refused to open the virtual host 'no-such-vhost'/, mentions: [`${address}no-such-vhost`, 'RABBITMQ_VHOST'],
        }),
        checkRefusal(checks, {
          label: 'a user without write on amq.default', env: as(lacking.name, lacking.password, refusedPrefix),
          cause: new RegExp(`refused user '${lacking.name}' access to the exchange 'amq.default'`), mentions: [address, 'rabbitmqctl set_permissions'],
        }),
      ]);
    } finally {
      await rabbit.release();
    }
  });
}

export const securityScenarios: FaultScenario[] = [
  { name: 'tls', backend: 'redis', run: redisTls },
  { name: 'acl', backend: 'redis', run: redisAcl },
  { name: 'tls', backend: 'rabbitmq', run: rabbitTls },
  { name: 'acl', backend: 'rabbitmq', run: rabbitAcl },
];
