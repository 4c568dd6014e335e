// Prices as traders read them: by the market's tick size when the payload gives it,
// else by significant digits, and tiny prices in the compact zero-count notation
// (0.00000001234 → 0.0₇1234). No DOM here: node tests it alone.
//
// Rule (formatPrice):
//   with a tick size (tick_size, or price_precision as 10^-n): the price rounded to the
//     tick, with the tick's decimals (tick 0.5 → 1 decimal, 1e-10 → 10);
//   without one, by magnitude: |p| ≥ 1000 → 2 decimals; 1 ≤ |p| < 1000 → at most 4
//     decimals; |p| < 1 → 5 significant digits; trailing zeros dropped to 2 decimals;
//   thousands grouped with commas; 4 or more zeros right after the decimal point are
//     written 0.0ₙ, n being the count of those zeros (0.00001234 → 0.0₄1234);
//   null, undefined, NaN and ±Infinity → "—".

/** Zeros after the decimal point from which the compact notation is used. */
export const COMPACT_ZEROS = 4;
/** Significant digits of a price below 1 without a tick size. */
export const SIGNIFICANT_DIGITS = 5;
const MAX_DECIMALS = 30;
const SUBSCRIPTS = '₀₁₂₃₄₅₆₇₈₉';

/**
 * @param {unknown} value
 * @returns {value is number}
 */
const isNumber = (value) => typeof value === 'number' && Number.isFinite(value);

/**
 * A usable tick size: a positive finite number, else null.
 * @param {unknown} tick
 * @returns {number | null}
 */
export function validTick(tick) {
  return isNumber(tick) && tick > 0 ? tick : null;
}

/**
 * The tick size of a payload row: `tick_size` (the price increment, e.g. 1e-10), else
 * `price_precision` (a count of decimals, e.g. 8 → 1e-8), else null.
 * @param {{tick_size?: unknown, price_precision?: unknown} | Record<string, any> | null | undefined} row
 * @returns {number | null}
 */
export function tickOf(row) {
  if (!row) return null;
  const tick = validTick(row.tick_size);
  if (tick !== null) return tick;
  const precision = row.price_precision;
  if (isNumber(precision) && Number.isInteger(precision) && precision >= 0 && precision <= MAX_DECIMALS) {
    return 10 ** -precision;
  }
  return null;
}

/**
 * The decimals a tick size needs (0.5 → 1, 0.0025 → 4, 1e-8 → 8, 5 → 0).
 * @param {number} tick a positive tick size
 * @returns {number}
 */
export function tickDecimals(tick) {
  for (let decimals = 0; decimals < MAX_DECIMALS; decimals += 1) {
    const scaled = tick * 10 ** decimals;
    if (Math.round(scaled) >= 1 && Math.abs(scaled - Math.round(scaled)) <= 1e-9 * scaled) return decimals;
  }
  return MAX_DECIMALS;
}

/**
 * The decimals of the fallback rule for a magnitude (see the rule above).
 * @param {number} magnitude |price|, finite
 * @returns {number}
 */
export function autoDecimals(magnitude) {
  if (magnitude >= 1000) return 2;
  if (magnitude >= 1) return 4;
  if (magnitude === 0) return 2;
  const exponent = Math.floor(Math.log10(magnitude));
  return Math.min(MAX_DECIMALS, SIGNIFICANT_DIGITS - 1 - exponent);
}

/**
 * Writes a run of 4+ zeros after the decimal point as 0.0ₙ (n = the count of zeros).
 * @param {string} fixed an unsigned decimal string, e.g. "0.0000000114"
 * @returns {string}
 */
export function compactZeros(fixed) {
  const match = /^0\.(0+)([1-9]\d*)$/.exec(fixed);
  if (!match || match[1].length < COMPACT_ZEROS) return fixed;
  const count = [...String(match[1].length)].map((d) => SUBSCRIPTS[Number(d)]).join('');
  return `0.0${count}${match[2]}`;
}

/**
 * @param {string} integer digits
 * @returns {string}
 */
const group = (integer) => integer.replace(/\B(?=(\d{3})+(?!\d))/g, ',');

/**
 * A price as text (the rule above).
 * @param {number | null | undefined} value
 * @param {number | null} [tickSize] the market's price increment, when known
 * @returns {string}
 */
export function formatPrice(value, tickSize = null) {
  if (!isNumber(value)) return '—';
  const magnitude = Math.abs(value);
  const tick = validTick(tickSize);
  let fixed;
  if (tick !== null && (magnitude === 0 || Math.round(magnitude / tick) > 0)) {
    const decimals = tickDecimals(tick);
    fixed = (Math.round(magnitude / tick) * tick).toFixed(decimals);
  } else {
    // No tick, or a price below its tick (the tick is wrong): significant digits.
    fixed = magnitude.toFixed(autoDecimals(magnitude));
    fixed = fixed.replace(/(\.\d\d\d*?)0+$/, '$1');
  }
  const [integer, fraction] = fixed.split('.');
  const unsigned = compactZeros(fraction === undefined ? group(integer) : `${group(integer)}.${fraction}`);
  const negative = value < 0 && /[1-9]/.test(fixed);
  return negative ? `-${unsigned}` : unsigned;
}

/**
 * The chart's price step (lightweight-charts `priceFormat`) for a market: the tick's
 * decimals when the tick size is known, else those of the fallback rule for the
 * price's magnitude. minMove is a power of ten, which the chart's tick-mark builder
 * always accepts (it throws on a step whose inverse is not 2^a·5^b).
 * @param {number | null | undefined} price a recent price (e.g. the last close)
 * @param {number | null} [tickSize]
 * @returns {{type: 'price', precision: number, minMove: number}}
 */
export function chartPriceFormat(price, tickSize = null) {
  const tick = validTick(tickSize);
  const precision = tick !== null ? tickDecimals(tick) : autoDecimals(isNumber(price) ? Math.abs(price) : 1);
  return { type: 'price', precision, minMove: Number((10 ** -precision).toPrecision(1)) };
}
