// The JS twin of monte-carlo-pi.ts: Philox2x32-10 on 32-bit halves (Math.imul for the low word
// of the product, a 16-bit split for the high word), so every draw is the WASM one.
const PHILOX_M = 0xd256d193;
const PHILOX_W = 0x9e3779b9;
const KEY = 0x5eed1234;
const TWO_POW_32 = 4294967296;

/** The high 32 bits of the 64-bit product of two u32s, exactly (every step below 2^53). */
function mulhi(a, b) {
  const aHigh = Math.floor(a / 65536);
  const aLow = a % 65536;
  const low = aLow * b; // < 2^48
  const high = aHigh * b; // < 2^48: the product is high * 2^16 + low
  return Math.floor(high / 65536) + Math.floor(((high % 65536) * 65536 + low) / TWO_POW_32);
}

export function value(p, total) {
  let c0 = p % TWO_POW_32;
  let c1 = Math.floor(p / TWO_POW_32);
  let key = KEY;
  for (let round = 0; round < 10; round++) {
    const hi = mulhi(PHILOX_M, c0);
    const lo = Math.imul(PHILOX_M, c0) >>> 0;
    c0 = (hi ^ key ^ c1) >>> 0;
    c1 = lo;
    key = (key + PHILOX_W) >>> 0;
  }
  const u = (c0 + 0.5) * 2.3283064365386963e-10;
  const v = (c1 + 0.5) * 2.3283064365386963e-10;
  return u * u + v * v <= 1 ? 4 : 0;
}
