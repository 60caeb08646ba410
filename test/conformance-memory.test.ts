import { conformanceSuite } from './conformance.js';
import { enqueueRawTask } from '../backends/memory.js';

conformanceSuite({
  kind: 'memory',
  requireServer: async () => {},
  env: {},
  broker: null,
  redeliversByItself: false,
  injectTask: async (prefix, fields) => enqueueRawTask(prefix, fields),
});
