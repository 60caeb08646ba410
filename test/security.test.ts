/**
 * Security: TLS to both brokers, least-privilege users, and refusals that fail at once with
 * one line (issue 9 item 7, issue 10). The four fault scenarios of faults/scenarios/security.ts
 * run here in their quick form, against private brokers (a TLS Redis, an ACL Redis, a RabbitMQ
 * node with an AMQPS listener); the variables' checks and the documented permissions are
 * tested beside them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, ENV_VARIABLES } from '../engine/config.js';
import { BrokerRefusedError, ConfigError } from '../core/errors.js';
import { REDIS_COMMANDS, minimalRedisAcl, redisRefusal } from '../backends/redis/refusals.js';
import { minimalRabbitPermissions, rabbitRefusal, setPermissionsCommand } from '../backends/rabbitmq/refusals.js';
import { rabbitNames } from '../backends/rabbitmq/names.js';
import { securityScenarios } from '../faults/scenarios/security.js';
import { testCertificates } from '../faults/scenarios/security-kit.js';
import { stopAllPrivateBrokers } from '../faults/private-brokers.js';
import { ROOT } from './helpers.js';

test('the four security scenarios (TLS and least-privilege users, on Redis and RabbitMQ) hold, run at once', { timeout: 180_000 }, async (t) => {
  t.after(() => stopAllPrivateBrokers());
  const lines: string[] = [];
  const results = await Promise.all(securityScenarios.map((s) => s.run({ quick: true, log: (line) => lines.push(line) })));
  for (const r of results) {
    t.diagnostic(`${r.backend}/${r.scenario}: ${r.ok ? 'ok' : 'FAILED'}, ${r.faults_injected} refusals, workers ${JSON.stringify(r.workers.map((w) => w.exit_code))}`);
    for (const note of r.notes) t.diagnostic(`  ${note}`);
  }
  for (const r of results) {
    assert.ok(r.ok, `${r.backend}/${r.scenario} failed:\n${r.notes.join('\n')}`);
    assert.equal(r.secret_leaks, 0);
    assert.equal(r.params_lost, 0);
    assert.equal(r.params_double_counted, 0);
    assert.equal(r.duplicate_results, 0);
  }
  const counts = Object.fromEntries(results.map((r) => [`${r.backend}/${r.scenario}`, r.faults_injected]));
  assert.deepEqual(counts, { 'redis/tls': 2, 'redis/acl': 3, 'rabbitmq/tls': 2, 'rabbitmq/acl': 3 }, 'every refusal case ran');
  for (const r of results) {
    // Refused workers exit 2; sweep workers 0.
    assert.deepEqual(new Set(r.workers.map((w) => w.exit_code)), new Set([0, 2]), `${r.backend}/${r.scenario}: ${JSON.stringify(r.workers)}`);
  }
});

test('REDIS_TLS_CA_FILE and RABBITMQ_TLS_CA_FILE: read before any connection, each bad value one ConfigError naming the variable', () => {
  const certs = testCertificates();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ttg-ca-'));
  try {
    const notPem = path.join(dir, 'not.pem');
    writeFileSync(notPem, 'hello\n');
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ REDIS_URL: 'rediss://h:6380', REDIS_TLS_CA_FILE: path.join(dir, 'missing.pem') }, /^REDIS_TLS_CA_FILE=\S+missing\.pem: no such file; it must name the PEM file of the CA/],
      [{ REDIS_URL: 'rediss://h:6380', REDIS_TLS_CA_FILE: dir }, /^REDIS_TLS_CA_FILE=\S+: a directory, not a file/],
      [{ REDIS_URL: 'rediss://h:6380', REDIS_TLS_CA_FILE: notPem }, /^REDIS_TLS_CA_FILE=\S+not\.pem holds no PEM certificate/],
      [{ REDIS_URL: 'redis://h:6379', REDIS_TLS_CA_FILE: certs.caFile }, /^REDIS_TLS_CA_FILE is set but the connection to Redis is not TLS: give the address as REDIS_URL=rediss:/],
      [{ REDIS_HOST: 'h', REDIS_TLS_CA_FILE: certs.caFile }, /^REDIS_TLS_CA_FILE is set but the connection to Redis is not TLS/],
      [{ AMQP_URL: 'amqps://u:p@h', RABBITMQ_TLS_CA_FILE: path.join(dir, 'missing.pem') }, /^RABBITMQ_TLS_CA_FILE=\S+missing\.pem: no such file/],
      [{ AMQP_URL: 'amqps://u:p@h', RABBITMQ_TLS_CA_FILE: notPem }, /^RABBITMQ_TLS_CA_FILE=\S+ holds no PEM certificate/],
      [{ RABBITMQ_HOST: 'h', RABBITMQ_TLS_CA_FILE: certs.caFile }, /^RABBITMQ_TLS_CA_FILE is set but the connection to RabbitMQ is not TLS: give the address as AMQP_URL=amqps:/],
    ];
    for (const [env, message] of cases) {
      assert.throws(() => loadConfig(env), (err: Error) => {
        assert.ok(err instanceof ConfigError, `${JSON.stringify(env)}: ${err.name}`);
        assert.match(err.message, message);
        assert.equal(err.message.split('\n').length, 1);
        return true;
      }, JSON.stringify(env));
    }
    const ca = readFileSync(certs.caFile, 'utf8');
    const redis = loadConfig({ REDIS_URL: 'rediss://u:pw@cache.example:6380', REDIS_TLS_CA_FILE: certs.caFile }).backends.redis;
    assert.deepEqual([redis.tls, redis.caFile, redis.ca, redis.user], [true, certs.caFile, ca, 'u']);
    const rabbit = loadConfig({ AMQP_URL: 'amqps://bob:pw@mq.example/sweeps', RABBITMQ_TLS_CA_FILE: certs.caFile }).backends.rabbitmq;
    assert.deepEqual([rabbit.tls, rabbit.caFile, rabbit.ca, rabbit.user, rabbit.vhost], [true, certs.caFile, ca, 'bob', 'sweeps']);
    // Without a CA file TLS still works with the system's CAs (and NODE_EXTRA_CA_CERTS).
    assert.equal(loadConfig({ REDIS_URL: 'rediss://cache.example:6380' }).backends.redis.ca, null);
    for (const name of ['REDIS_TLS_CA_FILE', 'RABBITMQ_TLS_CA_FILE']) assert.ok((ENV_VARIABLES as readonly string[]).includes(name), name);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the minimal Redis ACL names every command the Lua scripts run, and the README shows it', () => {
  const dir = path.join(ROOT, 'backends/redis');
  const called = new Set<string>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.lua'))) {
    for (const m of readFileSync(path.join(dir, file), 'utf8').matchAll(/redis\.p?call\(\s*'([A-Za-z]+)'(?:\s*,\s*'([A-Za-z]+)')?/g)) {
      const [name, sub] = [m[1]!.toLowerCase(), m[2]?.toLowerCase()];
      called.add(sub !== undefined && (REDIS_COMMANDS as readonly string[]).includes(`${name}|${sub}`) ? `${name}|${sub}` : name);
    }
  }
  assert.ok(called.size >= 15, `found the scripts' commands (${[...called].join(' ')})`);
  assert.deepEqual([...called].filter((c) => !(REDIS_COMMANDS as readonly string[]).includes(c)), [],
    'a script runs a command the minimal ACL (backends/redis/refusals.ts, README "Security") does not grant');
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  assert.ok(readme.includes(minimalRedisAcl('ttg').join(' ')), 'README shows the minimal ACL for QUEUE_PREFIX=ttg as the code has it');
  assert.ok(readme.includes(setPermissionsCommand('ttg', 'ttg-worker', 'sweeps')), 'README shows the RabbitMQ permissions as the code has them');
});

test('the minimal RabbitMQ permissions cover every name of a sweep and nothing of another prefix', () => {
  const p = minimalRabbitPermissions('ttg');
  const names = rabbitNames('ttg');
  const all = [names.exchange, names.tasks, names.retry, names.dlq, names.results, names.meta, names.ready, names.begun, names.initLock, names.consumer('worker-0')];
  for (const name of all) {
    for (const [kind, pattern] of Object.entries(p)) assert.match(name, new RegExp(pattern), `${kind} covers ${name}`);
  }
  assert.match('amq.default', new RegExp(p.write));
  for (const other of ['ttgx.tasks', 'other.tasks', 'amq.direct', 'xttg.tasks']) {
    for (const pattern of Object.values(p)) assert.doesNotMatch(other, new RegExp(pattern), other);
  }
  // A prefix's regex characters are taken literally.
  assert.doesNotMatch('aXb.tasks', new RegExp(minimalRabbitPermissions('a.b').configure));
});

test('what is a refusal (said at once) and what is retried: the classifiers on the errors Node, ioredis and amqplib give', () => {
  const err = (message: string, code?: string) => Object.assign(new Error(message), code === undefined ? {} : { code });
  const redis = loadConfig({ REDIS_URL: 'rediss://app:pw-xyz@cache.example:6380' }).backends.redis;
  const rabbit = loadConfig({ AMQP_URL: 'amqps://app:pw-xyz@mq.example/sweeps' }).backends.rabbitmq;
  const r = (e: unknown) => redisRefusal(e, { connection: redis, queuePrefix: 'ttg' });
  const q = (e: unknown) => rabbitRefusal(e, { connection: rabbit, queuePrefix: 'ttg' });
  // Waiting may cure these: a name DNS does not know yet, a broker not yet listening, a cut network.
  for (const e of [err('getaddrinfo ENOTFOUND cache.example', 'ENOTFOUND'), err('connect ECONNREFUSED 10.0.0.1:6380', 'ECONNREFUSED'),
    err('connect ETIMEDOUT', 'ETIMEDOUT'), err('read ECONNRESET', 'ECONNRESET'), err('Connection is closed.'),
    err('Socket closed abruptly during opening handshake'), err('LOADING Redis is loading the dataset in memory')]) {
    assert.equal(r(e), null, e.message);
    assert.equal(q(e), null, e.message);
  }
  const tlsCases: Array<[Error, RegExp]> = [
    [err('self-signed certificate in certificate chain', 'SELF_SIGNED_CERT_IN_CHAIN'), /not signed by a CA ttg trusts .*set REDIS_TLS_CA_FILE/],
    [err('unable to verify the first certificate', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'), /not signed by a CA ttg trusts/],
    [err("Hostname/IP does not match certificate's altnames", 'ERR_TLS_CERT_ALTNAME_INVALID'), /not for the host "cache\.example".*REDIS_URL/],
    [err('certificate has expired', 'CERT_HAS_EXPIRED'), /not valid now .*renew it/],
    [Object.assign(err('80ACB3CC:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:ssl3_record.c:350:\n', 'ERR_SSL_WRONG_VERSION_NUMBER'), { reason: 'wrong version number' }),
      /does not speak TLS on this port \(ERR_SSL_WRONG_VERSION_NUMBER: wrong version number\)/],
    [err('tlsv13 alert certificate required', 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'), /client certificate.*tls-auth-clients no/],
  ];
  for (const [e, message] of tlsCases) {
    const refused = r(e);
    assert.ok(refused instanceof BrokerRefusedError && refused.exitCode === 2, e.message);
    assert.match(refused.message, /^Redis at cache\.example:6380 \(TLS\): /);
    assert.match(refused.message, message);
    assert.equal(refused.message.split('\n').length, 1, 'one line');
  }
  assert.match(q(tlsCases[0]![0])!.message, /^RabbitMQ at amqps:\/\/mq\.example:5671\/sweeps \(TLS\): .*set RABBITMQ_TLS_CA_FILE/);
  assert.match(q(tlsCases[5]![0])!.message, /fail_if_no_peer_cert = false/);
  // The same certificate error on a plain connection is no TLS refusal of ours.
  const plain = loadConfig({ REDIS_URL: 'redis://cache.example:6379' }).backends.redis;
  assert.equal(redisRefusal(tlsCases[0]![0], { connection: plain, queuePrefix: 'ttg' }), null);
  // A refusal already said is passed on as it is, not wrapped again.
  const once = r(err('WRONGPASS invalid username-password pair or user is disabled.'))!;
  assert.equal(r(once), once);
  const login = q(err('Handshake terminated by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - Login was refused"'))!;
  assert.match(login.message, /^RabbitMQ at amqps:\/\/mq\.example:5671\/sweeps refused the login of user 'app' .*RABBITMQ_PASSWORD/);
  assert.equal(q(login), login);
  for (const refused of [once, login]) assert.doesNotMatch(refused.message, /pw-xyz/);
});
