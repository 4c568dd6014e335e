// Alert rules: the token form, the rule form (create) and the rule list (delete).

import {
  apiToken, callApi, errorText, explainFailure, needsToken, setApiToken,
} from './api.js';
import {
  byId, el, find, inputById, setText, syncList,
} from './dom.js';

const THRESHOLD_KINDS = new Set(['price_above', 'price_below', 'change_above', 'change_below']);

export class RulesPanel {
  constructor() {
    this.status = byId('rules-status');
    /** @param {string} text */
    this.say = (text) => setText(this.status, text);
  }

  /** @param {string[]} symbols the choices of the rule form's symbol field */
  async start(symbols) {
    this.fillSymbols(symbols);
    this.bindForms();
    await this.loadRules();
  }

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
    if (!needsToken('create the rule', this.say)) return;
    try {
      const body = await callApi('POST', '/api/alerts/rules', this.ruleFromForm(), { authorized: true });
      this.say(`Rule created: ${body.rule.title || body.rule.kind}`);
      await this.loadRules();
    } catch (error) {
      this.say(explainFailure(error, 'create the rule'));
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
    if (!needsToken('delete the rule', this.say)) return;
    try {
      await callApi('DELETE', `/api/alerts/rules/${encodeURIComponent(id)}`, undefined, { authorized: true });
      this.say('Rule deleted.');
      await this.loadRules();
    } catch (error) {
      this.say(explainFailure(error, 'delete the rule'));
    }
  }
}
