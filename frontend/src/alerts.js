// Alerts: the live list with acknowledge (the rule form is in rules.js).

import {
  ApiError, callApi, errorText, explainFailure, needsToken,
} from './api.js';
import {
  byId, el, find, formatTime, setChoiceClass, setText, syncList,
} from './dom.js';

const LEVELS = ['info', 'warning', 'critical'];
const SHOWN_ALERTS = 50;
/** Statuses only move forward: pending → acknowledged → resolved (or pending → resolved). */
/** @type {Record<string, number>} */
const STATUS_RANK = { pending: 0, acknowledged: 1, resolved: 2 };
const SETTLED_KEPT = 100;

/**
 * An alert as the API and /ws send it.
 * @typedef {{id: string, level: string, title: string, message: string, status: string, created_at_ms: number}} Alert
 */

/**
 * Creates the node of one alert (its text set by updateAlertItem).
 * @param {((id: string, button: HTMLButtonElement) => void) | null} onAck null: no button
 * @returns {HTMLLIElement}
 */
export function createAlertItem(onAck) {
  const item = el('li', 'alert');
  const head = el('div', 'alert-head');
  head.append(el('span', 'alert-level'), el('span', 'alert-title'), el('time', 'alert-time'));
  const foot = el('div', 'alert-foot');
  foot.append(el('span', 'alert-status'));
  if (onAck) {
    const ack = el('button', 'alert-ack', 'Acknowledge');
    ack.type = 'button';
    ack.addEventListener('click', () => onAck(item.dataset.key || '', ack));
    foot.append(ack);
  }
  item.append(head, el('p', 'alert-message'), foot);
  return item;
}

/**
 * @param {HTMLElement} item a node of createAlertItem
 * @param {Alert} alert
 */
export function updateAlertItem(item, alert) {
  setChoiceClass(item, 'level-', LEVELS, alert.level);
  item.classList.toggle('is-pending', alert.status === 'pending');
  setText(find(item, '.alert-level'), alert.level.toUpperCase());
  setText(find(item, '.alert-title'), alert.title);
  const time = find(item, '.alert-time');
  setText(time, formatTime(alert.created_at_ms));
  time.setAttribute('datetime', new Date(alert.created_at_ms).toISOString()); // machine-readable
  setText(find(item, '.alert-message'), alert.message);
  setText(find(item, '.alert-status'), alert.status);
  const ack = /** @type {HTMLButtonElement | null} */ (item.querySelector('.alert-ack'));
  if (ack) {
    ack.hidden = alert.status !== 'pending';
    ack.setAttribute('aria-label', `Acknowledge ${alert.title}`); // one of many "Acknowledge"
  }
}

/**
 * Newest first, at most `limit`, those `keep` accepts.
 * @param {Map<string, Alert>} alertsById
 * @param {number} [limit]
 * @param {(alert: Alert) => boolean} [keep]
 * @returns {Alert[]}
 */
export function newestFirst(alertsById, limit = SHOWN_ALERTS, keep = () => true) {
  return [...alertsById.values()].filter(keep).sort((a, b) => b.created_at_ms - a.created_at_ms).slice(0, limit);
}

/**
 * The version of one alert to show: `incoming`, unless `known` is further along
 * (messages and answers may arrive in any order; a status never moves back).
 * @param {Alert | undefined} known
 * @param {Alert} incoming
 * @returns {Alert}
 */
export function newerVersion(known, incoming) {
  if (!known) return incoming;
  const rank = (/** @type {Alert} */ a) => STATUS_RANK[a.status] ?? 0;
  return rank(incoming) >= rank(known) ? incoming : known;
}

/**
 * Takes a full list the server answered (a poll, a page payload) into `known`, in place:
 * the list is authoritative — an alert `known` holds but the list lacks is dropped —
 * except that no alert goes back to an earlier status, and alerts known to be
 * acknowledged or resolved stay (the newest `keepSettled`) so that a list older than
 * a live message cannot show them pending again.
 * @param {Map<string, Alert>} known
 * @param {Alert[]} listed
 * @param {number} [keepSettled]
 */
export function takeList(known, listed, keepSettled = SETTLED_KEPT) {
  const settled = newestFirst(known, keepSettled, (a) => a.status !== 'pending');
  const versions = new Map(listed.map((alert) => [alert.id, newerVersion(known.get(alert.id), alert)]));
  known.clear();
  for (const [id, alert] of versions) known.set(id, alert);
  for (const alert of settled) if (!known.has(alert.id)) known.set(alert.id, alert);
}

/**
 * The desktop's alert list: the newest alerts, kept current by /ws (every new alert
 * and status change, and the recent alerts with their statuses on every (re)connect)
 * and, while the socket is down, by polls of `pollUrl`; with Acknowledge.
 */
export class AlertsPanel {
  /** @param {(text: string) => void} say where messages for the user go */
  constructor(say) {
    /** @type {Map<string, Alert>} */
    this.alerts = new Map();
    this.list = byId('alerts-list');
    this.say = say;
    this.renderQueued = false;
    /** What is polled while the socket is down (the same URL as the first load). */
    this.pollUrl = `/api/alerts?limit=${SHOWN_ALERTS}`;
  }

  async start() {
    await this.loadAlerts();
  }

  async loadAlerts() {
    try {
      const body = await callApi('GET', this.pollUrl);
      for (const alert of body.alerts) this.upsert(alert); // merged: /ws may have been faster
    } catch (error) {
      this.say(`Alerts unavailable: ${errorText(error)}`);
    }
  }

  /**
   * A new or changed alert (from /ws, its snapshot, or an acknowledge).
   * @param {Alert} alert
   */
  upsert(alert) {
    this.alerts.set(alert.id, newerVersion(this.alerts.get(alert.id), alert));
    this.scheduleRender();
  }

  /**
   * A poll's answer (GET pollUrl): the newest alerts with their current statuses.
   * @param {{alerts: Alert[]}} body
   */
  replaceAll(body) {
    takeList(this.alerts, body.alerts, 0);
    this.scheduleRender();
  }

  /** One render for the many alerts of a snapshot. */
  scheduleRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  render() {
    const shown = newestFirst(this.alerts);
    syncList(this.list, shown, (a) => a.id, () => createAlertItem((id, button) => this.ack(id, button)), updateAlertItem);
    byId('alerts-empty').hidden = shown.length > 0;
  }

  /**
   * Acknowledges alert `id`. A 409 means it was acknowledged or resolved already (on
   * another device, say): not a failure — the alert's current state is shown instead.
   * @param {string} id
   * @param {HTMLButtonElement} button disabled while the request runs
   */
  async ack(id, button) {
    if (!needsToken('acknowledge', this.say)) return;
    button.disabled = true;
    try {
      const body = await callApi('POST', `/api/alerts/${encodeURIComponent(id)}/ack`, undefined, { authorized: true });
      this.upsert(body.alert);
      this.say('');
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) await this.showCurrent(id);
      else this.say(explainFailure(error, 'acknowledge'));
    } finally {
      button.disabled = false;
    }
  }

  /**
   * After a 409: the alert list as it is now (merged in), saying alert `id`'s status.
   * @param {string} id
   */
  async showCurrent(id) {
    try {
      const body = await callApi('GET', this.pollUrl);
      for (const alert of body.alerts) this.upsert(alert);
      const current = this.alerts.get(id);
      const status = current && current.status !== 'pending' ? current.status : 'acknowledged or resolved';
      this.say(`${current ? current.title : 'This alert'}: already ${status}.`);
    } catch (error) {
      this.say(explainFailure(error, 'acknowledge'));
    }
  }
}
