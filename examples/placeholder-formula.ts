/**
 * The built-in `placeholder` kernel written as a user kernel, straight from
 * its definition: v(p) = ((p*7 + 13) mod 1000) + f(p mod 100), with
 * f(m) = m/10 if m < 10 else m/100. It gives the built-in's values bit for
 * bit, so `ttg bench` can compare a user kernel with a built-in kernel of
 * the same arithmetic: the gap is what the user-kernel wrapper costs.
 */
export function value(p: i64, total: i64): f64 {
  const m = <i32>(p % 100);
  const a = <i32>((p * 7 + 13) % 1000);
  return <f64>a + <f64>m / (m < 10 ? 10.0 : 100.0);
}
