/**
 * Every fault scenario `npm run faults` runs, in order. One line per module,
 * so scenarios added in parallel merge without conflict.
 */
import type { FaultScenario } from '../types.js';
import { killStormScenarios } from './kill-storm.js';
import { partitionScenarios } from './partition.js';
import { frozenScenarios } from './frozen.js';
import { slowAliveScenarios } from './slow-alive.js';
import { poisonDuplicatesScenarios } from './poison-duplicates.js';
import { brokerRestartScenarios } from './broker-restart.js';
import { securityScenarios } from './security.js';

export const SCENARIOS: FaultScenario[] = [
  ...killStormScenarios,
  ...partitionScenarios,
  ...frozenScenarios,
  ...slowAliveScenarios,
  ...poisonDuplicatesScenarios,
  ...brokerRestartScenarios,
  ...securityScenarios,
];
