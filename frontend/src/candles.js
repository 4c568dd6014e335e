// The candlestick chart of the selected symbol (lightweight-charts), with a
// timeframe switch. Candles come from /api/market/candles (cached on the server);
// a refresh sends If-None-Match and redraws only when the candles changed.

import { CandlestickSeries, createChart } from 'lightweight-charts';
import { byId, setText } from './dom.js';

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

/** Price precision for a price's magnitude (PEPE needs 8 decimals, BTC 2). */
function priceFormat(price) {
  const precision = price >= 1000 ? 2 : price >= 1 ? 4 : price >= 0.01 ? 6 : 8;
  return { type: 'price', precision, minMove: 10 ** -precision };
}

export class CandlesChart {
  constructor(container) {
    this.chart = createChart(container, THEME);
    this.series = this.chart.addSeries(CandlestickSeries, {
      upColor: '#2fbf71', downColor: '#e5534b', wickUpColor: '#2fbf71', wickDownColor: '#e5534b', borderVisible: false,
    });
    this.symbol = 'BTCUSDT';
    this.timeframe = '1h';
    this.etag = null;
    this.loading = false;
    this.bindTimeframes();
  }

  bindTimeframes() {
    for (const button of byId('timeframes').querySelectorAll('button')) {
      button.addEventListener('click', () => this.show(this.symbol, button.dataset.timeframe));
    }
  }

  async show(symbol, timeframe) {
    this.symbol = symbol;
    this.timeframe = timeframe;
    this.etag = null;
    setText(byId('chart-symbol'), symbol);
    for (const button of byId('timeframes').querySelectorAll('button')) {
      button.setAttribute('aria-pressed', String(button.dataset.timeframe === timeframe));
    }
    await this.refresh(true);
  }

  /** Fetches the candles again; `fit` recentres the chart (a new symbol or timeframe). */
  async refresh(fit = false) {
    if (this.loading && !fit) return;
    this.loading = true;
    const { symbol, timeframe } = this;
    const url = `/api/market/candles/${encodeURIComponent(symbol)}?timeframe=${encodeURIComponent(timeframe)}`;
    try {
      const headers = this.etag ? { 'If-None-Match': this.etag } : {};
      const response = await fetch(url, { headers, cache: 'no-store' });
      if (symbol !== this.symbol || timeframe !== this.timeframe || response.status === 304) return;
      const body = await response.json();
      if (!response.ok) {
        setText(byId('chart-status'), `No candles: ${body.message || response.status}.`);
        return;
      }
      this.etag = response.headers.get('ETag');
      this.draw(body.candles, fit);
      setText(byId('chart-status'), body.stale ? 'Candles are stale.' : '');
    } catch {
      setText(byId('chart-status'), 'Candles unavailable.');
    } finally {
      this.loading = false;
    }
  }

  draw(rows, fit) {
    const candles = rows.map(([t, open, high, low, close]) => ({ time: t / 1000, open, high, low, close }));
    if (candles.length) this.series.applyOptions({ priceFormat: priceFormat(candles[candles.length - 1].close) });
    this.series.setData(candles);
    if (fit) this.chart.timeScale().fitContent();
  }
}
