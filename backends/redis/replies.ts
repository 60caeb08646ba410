/** Redis replies (RESP2, as call() returns them) into plain values. */

export type Fields = Record<string, string>;
export interface StreamEntry {
  id: string;
  /** null for an entry deleted while pending. */
  fields: Fields | null;
}

export function fieldsOf(flat: unknown): Fields | null {
  if (!Array.isArray(flat)) return null;
  const fields: Fields = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[String(flat[i])] = String(flat[i + 1]);
  return fields;
}

export function entriesOf(list: unknown): StreamEntry[] {
  if (!Array.isArray(list)) return [];
  return list.map((item) => {
    const [id, flat] = item as [unknown, unknown];
    return { id: String(id), fields: fieldsOf(flat) };
  });
}

/** XREADGROUP's reply: [[stream, entries]] or null. */
export function readGroupEntries(reply: unknown): StreamEntry[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  return entriesOf((reply[0] as unknown[])[1]);
}

/** XPENDING's summary form: [count, min id, max id, [[consumer, count], ...] | null]. */
export function pendingSummary(reply: unknown): { count: number; consumers: Record<string, number> } {
  const [count, , , list] = Array.isArray(reply) ? reply : [];
  const consumers: Record<string, number> = {};
  if (Array.isArray(list)) for (const [name, n] of list as [unknown, unknown][]) consumers[String(name)] = Number(n);
  return { count: Number(count ?? 0), consumers };
}

export function isRedisError(err: unknown, ...codes: string[]): boolean {
  const message = err instanceof Error ? err.message : '';
  return codes.some((code) => message.includes(code));
}

/** XINFO's flat [key, value, ...] arrays, values kept as they come (lag may be nil). */
export function fieldsOfLoose(flat: unknown): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  if (Array.isArray(flat)) for (let i = 0; i + 1 < flat.length; i += 2) fields[String(flat[i])] = flat[i + 1];
  return fields;
}

