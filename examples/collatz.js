// The JS twin of collatz.ts. JS numbers are exact integers below 2^53: beyond that the twin
// throws rather than give a wrong count (p below 10^8 never gets there).
export function value(p, total) {
  let n = p + 1;
  let steps = 0;
  while (n !== 1) {
    if (n % 2 === 1) {
      if (n > (Number.MAX_SAFE_INTEGER - 1) / 3) throw new RangeError(`collatz: 3n + 1 leaves the exact integers of a JS number at n = ${n}`);
      n = 3 * n + 1;
    } else {
      n /= 2;
    }
    steps++;
  }
  return steps;
}
