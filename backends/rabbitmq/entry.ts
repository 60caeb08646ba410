/** The RabbitMQ backend's registry entry: its variables, and the adapter loaded (with amqplib) only when used. */
import type { BackendEntry } from '../types.js';
import { readRabbitEnv, RABBITMQ_VARIABLES, type RabbitConnection } from './options.js';

export const rabbitmqBackend: BackendEntry<RabbitConnection> = {
  variables: RABBITMQ_VARIABLES,
  readEnv: readRabbitEnv,
  async create(options) {
    const { RabbitBackend } = await import('./backend.js');
    return new RabbitBackend(options);
  },
};
