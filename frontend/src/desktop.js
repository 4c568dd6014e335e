// The desktop dashboard: header, symbol table, chart, derivatives, movers, signals,
// beta, watchlist and alerts — filled from /api/dashboard/data (the derivatives from
// /api/market/derivatives), then kept live by /ws.

import { AlertsPanel } from './alerts.js';
import { ServerClock } from './clock.js';
import { DERIVATIVES_URL, DerivativesPanel } from './derivatives.js';
import { RulesPanel } from './rules.js';
import {
  byId, el, find, inputById, setText, syncList, tickOf,
} from './dom.js';
import { AlertNotifier } from './notifications.js';
import { fetchFirst, startPage, pageSettings } from './page.js';
import {
  BetaTable, quoteItem, renderBetaSummary, renderMovers, renderSignals, updateQuote,
} from './panels.js';
import { SymbolTable } from './table.js';
import { Watchlist } from './watchlist.js';

const settings = pageSettings();
// The chart library is the bulk of this page's code: it loads after the first data is
// on screen (a separate chunk), and the chart draws the selected symbol then.
/** @type {import('./candles.js').CandlesChart | null} */
let chart = null;
/** @type {string | null} */
let chartedSymbol = null;

async function loadChart() {
  const { CandlesChart } = await import('./candles.js');
  const loaded = new CandlesChart(byId('chart'), tickFor);
  chart = loaded;
  if (chartedSymbol) loaded.show(chartedSymbol, loaded.timeframe);
}
const clock = new ServerClock();
const derivatives = new DerivativesPanel(clock, settings.derivativesStaleAfterMs, askDerivativesReasons);
/** @type {number | undefined} */
let reasonsTimer;
const rules = new RulesPanel();
const alerts = new AlertsPanel(rules.say);
const notifier = new AlertNotifier(
  /** @type {HTMLButtonElement} */ (byId('notify-button')), byId('notify-status'),
);
const betaTable = new BetaTable(byId('beta-body'));
const symbolsTable = /** @type {HTMLTableElement} */ (byId('symbols-table'));
const table = new SymbolTable(symbolsTable, settings.thresholds, selectSymbol, (s) => watchlist.toggle(s));
const watchlist = new Watchlist((symbols, problem) => {
  table.setWatchlist(symbols);
  renderWatchlist();
  setText(byId('watchlist-status'), problem || '');
});

/**
 * A symbol's tick size as the last payload gave it, or null.
 * @param {string} symbol
 * @returns {number | null}
 */
function tickFor(symbol) {
  return tickOf(table.data(symbol));
}

/**
 * A live derivatives row became null: the view, fetched again shortly (once for the
 * nulls of one snapshot), says why.
 */
function askDerivativesReasons() {
  if (reasonsTimer !== undefined) return;
  reasonsTimer = setTimeout(async () => {
    reasonsTimer = undefined;
    try {
      const response = await fetch(DERIVATIVES_URL, { cache: 'no-store' });
      if (response.ok) derivatives.applyView(await response.json());
    } catch {
      // unreachable now: the symbol keeps its interim reason until the next view
    }
  }, 500);
}

/** @param {string} symbol */
function selectSymbol(symbol) {
  table.select(symbol);
  chartedSymbol = symbol;
  if (chart) chart.show(symbol, chart.timeframe);
}

function renderWatchlist() {
  const watched = [...watchlist.symbols].map((symbol) => ({ symbol, ...(table.data(symbol) || {}) }));
  syncList(byId('watchlist'), watched, (w) => w.symbol, (w) => {
    // The symbol is a button: a watched symbol is charted by click, Enter or Space.
    const item = quoteItem('watch-item', `Chart ${w.symbol}`);
    find(item, '.quote-symbol').addEventListener('click', () => selectSymbol(w.symbol));
    // Removable here too: a symbol no longer served has no table row (and no star).
    const remove = el('button', 'watch-remove', '×');
    remove.type = 'button';
    remove.setAttribute('aria-label', `Remove ${w.symbol} from the watchlist`);
    remove.addEventListener('click', () => watchlist.toggle(w.symbol));
    item.append(remove);
    return item;
  }, updateQuote);
  byId('watchlist-empty').hidden = watched.length > 0;
}

/**
 * A full payload: the first load, or a poll while the socket is down.
 * @param {any} body /api/dashboard/data
 */
function render(body) {
  table.setAll(body.symbols);
  for (const row of body.symbols) betaTable.set(row.symbol, row.beta);
  betaTable.render();
  renderMovers(body.movers, tickFor);
  renderSignals(body.signals);
  renderBetaSummary(body.beta);
  renderWatchlist();
}

/** @type {import('./page.js').Handlers} */
const handlers = {
  update(channel, symbol, data, generatedAt) {
    switch (channel) {
      case 'market':
        table.applyMarket(symbol, data);
        if (watchlist.has(symbol)) renderWatchlist();
        break;
      case 'confluence':
        table.applyConfluence(symbol, data);
        break;
      case 'derivatives':
        derivatives.applyUpdate(symbol, data, generatedAt);
        break;
      case 'beta':
        betaTable.set(symbol, data);
        betaTable.render();
        break;
      case 'signals':
        renderSignals(data.signals);
        break;
      case 'dashboard':
        renderMovers(data.movers, tickFor);
        renderBetaSummary(data.beta);
        if (chart) chart.refresh();
        break;
      default:
        break;
    }
  },
  alert(alert, live) {
    notifier.take(alert, live, alerts.alerts.has(alert.id));
    alerts.upsert(alert);
  },
};

async function main() {
  notifier.start();
  const filter = inputById('symbol-filter');
  const watchlistOnly = inputById('watchlist-only');
  const applyFilter = () => table.filter(filter.value, watchlistOnly.checked);
  filter.addEventListener('input', applyFilter);
  watchlistOnly.addEventListener('change', applyFilter);
  // The derivatives come from their own view, alongside the dashboard's data.
  fetchFirst(DERIVATIVES_URL).then(({ body }) => derivatives.applyView(body));
  derivatives.start();
  await startPage({
    dataUrl: '/api/dashboard/data',
    subscriptions: () => [{
      channels: ['market', 'confluence', 'beta', 'derivatives', 'signals', 'dashboard', 'alerts'],
    }],
    render,
    handlers,
    clock,
    // /api/dashboard/data has no alerts nor derivatives: while the socket is down, they
    // are polled too
    polls: [
      { url: alerts.pollUrl, onData: (body) => alerts.replaceAll(body) },
      { url: DERIVATIVES_URL, onData: (body) => derivatives.applyView(body) },
    ],
  });
  const symbols = [...table.rows.keys()];
  selectSymbol(symbols.includes('BTCUSDT') ? 'BTCUSDT' : symbols[0]);
  loadChart();
  await Promise.all([watchlist.load(), alerts.start(), rules.start([...table.rows.keys()])]);
}

main();
