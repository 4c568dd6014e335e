// Alerts: the live list with acknowledge, and the rule form (create, list, delete).

import {
  ApiError, apiToken, callApi, errorText, setApiToken,
} from './api.js';
import {
  byId, el, find, formatTime, inputById, setChoiceClass, setText, syncList,
} from './dom.js';

const LEVELS = ['info', 'warning', 'critical'];
const THRESHOLD_KINDS = new Set(['price_above', 'price_below', 'change_above', 'change_below']);
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
  constructor() {
    /** @type {Map<string, Alert>} */
    this.alerts = new Map();
    this.list = byId('alerts-list');
    this.rulesStatus = byId('rules-status');
  }

  /** @param {string[]} symbols the choices of the rule form's symbol field */
  async start(symbols) {
    this.fillSymbols(symbols);
    this.bindForms();
    await Promise.all([this.loadAlerts(), this.loadRules()]);
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
    if (!this.hasToken('acknowledge')) return;
    button.disabled = true;
    try {
      const body = await callApi('POST', `/api/alerts/${encodeURIComponent(id)}/ack`, undefined, { authorized: true });
      this.upsert(body.alert);
      this.say('');
    } catch (error) {
      this.say(this.explain(error, 'acknowledge'));
    } finally {
      button.disabled = false;
    }
  }

  // --- rules -------------------------------------------------------------------------

  /** @param {string[]} symbols */
  fillSymbols(symbols) {
    const select = inputById('rule-symbol');
    for (const symbol of symbols) {
      const option = el('option', '', symbol);
      option.value = symbol;
      select.append(option);
    }
  }

  bindForms() {
    const token = inputById('api-token');
    token.value = apiToken();
    byId('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      setApiToken(token.value.trim());
      this.say(token.value.trim() ? 'Token kept for this tab.' : 'Token cleared.');
    });
    const kind = inputById('rule-kind');
    const showThreshold = () => {
      byId('rule-threshold-label').hidden = !THRESHOLD_KINDS.has(kind.value);
    };
    kind.addEventListener('change', showThreshold);
    showThreshold();
    byId('rule-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.createRule();
    });
  }

  ruleFromForm() {
    const kind = inputById('rule-kind').value;
    /** @type {Record<string, string | number | null>} */
    const rule = {
      kind,
      level: inputById('rule-level').value,
      cooldown_seconds: Number(inputById('rule-cooldown').value || 0),
    };
    const symbol = inputById('rule-symbol').value;
    if (symbol) rule.symbol = symbol;
    const title = inputById('rule-title').value.trim();
    if (title) rule.title = title;
    if (THRESHOLD_KINDS.has(kind)) {
      const threshold = inputById('rule-threshold').value;
      rule.threshold = threshold === '' ? null : Number(threshold);
    }
    return rule;
  }

  async createRule() {
    if (!this.hasToken('create the rule')) return;
    try {
      const body = await callApi('POST', '/api/alerts/rules', this.ruleFromForm(), { authorized: true });
      this.say(`Rule created: ${body.rule.title || body.rule.kind}`);
      await this.loadRules();
    } catch (error) {
      this.say(this.explain(error, 'create the rule'));
    }
  }

  async loadRules() {
    try {
      const body = await callApi('GET', '/api/alerts/rules');
      this.renderRules(body.rules);
    } catch (error) {
      this.say(`Rules unavailable: ${errorText(error)}`);
    }
  }

  /**
   * @param {Array<{id: string, kind: string, level: string, symbol?: string | null,
   *   threshold?: number | null, title?: string | null}>} rules
   */
  renderRules(rules) {
    syncList(byId('rules-list'), rules, (r) => r.id, (rule) => {
      const item = el('li', 'rule');
      const remove = el('button', 'rule-delete', 'Delete');
      remove.type = 'button';
      remove.addEventListener('click', () => this.deleteRule(rule.id));
      item.append(el('span', 'rule-text'), remove);
      return item;
    }, (item, rule) => {
      const target = rule.symbol || 'every symbol';
      const threshold = rule.threshold == null ? '' : ` ${rule.threshold}`;
      const text = `${rule.level} · ${rule.kind}${threshold} · ${target}${rule.title ? ` · ${rule.title}` : ''}`;
      setText(find(item, '.rule-text'), text);
      find(item, '.rule-delete').setAttribute('aria-label', `Delete rule ${text}`);
    });
  }

  /** @param {string} id */
  async deleteRule(id) {
    if (!this.hasToken('delete the rule')) return;
    try {
      await callApi('DELETE', `/api/alerts/rules/${encodeURIComponent(id)}`, undefined, { authorized: true });
      this.say('Rule deleted.');
      await this.loadRules();
    } catch (error) {
      this.say(this.explain(error, 'delete the rule'));
    }
  }

  /** Writes need the API token: without one, say so instead of sending a doomed request. */
  /**
   * @param {string} action what the user wanted, said in the message
   * @returns {boolean}
   */
  hasToken(action) {
    if (apiToken()) return true;
    this.say(`Could not ${action}: enter the API token first.`);
    return false;
  }

  /**
   * @param {unknown} error
   * @param {string} action
   * @returns {string}
   */
  explain(error, action) {
    if (error instanceof ApiError && error.status === 401) {
      return `Could not ${action}: the API token was refused.`;
    }
    return `Could not ${action}: ${errorText(error)}`;
  }

  /** @param {string} text */
  say(text) {
    setText(this.rulesStatus, text);
  }
}
