import { after } from 'node:test';
import { connect, type ChannelModel } from 'amqplib';
import { conformanceSuite } from './conformance.js';
import { RABBIT_HOST, RABBIT_PORT, requireRabbit } from './helpers.js';

let raw: ChannelModel | null = null;
after(async () => {
  await raw?.close().catch(() => {});
});

conformanceSuite({
  kind: 'rabbitmq',
  requireServer: requireRabbit,
  env: { RABBITMQ_HOST: RABBIT_HOST, RABBITMQ_PORT: String(RABBIT_PORT) },
  broker: { host: RABBIT_HOST, port: RABBIT_PORT, portVariable: 'RABBITMQ_PORT' },
  redeliversByItself: true,
  injectTask: async (prefix, fields) => {
    raw ??= await connect(`amqp://guest:guest@${RABBIT_HOST}:${RABBIT_PORT}/`);
    const ch = await raw.createConfirmChannel();
    ch.sendToQueue(`${prefix}.tasks`, Buffer.from(JSON.stringify(fields)), { persistent: true });
    await ch.waitForConfirms();
    await ch.close();
  },
});
