// The header both pages share: market overview, data age, the SIMULATED and STALE
// badges, the connection indicator and the list of data parts that are missing.

import {
  byId, formatAge, formatPrice, formatNumber, formatZoned, setText, showChange, showTimeZone,
} from './dom.js';

/** @type {Record<string, string>} */
const CONNECTION_TEXT = {
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  polling: 'polling',
};

/**
 * @typedef {{market_regime: string, gainers: number, losers: number, btc_price: number | null,
 *   btc_change_24h: number | null, btc_volatility: number | null}} Overview
 */

export class Header {
  /**
   * @param {import('./clock.js').ServerClock} clock
   * @param {number} staleAfterMs data older than this is flagged STALE
   */
  constructor(clock, staleAfterMs) {
    this.clock = clock;
    this.staleAfterMs = staleAfterMs;
    /** @type {number | null} */
    this.generatedAt = null;
    /** @type {number | null} generated_at of data the server itself called stale */
    this.servedStaleAt = null;
  }

  start() {
    showTimeZone();
    setInterval(() => this.renderAge(), 1000);
  }

  /** A payload fetched over HTTP: its freshness fields, source, errors and overview
   * (``overview`` on desktop, ``market_overview`` on mobile). */
  /**
   * @param {{generated_at: number, age_ms: number, stale: boolean, source: string, exchange: string,
   *   errors?: Record<string, string>, overview?: Overview, market_overview?: Overview}} payload
   * @param {number} receivedAt local epoch ms
   */
  noteFetched(payload, receivedAt) {
    this.clock.observe(payload.generated_at + payload.age_ms, receivedAt);
    this.servedStaleAt = payload.stale ? payload.generated_at : null;
    this.noteGenerated(payload.generated_at);
    byId('badge-simulated').hidden = payload.source !== 'simulated';
    byId('badge-simulated').title = `Data source: ${payload.exchange}`;
    this.showErrors(payload.errors);
    this.renderOverview(payload.overview || payload.market_overview);
  }

  /** @param {number | null | undefined} generatedAt server epoch ms of a piece of data */
  noteGenerated(generatedAt) {
    const known = typeof generatedAt === 'number' && Number.isFinite(generatedAt);
    if (known && (this.generatedAt === null || generatedAt > this.generatedAt)) {
      this.generatedAt = generatedAt;
      byId('hd-age').title = `Data of ${formatZoned(generatedAt, 'stamp')}`;
    }
    this.renderAge();
  }

  renderAge() {
    if (this.generatedAt === null) return;
    const age = this.clock.ageOf(this.generatedAt);
    setText(byId('hd-age'), formatAge(age));
    const stale = age > this.staleAfterMs || this.servedStaleAt === this.generatedAt;
    byId('badge-stale').hidden = !stale;
    if (stale) setText(byId('stale-age'), formatAge(age));
  }

  /** @param {Overview | null | undefined} overview */
  renderOverview(overview) {
    if (!overview) return;
    /**
     * @param {string} id
     * @param {string} text
     */
    const set = (id, text) => {
      const node = byId(id);
      if (node) setText(node, text);
      return node;
    };
    set('hd-regime', overview.market_regime);
    set('hd-breadth', `${overview.gainers}↑ ${overview.losers}↓`);
    set('hd-btc-price', formatPrice(overview.btc_price));
    const change = byId('hd-btc-change');
    if (change) showChange(change, overview.btc_change_24h);
    set('hd-btc-vol', overview.btc_volatility == null ? '—' : `${formatNumber(overview.btc_volatility)}%`);
  }

  /** @param {string} state connecting, live, reconnecting or polling */
  showConnection(state) {
    const node = byId('connection');
    node.dataset.state = state;
    setText(node, CONNECTION_TEXT[state] || state);
  }

  /** @param {Record<string, string> | null | undefined} errors {part: reason} of the latest snapshot */
  showErrors(errors) {
    const node = byId('data-errors');
    const parts = Object.entries(errors || {});
    node.hidden = parts.length === 0;
    setText(node, parts.length ? `Missing data: ${parts.map(([p, why]) => `${p} (${why})`).join('; ')}` : '');
  }
}
