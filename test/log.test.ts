/**
 * No log line, in any format, carries a password: the logger's redaction on
 * its own, then every error path of `ttg` with a password in REDIS_URL,
 * REDIS_PASSWORD, AMQP_URL and RABBITMQ_PASSWORD.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createLogger, redact, registerSecret } from '../core/log.js';
import { ConfigError } from '../core/errors.js';
import { loadConfig } from '../engine/config.js';
import { createBackend } from '../engine/backend.js';
import { randomPrefix, REDIS_HOST, REDIS_PORT, RABBIT_HOST, RABBIT_PORT, runTtg, testEnv } from './helpers.js';

function capture(format: 'text' | 'json') {
  const lines: string[] = [];
  return { lines, log: createLogger({ level: 'debug', format, write: (l) => lines.push(l) }) };
}

test('URL passwords are masked in the message and in every field, in text and in JSON', () => {
  for (const format of ['text', 'json'] as const) {
    const { lines, log } = capture(format);
    log.error('connect to amqp://bob:hunter2-url@mq:5672/ failed', { error: 'Error: amqp://u:s3cret-field@h:5672/', address: 'redis://:pw-in-field@cache:6379/0', n: 3 });
    log.child('sub').warn('x', { cause: 'rediss://default:other-secret@h' });
    const text = lines.join('\n');
    for (const secret of ['hunter2-url', 's3cret-field', 'pw-in-field', 'other-secret']) assert.ok(!text.includes(secret), `${format}: ${secret} leaked: ${text}`);
    assert.match(text, /amqp:\/\/u:\*\*\*@h:5672/, 'the rest of the URL stays readable');
    if (format === 'json') for (const line of lines) JSON.parse(line);
  }
});

test('a registered secret is masked wherever it appears, even outside a URL', () => {
  registerSecret('pl41n-s3cret');
  for (const format of ['text', 'json'] as const) {
    const { lines, log } = capture(format);
    log.warn('AUTH pl41n-s3cret refused', { error: 'WRONGPASS pl41n-s3cret', ['key-pl41n-s3cret']: 1 });
    assert.ok(!lines.join('\n').includes('pl41n-s3cret'), lines.join('\n'));
  }
});

/** Runs `ttg <args>` in both log formats at debug level; neither stream may contain the secret. */
async function assertNoLeakFromProcess(secret: string, args: string[], extra: Record<string, string | number>, expectCode: number) {
  await Promise.all((['text', 'json'] as const).map(async (format) => {
    const r = await runTtg(args, testEnv({ LOG_LEVEL: 'debug', LOG_FORMAT: format, CONNECT_TIMEOUT_SECONDS: 0.5, ...extra }), 30_000);
    assert.equal(r.code, expectCode, `${format} ${args.join(' ')}: ${r.stderr}`);
    for (const [name, out] of [['stderr', r.stderr], ['stdout', r.stdout]] as const) {
      assert.ok(!out.includes(secret), `${format} ${args.join(' ')}: the password is in ${name}:\n${out}`);
    }
  }));
}

/**
 * The same error path in-process (cheaper than a process per case): the
 * backend's logs at debug level in both formats, and the error line as
 * `ttg` prints it (`redact(message)`), must not contain the secret.
 */
async function assertNoLeakInProcess(secret: string, env: Record<string, string | number>, call: 'init' | 'readResults') {
  const lines: string[] = [];
  const config = loadConfig(Object.fromEntries(Object.entries({ USE_QUEUE: 'true', CONNECT_TIMEOUT_SECONDS: 0.3, QUEUE_PREFIX: randomPrefix('leak'), ...env }).map(([k, v]) => [k, String(v)])));
  await Promise.all((['text', 'json'] as const).map(async (format) => {
    const log = createLogger({ level: 'debug', format, write: (l) => lines.push(l) });
    const backend = await createBackend({ config, workerId: '0', log });
    try {
      const attempt = call === 'init' ? backend.init({ totalParams: 100, chunkSize: 10, kernel: 'placeholder' }) : backend.readResults();
      await assert.rejects(attempt, (err: Error) => {
        lines.push(`ttg worker: ${redact(err.message)}`);
        return true;
      });
    } finally {
      await backend.close().catch(() => {});
    }
  }));
  const text = lines.join('\n');
  assert.ok(lines.length >= 2, 'the error paths were taken');
  assert.ok(!text.includes(secret), `the password leaked:\n${text}`);
}

test('no password reaches a log line or the error line on any broker error path, in text or JSON', async () => {
  const pw = () => `pw-${randomBytes(6).toString('hex')}`;
  const redisUp = { QUEUE_BACKEND: 'redis' };
  const rabbitUp = { QUEUE_BACKEND: 'rabbitmq' };
  const cases: Array<[string, Record<string, string | number>, 'init' | 'readResults']> = [];
  let s: string;
  // Unreachable brokers (connection refused, retried until CONNECT_TIMEOUT_SECONDS).
  s = pw(); cases.push([s, { ...redisUp, REDIS_URL: `redis://user:${s}@127.0.0.1:1/0` }, 'init']);
  s = pw(); cases.push([s, { ...redisUp, REDIS_HOST: '127.0.0.1', REDIS_PORT: 1, REDIS_PASSWORD: s }, 'init']);
  s = pw(); cases.push([s, { ...rabbitUp, AMQP_URL: `amqp://user:${s}@127.0.0.1:1/v` }, 'init']);
  s = pw(); cases.push([s, { ...rabbitUp, RABBITMQ_HOST: '127.0.0.1', RABBITMQ_PORT: 1, RABBITMQ_PASSWORD: s }, 'init']);
  // Reachable brokers that refuse the password.
  s = pw(); cases.push([s, { ...redisUp, REDIS_URL: `redis://nobody:${s}@${REDIS_HOST}:${REDIS_PORT}` }, 'init']);
  s = pw(); cases.push([s, { ...redisUp, REDIS_URL: `redis://nobody:${s}@${REDIS_HOST}:${REDIS_PORT}` }, 'readResults']);
  s = pw(); cases.push([s, { ...rabbitUp, AMQP_URL: `amqp://guest:${s}@${RABBIT_HOST}:${RABBIT_PORT}/` }, 'init']);
  s = pw(); cases.push([s, { ...rabbitUp, RABBITMQ_HOST: RABBIT_HOST, RABBITMQ_PORT: RABBIT_PORT, RABBITMQ_PASSWORD: s }, 'readResults']);
  await Promise.all(cases.map(([secret, env, call]) => assertNoLeakInProcess(secret, env, call)));
});

test('configuration errors that quote a URL never echo its password', () => {
  for (const [name, value] of [['REDIS_URL', 'http://user:SECRET@cache:6379'], ['REDIS_URL', 'redis://user:SECRET@cache:6379/not-a-db'], ['AMQP_URL', 'mqtt://user:SECRET@mq']]) {
    const secret = `cfg-${randomBytes(6).toString('hex')}`;
    assert.throws(() => loadConfig({ [name]: value.replace('SECRET', secret) }), (err: Error) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.ok(!err.message.includes(secret), err.message);
      return true;
    });
  }
});

test('through the real command: a password in REDIS_URL or RABBITMQ_PASSWORD never reaches stderr or stdout', async () => {
  const redisPw = `pw-${randomBytes(6).toString('hex')}`;
  const rabbitPw = `pw-${randomBytes(6).toString('hex')}`;
  await Promise.all([
    // Redis refuses the login: a configuration error, exit 2 at once (README "Security").
    assertNoLeakFromProcess(redisPw, ['worker'], { USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', REDIS_URL: `redis://nobody:${redisPw}@${REDIS_HOST}:${REDIS_PORT}` }, 2),
    assertNoLeakFromProcess(rabbitPw, ['worker'], { USE_QUEUE: 'true', QUEUE_BACKEND: 'rabbitmq', RABBITMQ_PORT: 1, RABBITMQ_PASSWORD: rabbitPw }, 1),
  ]);
});
