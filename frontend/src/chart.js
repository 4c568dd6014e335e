// Browser entry of the dashboards: for now only the candlestick chart helper.
// Bundled by scripts/build-frontend.sh into app/web/static/dist/chart.js (an IIFE).
import { CandlestickSeries, createChart } from 'lightweight-charts';

/**
 * Draws `candles` in `element` and returns the chart and its series.
 * `candles`: [{time, open, high, low, close}], time in UTC seconds, ascending.
 */
function mountCandles(element, candles) {
  const chart = createChart(element, { autoSize: true });
  const series = chart.addSeries(CandlestickSeries);
  series.setData(candles);
  chart.timeScale().fitContent();
  return { chart, series };
}

window.Virtuoso = Object.assign(window.Virtuoso || {}, { mountCandles });
