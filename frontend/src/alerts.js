// Alerts: the live list with acknowledge (the rule form is in rules.js).

import { callApi, errorText, explainFailure, needsToken } from './api.js';
import {
  byId, el, find, formatTime, setChoiceClass, setText, syncList,
} from './dom.js';

const LEVELS = ['info', 'warning', 'critical'];
const SHOWN_ALERTS = 50;

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
  setText(find(item, '.alert-time'), formatTime(alert.created_at_ms));
  setText(find(item, '.alert-message'), alert.message);
  setText(find(item, '.alert-status'), alert.status);
  const ack = /** @type {HTMLButtonElement | null} */ (item.querySelector('.alert-ack'));
  if (ack) {
    ack.hidden = alert.status !== 'pending';
    ack.setAttribute('aria-label', `Acknowledge ${alert.title}`); // one of many "Acknowledge"
  }
}

/**
 * Newest first, at most `limit`.
 * @param {Map<string, Alert>} alertsById
 * @param {number} [limit]
 * @returns {Alert[]}
 */
export function newestFirst(alertsById, limit = SHOWN_ALERTS) {
  return [...alertsById.values()].sort((a, b) => b.created_at_ms - a.created_at_ms).slice(0, limit);
}

export class AlertsPanel {
  /** @param {(text: string) => void} say where messages for the user go */
  constructor(say) {
    /** @type {Map<string, Alert>} */
    this.alerts = new Map();
    this.list = byId('alerts-list');
    this.say = say;
  }

  async start() {
    await this.loadAlerts();
  }

  async loadAlerts() {
    try {
      const body = await callApi('GET', `/api/alerts?limit=${SHOWN_ALERTS}`);
      for (const alert of body.alerts) this.alerts.set(alert.id, alert);
      this.render();
    } catch (error) {
      this.say(`Alerts unavailable: ${errorText(error)}`);
    }
  }

  /** A new or changed alert (from /ws or from an acknowledge). */
  /** @param {Alert} alert */
  upsert(alert) {
    this.alerts.set(alert.id, alert);
    this.render();
  }

  render() {
    const shown = newestFirst(this.alerts);
    syncList(this.list, shown, (a) => a.id, () => createAlertItem((id, button) => this.ack(id, button)), updateAlertItem);
    byId('alerts-empty').hidden = shown.length > 0;
  }

  /**
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
      this.say(explainFailure(error, 'acknowledge'));
    } finally {
      button.disabled = false;
    }
  }
}
