import { workerProcessSuite } from './e2e.js';
import { requireRabbit } from './helpers.js';

workerProcessSuite('rabbitmq', requireRabbit);
