// Candles from the API made safe for the chart library, which throws on a null value
// or a time that does not increase. No DOM and no chart code here: node tests it alone.

/** @typedef {{time: import('lightweight-charts').UTCTimestamp, open: number, high: number, low: number, close: number}} Candle */

/**
 * The candles the chart can draw from any payload: rows that are not
 * [time_ms, open, high, low, close, ...] with finite numbers are dropped, times are put
 * in increasing order and a repeated time keeps its last row (the chart library throws
 * on a null value or a time that does not increase).
 * @param {unknown} rows
 * @returns {Candle[]}
 */
export function cleanCandles(rows) {
  if (!Array.isArray(rows)) return [];
  /** @type {Map<number, Candle>} */
  const byTime = new Map();
  for (const row of rows) {
    if (!Array.isArray(row) || row.length < 5) continue;
    const values = row.slice(0, 5);
    if (!values.every((v) => typeof v === 'number' && Number.isFinite(v))) continue;
    const [t, open, high, low, close] = values;
    const time = /** @type {import('lightweight-charts').UTCTimestamp} */ (Math.floor(t / 1000));
    byTime.set(time, { time, open, high, low, close });
  }
  return [...byTime.values()].sort((a, b) => a.time - b.time);
}
