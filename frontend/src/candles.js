// The candlestick chart of the selected symbol (lightweight-charts), with a
// timeframe switch. Candles come from /api/market/candles (cached on the server);
// a refresh sends If-None-Match and redraws only when the candles changed.

import { CandlestickSeries, createChart } from 'lightweight-charts';
import { cleanCandles } from './candle-data.js';
import { chartTickLabel, formatZoned } from './clock.js';
import { byId, setText } from './dom.js';
import { chartPriceFormat, formatPrice, tickOf } from './prices.js';

const THEME = {
  layout: {
    background: { color: '#11161d' },
    textColor: '#c5ccd6',
    attributionLogo: false, // attribution is a text link under the chart instead
  },
  grid: { vertLines: { color: '#1d2530' }, horzLines: { color: '#1d2530' } },
  timeScale: { timeVisible: true, secondsVisible: false },
  autoSize: true,
};
/** Time-axis labels kept on the container (data-time-labels), the latest last. */
const KEPT_TIME_LABELS = 60;

/**
 * A chart time (seconds since the epoch as the candles give it, or a business day)
 * in epoch ms.
 * @param {import('lightweight-charts').Time} time
 * @returns {number}
 */
export function timeToMs(time) {
  if (typeof time === 'number') return time * 1000;
  if (typeof time === 'string') return Date.parse(`${time}T00:00:00Z`);
  return Date.UTC(time.year, time.month - 1, time.day);
}

/** @param {unknown} error */
const isAbort = (error) => error instanceof DOMException && error.name === 'AbortError';

export class CandlesChart {
  /**
   * @param {HTMLElement} container
   * @param {(symbol: string) => number | null} [tickFor] a symbol's tick size, if known
   */
  constructor(container, tickFor = () => null) {
    this.container = container;
    this.tickFor = tickFor;
    /** The tick size the axis and crosshair format by (null: significant digits). */
    /** @type {number | null} */
    this.tickSize = null;
    /** The time axis's latest labels: "epoch seconds=label". */
    /** @type {Map<number, string>} */
    this.timeLabels = new Map();
    // Axis labels and the crosshair's price use the page's price format (0.0₇114 for
    // tiny prices); the labels last drawn are kept on the container (data-axis-labels).
    // Times, on the axis and the crosshair, are in the user's time zone like every time
    // on the page (the library's own are UTC); kept as data-time-labels and
    // data-crosshair-time ("epoch seconds=label").
    this.chart = createChart(container, {
      ...THEME,
      timeScale: { ...THEME.timeScale, tickMarkFormatter: (
        /** @type {import('lightweight-charts').Time} */ time, /** @type {number} */ type,
      ) => this.timeLabel(time, type) },
      localization: {
        priceFormatter: (/** @type {number} */ price) => formatPrice(price, this.tickSize),
        tickmarksPriceFormatter: (/** @type {number[]} */ prices) => this.axisLabels(prices),
        timeFormatter: (/** @type {import('lightweight-charts').Time} */ time) => this.crosshairTime(time),
      },
    });
    this.series = this.chart.addSeries(CandlestickSeries, {
      upColor: '#2fbf71', downColor: '#e5534b', wickUpColor: '#2fbf71', wickDownColor: '#e5534b', borderVisible: false,
    });
    this.symbol = 'BTCUSDT';
    this.timeframe = '1h';
    /** @type {string | null} */
    this.etag = null;
    /** The request in flight, if any: a new symbol or timeframe aborts it. */
    /** @type {AbortController | null} */
    this.inFlight = null;
    this.bindTimeframes();
    // Leaving the page cancels a request in flight (quietly, see refresh).
    window.addEventListener('pagehide', () => this.inFlight?.abort());
  }

  /**
   * The price axis's labels for its tick marks.
   * @param {number[]} prices
   * @returns {string[]}
   */
  axisLabels(prices) {
    const labels = prices.map((price) => formatPrice(price, this.tickSize));
    const joined = labels.join('|');
    if (this.container.dataset.axisLabels !== joined) this.container.dataset.axisLabels = joined;
    return labels;
  }

  /**
   * A label of the time axis, in the user's time zone.
   * @param {import('lightweight-charts').Time} time
   * @param {number} type the tick mark's TickMarkType
   * @returns {string}
   */
  timeLabel(time, type) {
    const ms = timeToMs(time);
    const label = chartTickLabel(ms, type);
    this.timeLabels.delete(ms / 1000);
    this.timeLabels.set(ms / 1000, label);
    if (this.timeLabels.size > KEPT_TIME_LABELS) this.timeLabels.delete(this.timeLabels.keys().next().value ?? 0);
    this.container.dataset.timeLabels = [...this.timeLabels].map(([s, l]) => `${s}=${l}`).join('|');
    return label;
  }

  /**
   * The crosshair's time, in the user's time zone.
   * @param {import('lightweight-charts').Time} time
   * @returns {string}
   */
  crosshairTime(time) {
    const ms = timeToMs(time);
    const label = formatZoned(ms, 'datetime');
    this.container.dataset.crosshairTime = `${ms / 1000}=${label}`;
    return label;
  }

  bindTimeframes() {
    for (const button of byId('timeframes').querySelectorAll('button')) {
      button.addEventListener('click', () => this.show(this.symbol, button.dataset.timeframe || this.timeframe));
    }
  }

  /**
   * Charts `symbol` in `timeframe` (e.g. '1h').
   * @param {string} symbol
   * @param {string} timeframe
   */
  async show(symbol, timeframe) {
    this.symbol = symbol;
    this.timeframe = timeframe;
    this.etag = null;
    setText(byId('chart-symbol'), symbol);
    // The canvases say nothing to assistive technology: the container is the image.
    this.container.setAttribute('aria-label', `Candlestick chart of ${symbol}, ${timeframe} candles`);
    for (const button of byId('timeframes').querySelectorAll('button')) {
      button.setAttribute('aria-pressed', String(button.dataset.timeframe === timeframe));
    }
    await this.refresh(true);
  }

  /**
   * Fetches the candles again; `fit` recentres the chart (a new symbol or timeframe)
   * and replaces a request in flight, which a periodic check (no `fit`) never does.
   * @param {boolean} [fit]
   */
  async refresh(fit = false) {
    if (this.inFlight && !fit) return;
    this.inFlight?.abort();
    const controller = new AbortController();
    this.inFlight = controller;
    const { symbol, timeframe } = this;
    const url = `/api/market/candles/${encodeURIComponent(symbol)}?timeframe=${encodeURIComponent(timeframe)}`;
    try {
      /** @type {Record<string, string>} */
      const headers = this.etag ? { 'If-None-Match': this.etag } : {};
      const response = await fetch(url, { headers, cache: 'no-store', signal: controller.signal });
      if (symbol !== this.symbol || timeframe !== this.timeframe || response.status === 304) return;
      const body = await response.json();
      if (!response.ok) {
        setText(byId('chart-status'), `No candles: ${body.message || response.status}.`);
        return;
      }
      this.etag = response.headers.get('ETag');
      this.draw(body.candles, fit, tickOf(body) ?? this.tickFor(symbol));
      setText(byId('chart-status'), body.stale ? 'Candles are stale.' : '');
    } catch (error) {
      // An aborted request was replaced or the page is going: nothing to say.
      if (!isAbort(error)) setText(byId('chart-status'), 'Candles unavailable.');
    } finally {
      if (this.inFlight === controller) this.inFlight = null;
    }
  }

  /**
   * @param {unknown} rows the payload's candles
   * @param {boolean} fit
   * @param {number | null} tickSize the market's tick size (the payload's or the table's)
   */
  draw(rows, fit, tickSize) {
    const candles = cleanCandles(rows);
    if (candles.length) {
      // The price step: the tick's decimals, or 5 significant digits of the last close;
      // a step coarser than the prices' range leaves the axis without labels.
      this.tickSize = tickSize;
      const format = chartPriceFormat(candles[candles.length - 1].close, tickSize);
      this.series.applyOptions({ priceFormat: format });
      this.container.dataset.minMove = String(format.minMove);
      this.container.dataset.precision = String(format.precision);
    }
    this.series.setData(candles);
    if (fit) this.chart.timeScale().fitContent();
  }
}
