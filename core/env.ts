/**
 * Reading environment variables: one helper per kind of value, each
 * throwing a ConfigError whose one-line message names the variable and what
 * it accepts. engine/config.ts and each backend's own options use them.
 */
import { ConfigError } from './errors.js';

export type Env = Record<string, string | undefined>;

/** Reads one variable; an empty value counts as unset. */
export function raw(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

export function integer(env: Env, name: string, def: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = raw(env, name);
  if (v === undefined) return def;
  if (!/^[+]?\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `${min}..${max}`;
    throw new ConfigError(`${name} must be an integer ${range}, got "${v}"`);
  }
  return Number(v);
}

export function decimal(env: Env, name: string, def: number, min: number, max: number): number {
  const v = raw(env, name);
  if (v === undefined) return def;
  const n = Number(v);
  if (!/^[+]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(v) || !Number.isFinite(n) || n < min || n > max) {
    throw new ConfigError(`${name} must be a number from ${min} to ${max}, got "${v}"`);
  }
  return n;
}

export function oneOf<T extends string>(env: Env, name: string, def: T, allowed: readonly T[]): T {
  const v = raw(env, name);
  if (v === undefined) return def;
  const lower = v.toLowerCase() as T;
  if (!allowed.includes(lower)) {
    throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got "${v}"`);
  }
  return lower;
}

export function boolean(env: Env, name: string, def: boolean): boolean {
  const v = raw(env, name);
  if (v === undefined) return def;
  const lower = v.toLowerCase();
  if (['true', '1', 'yes'].includes(lower)) return true;
  if (['false', '0', 'no'].includes(lower)) return false;
  throw new ConfigError(`${name} must be true or false, got "${v}"`);
}


/**
 * A value that may be set under several names (the first is the preferred
 * one, the others aliases kept for compatibility). Returns the name the user
 * set, so messages speak of what the user wrote; both set and different is
 * an error.
 */
export function aliasedName(env: Env, names: readonly string[]): string {
  const set = names.filter((name) => raw(env, name) !== undefined);
  for (const other of set.slice(1)) {
    if (raw(env, other) !== raw(env, set[0]!)) {
      throw new ConfigError(`${set[0]} and ${other} (its alias) are both set and differ: set only one`);
    }
  }
  return set[0] ?? names[0]!;
}

/**
 * Whether the edit distance (insertions, deletions, substitutions) between two short names is at
 * most `limit`. Every variable of the environment is compared with every known name at each
 * start, so rows are reused and the comparison stops as soon as a whole row exceeds the limit
 * (a full table per pair cost a worker ~5-10 ms of its start and most of its early garbage).
 */
const rowA = new Int32Array(64);
const rowB = new Int32Array(64);
function withinDistance(a: string, b: string, limit: number): boolean {
  if (Math.abs(a.length - b.length) > limit) return false;
  if (b.length >= rowA.length) return false;
  let prev = rowA;
  let row = rowB;
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    row[0] = i;
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      const cell = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1));
      row[j] = cell;
      if (cell < best) best = cell;
    }
    if (best > limit) return false;
    const t = prev;
    prev = row;
    row = t;
  }
  return prev[b.length]! <= limit;
}

/**
 * Variables that look like a misspelling of one of `known` (a letter or two
 * off, an underscore missing, or a `TTG_` prefix the program does not use),
 * so that a typo is said instead of silently running the defaults. Names a
 * Kubernetes Service link injects (`*_SERVICE_HOST`, `*_PORT_6379_TCP`, a
 * `tcp://` value) are not typos and are left alone.
 */
export function nearMisses(env: Env, known: readonly string[]): Array<{ name: string; meant: string }> {
  const knownSet = new Set(known);
  const squash = (s: string) => s.replace(/_/g, '');
  const found: Array<{ name: string; meant: string }> = [];
  for (const [name, value] of Object.entries(env)) {
    if (knownSet.has(name) || !/^[A-Z][A-Z0-9_]*$/.test(name)) continue;
    if (/_SERVICE_(HOST|PORT)\b|_PORT_\d+_(TCP|UDP)/.test(name) || /^(tcp|udp):\/\//.test(value ?? '')) continue;
    const bare = name.startsWith('TTG_') ? name.slice(4) : name;
    const meant = known.find((k) => k === bare || squash(k) === squash(bare)) ??
      (bare.length >= 6 ? known.find((k) => withinDistance(k, bare, k.length >= 10 ? 2 : 1)) : undefined);
    if (meant !== undefined) found.push({ name, meant });
  }
  return found;
}
