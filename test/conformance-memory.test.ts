import { conformanceSuite } from './conformance.js';

conformanceSuite({
  kind: 'memory',
  requireServer: async () => {},
  env: {},
  // In-process: a crashed worker's entries stay pending until their idle time passes the stale threshold.
  crash: async (backend) => {
    await backend.close();
  },
});
