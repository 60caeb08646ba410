/**
 * No log line, in any format, carries a password: the logger's redaction on
 * its own, then every error path of `ttg` with a password in REDIS_URL,
 * REDIS_PASSWORD, AMQP_URL and RABBITMQ_PASSWORD.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createLogger, registerSecret } from '../core/log.js';
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
async function assertNoLeak(secret: string, args: string[], extra: Record<string, string | number>, expectCode: number) {
  await Promise.all((['text', 'json'] as const).map(async (format) => {
    const r = await runTtg(args, testEnv({ LOG_LEVEL: 'debug', LOG_FORMAT: format, CONNECT_TIMEOUT_SECONDS: 1, ...extra }), 30_000);
    assert.equal(r.code, expectCode, `${format} ${args.join(' ')}: ${r.stderr}`);
    for (const [name, out] of [['stderr', r.stderr], ['stdout', r.stdout]] as const) {
      assert.ok(!out.includes(secret), `${format} ${args.join(' ')}: the password is in ${name}:\n${out}`);
    }
  }));
}

test('no password reaches stderr or stdout on any error path, in text or JSON logs', async () => {
  const pw = () => `pw-${randomBytes(6).toString('hex')}`;
  const q = (backend: string) => ({ USE_QUEUE: 'true', QUEUE_BACKEND: backend, QUEUE_PREFIX: randomPrefix('leak') });
  const cases: Array<[string, string[], Record<string, string | number>, number]> = [];
  let s: string;
  // Unreachable brokers (connection refused, retried until CONNECT_TIMEOUT_SECONDS).
  s = pw(); cases.push([s, ['worker'], { ...q('redis'), REDIS_URL: `redis://user:${s}@127.0.0.1:1/0` }, 1]);
  s = pw(); cases.push([s, ['worker'], { ...q('redis'), REDIS_HOST: '127.0.0.1', REDIS_PORT: 1, REDIS_PASSWORD: s }, 1]);
  s = pw(); cases.push([s, ['worker'], { ...q('rabbitmq'), AMQP_URL: `amqp://user:${s}@127.0.0.1:1/v` }, 1]);
  s = pw(); cases.push([s, ['worker'], { ...q('rabbitmq'), RABBITMQ_HOST: '127.0.0.1', RABBITMQ_PORT: 1, RABBITMQ_PASSWORD: s }, 1]);
  // Reachable brokers that refuse the password.
  s = pw(); cases.push([s, ['worker'], { ...q('redis'), REDIS_URL: `redis://nobody:${s}@${REDIS_HOST}:${REDIS_PORT}` }, 1]);
  s = pw(); cases.push([s, ['aggregate'], { ...q('redis'), REDIS_URL: `redis://nobody:${s}@${REDIS_HOST}:${REDIS_PORT}` }, 1]);
  s = pw(); cases.push([s, ['worker'], { ...q('rabbitmq'), AMQP_URL: `amqp://guest:${s}@${RABBIT_HOST}:${RABBIT_PORT}/` }, 1]);
  s = pw(); cases.push([s, ['monitor', '--once'], { ...q('rabbitmq'), RABBITMQ_HOST: RABBIT_HOST, RABBITMQ_PORT: RABBIT_PORT, RABBITMQ_PASSWORD: s }, 1]);
  // Configuration errors that quote the URL.
  s = pw(); cases.push([s, ['worker'], { ...q('redis'), REDIS_URL: `http://user:${s}@cache:6379` }, 2]);
  s = pw(); cases.push([s, ['worker'], { ...q('redis'), REDIS_URL: `redis://user:${s}@cache:6379/not-a-db` }, 2]);
  s = pw(); cases.push([s, ['worker'], { ...q('rabbitmq'), AMQP_URL: `mqtt://user:${s}@mq` }, 2]);
  await Promise.all(cases.map(([secret, args, extra, code]) => assertNoLeak(secret, args, extra, code)));
});
