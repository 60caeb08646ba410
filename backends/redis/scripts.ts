/**
 * The Lua scripts of backends/redis/ (`<name>-<number of keys>.lua`, each
 * opening with a header listing its KEYS, ARGV and return codes): loaded
 * once per process, and the one place where their return codes become
 * outcomes or error classes, so callers see the same words whatever the
 * backend (core/outcomes.ts, core/errors.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { SettingsMismatchError, TtgError } from '../../core/errors.js';
import { mismatchMessage, parseKernelField, settingsDifference, type SweepSettings } from '../../core/sweep.js';

/** The scripts in backends/redis/, `<name>-<number of keys>.lua` (a `.lua` file without a key count is an include, see withIncludes). */
const SCRIPT_FILES = ['init-7', 'read-3', 'complete-5', 'fail-7', 'promote-2', 'touch-1', 'lease-1', 'trim-1', 'redrive-7'] as const;
export type ScriptName = 'init' | 'read' | 'complete' | 'fail' | 'promote' | 'touch' | 'lease' | 'trim' | 'redrive';
interface ScriptSource {
  command: string;
  numberOfKeys: number;
  lua: string;
}

let scriptSources: Map<ScriptName, ScriptSource> | null = null;

/**
 * Reads the .lua files once per process. They are not copied into dist/:
 * this module runs as dist/backends/redis/*.js, so they live three levels
 * up in backends/redis/ (or beside this file when it runs from source).
 */
export function loadScripts(): Map<ScriptName, ScriptSource> {
  if (scriptSources) return scriptSources;
  const candidates = [new URL('../../../backends/redis/', import.meta.url), new URL('./', import.meta.url)];
  const dir = candidates.find((url) => existsSync(new URL('init-7.lua', url)));
  if (!dir) throw new TtgError(`the Redis backend's Lua scripts are missing: looked in ${candidates.map((u) => u.pathname).join(' and ')}`);
  const sources = new Map<ScriptName, ScriptSource>();
  for (const file of SCRIPT_FILES) {
    const [, name, keys] = /^(.+)-(\d+)$/.exec(file)!;
    sources.set(name as ScriptName, {
      command: `ttg_${name}`,
      numberOfKeys: Number(keys),
      lua: withIncludes(readFileSync(new URL(`${file}.lua`, dir), 'utf8'), dir),
    });
  }
  scriptSources = sources;
  return sources;
}

/**
 * Replaces each `--- @include "NAME"` line by the text of NAME.lua beside the
 * scripts (as BullMQ's loader does), so Lua that several scripts need, such
 * as trim-acknowledged.lua, is written once and still runs inside each
 * script's one atomic call.
 */
function withIncludes(lua: string, dir: URL): string {
  return lua.replace(/^--- @include "([\w-]+)"$/gm, (_, name: string) => {
    const file = new URL(`${name}.lua`, dir);
    if (!existsSync(file)) throw new TtgError(`the Redis script include ${name}.lua is missing from ${dir.pathname}`);
    return readFileSync(file, 'utf8');
  });
}

export type Outcome =
  | 'created' | 'joined' | 'published' | 'duplicate' | 'retried' | 'dead-lettered' | 'not-owner' | 'sweep-gone'
  | 'lease-held' | 'lease-taken';

/**
 * The one place where script return codes become outcomes or errors (each
 * script's header lists its codes): 0 joined / lease taken by another,
 * 1 created / published / retried / lease held, 2 duplicate / dead-lettered,
 * -1 not the owner, -2 settings mismatch, -3 the sweep is gone. touch-1.lua
 * and trim-1.lua return a count, not a code; redrive-7.lua and read-3.lua lists that redrive.ts and deliveries.ts read.
 */
export function outcomeOf(script: ScriptName, reply: unknown, context: { prefix: string; settings?: SweepSettings }): Outcome {
  const code = Number(Array.isArray(reply) ? reply[0] : reply);
  switch (`${script}:${code}`) {
    case 'init:1': return 'created';
    case 'init:0': return 'joined';
    case 'init:-2': {
      const [, totalParams, chunkSize, kernel] = reply as unknown[];
      const theirs: SweepSettings = {
        totalParams: Number(totalParams), chunkSize: Number(chunkSize), ...(parseKernelField(String(kernel)) ?? { kernel: String(kernel) }),
      };
      const diff = settingsDifference(theirs, context.settings!) ?? 'the stored settings are unreadable';
      return raise(new SettingsMismatchError(mismatchMessage(diff, context.prefix)));
    }
    case 'complete:1': return 'published';
    case 'complete:2': return 'duplicate';
    case 'fail:1': return 'retried';
    case 'fail:2': return 'dead-lettered';
    case 'complete:-1':
    case 'fail:-1': return 'not-owner';
    case 'init:-3':
    case 'complete:-3': return 'sweep-gone';
    case 'lease:1': return 'lease-held';
    case 'lease:0': return 'lease-taken';
  }
  return raise(new TtgError(`unexpected reply from the Redis script ${script}: ${JSON.stringify(reply)}`));
}

function raise(error: Error): never {
  throw error;
}

