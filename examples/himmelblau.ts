/**
 * Grid search of Himmelblau's function, f(x, y) = (x² + y - 11)² + (x + y² - 7)²,
 * over a 1000 × 1000 grid of [-5, 4.99]² with step 0.01: parameter p is the
 * point x = (p mod 1000 - 500) / 100, y = (floor(p / 1000) mod 1000 - 500) / 100.
 *
 * f has four minima, all 0; one, (3, 2), lies on the grid, so the sweep's
 * minimum is exactly 0 and its argmin is the parameter of (3, 2):
 * 700 * 1000 + 800 = 700800. A user kernel: nothing here but `value`.
 */
export function value(p: i64, total: i64): f64 {
  const i = <i32>(p % 1000);
  const j = <i32>((p / 1000) % 1000);
  // Dividing integers by 100 gives the correctly rounded x and y (exact for 3 and 2).
  const x = <f64>(i - 500) / 100.0;
  const y = <f64>(j - 500) / 100.0;
  const a = x * x + y - 11.0;
  const b = x + y * y - 7.0;
  return a * a + b * b;
}
