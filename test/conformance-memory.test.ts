import { conformanceSuite } from './conformance.js';
import { enqueueRawTask } from '../backends/memory.js';

conformanceSuite({
  kind: 'memory',
  requireServer: async () => {},
  env: {},
  // In-process: a closed worker's entries stay pending until their idle time passes the stale threshold.
  crash: async (backend) => {
    await backend.close();
  },
  injectTask: async (prefix, fields) => enqueueRawTask(prefix, fields),
});
