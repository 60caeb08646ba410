import { workerProcessSuite } from './e2e.js';
import { requireRedis } from './helpers.js';

workerProcessSuite('redis', requireRedis);
