// What both pages do at start: read their settings, fetch the first data (the
// <link rel=preload> has already started that request), and open the live feed.

import { ServerClock } from './clock.js';
import { Header } from './header.js';
import { LiveFeed, socketUrl } from './live.js';
import { reportPageLoad } from './rum.js';

/**
 * The page's settings from the <body> data attributes the template writes.
 * `derivativesStaleAfterMs`: derivatives read longer ago than this are flagged stale.
 * @returns {{device: string | undefined, page: string | undefined, refreshMs: number, staleAfterMs: number,
 *   derivativesStaleAfterMs: number, thresholds: {long: number, short: number}}}
 */
export function pageSettings() {
  const data = document.body.dataset;
  return {
    device: data.device,
    page: data.page,
    refreshMs: Number(data.refreshSeconds) * 1000,
    staleAfterMs: Number(data.staleAfterSeconds) * 1000,
    derivativesStaleAfterMs: Number(data.derivativesStaleAfterSeconds) * 1000,
    thresholds: { long: Number(data.longThreshold), short: Number(data.shortThreshold) },
  };
}

/**
 * The data of `url` and its ETag; retried every few seconds until the service answers.
 * @param {string} url
 * @returns {Promise<{body: any, etag: string | null, at: number}>}
 */
export async function fetchFirst(url) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      // Same options as the preload, so the browser reuses its response.
      const response = await fetch(url);
      if (response.ok) return { body: await response.json(), etag: response.headers.get('ETag'), at: Date.now() };
    } catch {
      // not reachable yet
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * 2 ** attempt)));
  }
}

/**
 * What a page does with live messages: `update` a channel's data of one symbol (or of
 * the market, symbol empty), with the data's `generatedAt` (server epoch ms), and `alert` a new or changed alert (an `alert` message,
 * `live` true, or an item of the alerts snapshot sent on every (re)connect: the recent
 * alerts with their current statuses, `live` false).
 * @typedef {{update: (channel: string, symbol: string, data: any, generatedAt: number) => void,
 *   alert: (alert: import('./alerts.js').Alert, live: boolean) => void}} Handlers
 */

/**
 * Starts a page: `render(body)` draws a full payload (first load and polls);
 * `handlers` receives live messages; `polls`: more URLs fetched (If-None-Match) every
 * refresh interval while the socket is down, each changed body given to its `onData`;
 * `clock`: the server clock the page measures ages with (a new one by default).
 * Returns once the first data is on screen.
 * @param {{
 *   dataUrl: string,
 *   subscriptions: (body: any) => Array<{channels: string[], symbols?: string[]}>,
 *   render: (body: any) => void,
 *   handlers: Handlers,
 *   polls?: Array<{url: string, onData: (body: any) => void}>,
 *   clock?: ServerClock,
 * }} options
 */
export async function startPage({
  dataUrl, subscriptions, render, handlers, polls = [], clock = new ServerClock(),
}) {
  const settings = pageSettings();
  const header = new Header(clock, settings.staleAfterMs);
  const first = await fetchFirst(dataUrl);
  header.noteFetched(first.body, first.at);
  render(first.body);
  reportPageLoad(settings.device, settings.page);
  header.start();
  const feed = new LiveFeed({
    url: socketUrl(),
    subscriptions: subscriptions(first.body),
    clock,
    onSnapshot: (channel, items) => {
      for (const item of items) {
        if (channel === 'alerts') {
          handlers.alert(item.data, false); // an alert's time is not the market data's age
          continue;
        }
        header.noteGenerated(item.generated_at);
        handlers.update(channel, item.symbol, item.data, item.generated_at);
        if (channel === 'dashboard') header.renderOverview(item.data.overview);
      }
    },
    onUpdate: (message) => {
      header.noteGenerated(message.generated_at);
      handlers.update(message.channel, message.symbol, message.data, message.generated_at);
      if (message.channel === 'dashboard') {
        header.renderOverview(message.data.overview);
        header.showErrors(message.data.errors);
      }
    },
    onAlert: (message) => handlers.alert(message.data, true),
    onState: (state) => header.showConnection(state),
    polls: [
      {
        url: dataUrl,
        everyMs: settings.refreshMs,
        onData: (body, at) => {
          header.noteFetched(body, at);
          render(body);
        },
      },
      ...polls.map(({ url, onData }) => ({ url, everyMs: settings.refreshMs, onData })),
    ],
  });
  feed.start({ [dataUrl]: first.etag });
  return { settings, header, feed };
}
