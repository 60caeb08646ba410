// The JS twin of himmelblau.ts: the same operations in the same order, so the same f64s.
export function value(p, total) {
  const i = p % 1000;
  const j = Math.floor(p / 1000) % 1000;
  const x = (i - 500) / 100;
  const y = (j - 500) / 100;
  const a = x * x + y - 11;
  const b = x + y * y - 7;
  return a * a + b * b;
}
