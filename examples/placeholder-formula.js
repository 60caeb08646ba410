// The JS twin of placeholder-formula.ts (and of the built-in placeholder).
export function value(p, total) {
  const m = p % 100;
  return ((p * 7 + 13) % 1000) + (m < 10 ? m / 10 : m / 100);
}
