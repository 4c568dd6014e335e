// Alert rules: the token form, the rule form (create) and the rule list (delete).
//
// The rule form's numbers are text fields read for the user's locale (numbers.js):
// "86.459,5" in de-DE is 86459.5, in en-US it is refused with the reason. Under the
// fields the form says what it is about to save ("Will save: BTCUSDT price at or above
// 86,459.5 · …") or why it refuses, and the submit button refuses while a field does.
// Kind "conditions" builds a compound rule from the condition rows of conditions.js;
// any rule may carry a message template (checked by the server on save: its refusal
// is shown with the server's message).

import {
  apiToken, callApi, errorText, explainFailure, needsToken, setApiToken,
} from './api.js';
import {
  byId, el, find, inputById, setText, syncList,
} from './dom.js';
import { ConditionList, describeCondition, nameOf } from './conditions.js';
import { formatForLocale, parseNumber, userLocale } from './numbers.js';

const DEFAULT_COOLDOWN_SECONDS = 300;
const MAX_COOLDOWN_SECONDS = 86_400;
const RULES_PAGE = 200; // the most GET /api/alerts/rules returns at once
const MAX_CHANGE_PCT = 1_000_000;
const MAX_FUNDING_RATE = 0.05; // a fraction per funding interval (5 %)

/**
 * @typedef {import('./conditions.js').ReadRules} ReadRules
 * @typedef {import('./conditions.js').Condition} Condition
 * @typedef {Record<string, string | number | Condition[]>} RuleBody what the form sends
 */

/**
 * The threshold of each family of kinds that has one: how it is read (the server's
 * THRESHOLD_RANGES of app/services/alerts/rules.py), its unit and an example.
 * @type {Record<string, {rules: ReadRules, unit: string, example: number | null}>}
 */
const THRESHOLDS = {
  price: { rules: { above: 0 }, unit: 'price (quote currency)', example: null },
  change: { rules: { negative: true, min: -MAX_CHANGE_PCT, max: MAX_CHANGE_PCT }, unit: '% (24h change)', example: null },
  funding: {
    rules: { negative: true, min: -MAX_FUNDING_RATE, max: MAX_FUNDING_RATE },
    unit: 'fraction per funding interval (0.0005 = 0.05 %)',
    example: 0.0005,
  },
  open_interest_change: {
    rules: { negative: true, min: -100, max: MAX_CHANGE_PCT }, unit: '% (open interest now against 1 h ago)', example: 5,
  },
  long_short: { rules: { above: 0, max: 1000 }, unit: 'accounts long ÷ short', example: 2 },
  component: { rules: { min: 0, max: 100 }, unit: 'score 0–100 (all timeframes combined)', example: 80 },
};

/**
 * The family of a kind: "funding" for funding_above, "open_interest_change" for
 * open_interest_change_below.
 * @param {string} kind
 */
const familyOf = (kind) => kind.slice(0, kind.lastIndexOf('_'));

/** @param {string} kind */
const thresholdOf = (kind) => (['confluence_long', 'confluence_short', 'conditions'].includes(kind) ? undefined : THRESHOLDS[familyOf(kind)]);

/**
 * The hysteresis of each kind that has one (none: beta_band_change): the server's
 * default, its unit and the largest value the server takes (DEFAULT_HYSTERESIS,
 * HYSTERESIS_UNITS and MAX_HYSTERESIS of app/services/alerts/conditions.py; the page
 * test checks every kind against them).
 * @type {Record<string, {fallback: number, unit: string, max: number}>}
 */
const HYSTERESIS = {
  price_above: { fallback: 0.5, unit: '% of the threshold', max: 50 },
  price_below: { fallback: 0.5, unit: '% of the threshold', max: 50 },
  change_above: { fallback: 0.5, unit: 'percentage points', max: 100 },
  change_below: { fallback: 0.5, unit: 'percentage points', max: 100 },
  confluence_long: { fallback: 5, unit: 'score points', max: 50 },
  confluence_short: { fallback: 5, unit: 'score points', max: 50 },
  funding_above: { fallback: 0.00005, unit: 'funding rate (a fraction, absolute)', max: 0.01 },
  funding_below: { fallback: 0.00005, unit: 'funding rate (a fraction, absolute)', max: 0.01 },
  open_interest_change_above: { fallback: 0.5, unit: 'percentage points', max: 100 },
  open_interest_change_below: { fallback: 0.5, unit: 'percentage points', max: 100 },
  long_short_above: { fallback: 0.05, unit: 'ratio units (absolute)', max: 10 },
  long_short_below: { fallback: 0.05, unit: 'ratio units (absolute)', max: 10 },
  component_above: { fallback: 5, unit: 'score points', max: 50 },
  component_below: { fallback: 5, unit: 'score points', max: 50 },
};

/**
 * A threshold the page's settings carry (data-long-threshold …) as the locale writes it.
 * @param {string} name the body's dataset key
 * @param {string} otherwise the words when the page does not carry it
 */
function configured(name, otherwise) {
  const value = Number(document.body.dataset[name]);
  return document.body.dataset[name] && Number.isFinite(value) ? formatForLocale(value) : otherwise;
}

/**
 * What a rule of each kind watches, in words, with its threshold as the user's locale
 * writes it (confluence rules: the configured thresholds, from the page; a funding
 * rate also in percent; component rules: the component).
 * @type {Record<string, (value: string, rule: RuleBody) => string>}
 */
const KIND_WORDS = {
  price_above: (v) => `price at or above ${v}`,
  price_below: (v) => `price at or below ${v}`,
  change_above: (v) => `24h change at or above ${v} %`,
  change_below: (v) => `24h change at or below ${v} %`,
  confluence_long: () => `confluence score at or above ${configured('longThreshold', 'the long threshold')}`,
  confluence_short: () => `confluence score at or below ${configured('shortThreshold', 'the short threshold')}`,
  beta_band_change: () => 'beta band change',
  funding_above: (v) => `funding rate at or above ${v} per funding interval`,
  funding_below: (v) => `funding rate at or below ${v} per funding interval`,
  open_interest_change_above: (v) => `1h open interest change at or above ${v} %`,
  open_interest_change_below: (v) => `1h open interest change at or below ${v} %`,
  long_short_above: (v) => `long/short ratio at or above ${v} (accounts long ÷ short)`,
  long_short_below: (v) => `long/short ratio at or below ${v} (accounts long ÷ short)`,
  component_above: (v, rule) => `${rule.component} component at or above ${v} (all timeframes)`,
  component_below: (v, rule) => `${rule.component} component at or below ${v} (all timeframes)`,
};

/**
 * A rule the form would send, or the first field that refuses.
 * @typedef {{rule: RuleBody, error: null, preview: string}
 *   | {rule: null, error: {field: string, message: string}, preview: string}} FormReading
 */

export class RulesPanel {
  constructor() {
    this.status = byId('rules-status');
    /** @param {string} text */
    this.say = (text) => setText(this.status, text);
    this.locale = userLocale();
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
    const form = byId('rule-form');
    const add = /** @type {HTMLButtonElement} */ (byId('rule-condition-add'));
    this.conditions = new ConditionList(byId('rule-condition-list'), add, () => this.showPreview());
    inputById('rule-kind').addEventListener('change', () => this.showKind());
    form.addEventListener('input', () => this.showPreview());
    form.addEventListener('change', () => this.showPreview());
    this.showKind();
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.createRule();
    });
  }

  /**
   * Shows the fields of the chosen kind: the threshold with its unit and an example, the
   * component select for component rules, the default hysteresis as a placeholder.
   */
  showKind() {
    const kind = inputById('rule-kind').value;
    const threshold = thresholdOf(kind);
    byId('rule-threshold-label').hidden = !threshold;
    if (threshold) {
      setText(byId('rule-threshold-unit'), threshold.unit);
      inputById('rule-threshold').placeholder = threshold.example === null ? '' : `e.g. ${this.number(threshold.example)}`;
    }
    byId('rule-component-label').hidden = familyOf(kind) !== 'component';
    byId('rule-conditions').hidden = kind !== 'conditions';
    const hysteresis = HYSTERESIS[kind];
    byId('rule-hysteresis-label').hidden = !hysteresis;
    if (hysteresis) {
      inputById('rule-hysteresis').placeholder = `default ${this.number(hysteresis.fallback)}`;
      setText(byId('rule-hysteresis-unit'), hysteresis.unit);
    }
    this.showPreview();
  }

  /**
   * @param {number} value
   * @returns {string} the value as the user's locale writes it
   */
  number(value) {
    return formatForLocale(value, this.locale);
  }

  /**
   * A number field of the form, read for the user's locale.
   * @param {string} id
   * @param {string} name the field's name in messages
   * @param {ReadRules} rules
   * @returns {{value: number | null, error: string | null}}
   */
  readNumber(id, name, rules) {
    const input = inputById(id);
    const parsed = parseNumber(input.value, this.locale, rules);
    let { error } = parsed;
    const { value } = parsed;
    if (!error && value !== null) error = this.outOfRange(value, rules);
    if (error) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
    return { value: error ? null : value, error: error && `${name}: ${error}` };
  }

  /**
   * @param {number} value
   * @param {{min?: number, max?: number, above?: number}} rules
   * @returns {string | null}
   */
  outOfRange(value, { min, max, above }) {
    if (above !== undefined && !(value > above)) return `must be above ${this.number(above)}`;
    if (min !== undefined && value < min) return `at least ${this.number(min)}`;
    if (max !== undefined && value > max) return `at most ${this.number(max)}`;
    return null;
  }

  /** @returns {FormReading} what the form would send, or the first field that refuses */
  readForm() {
    const kind = inputById('rule-kind').value;
    /** @type {RuleBody} */
    const rule = { kind, level: inputById('rule-level').value };
    const symbol = inputById('rule-symbol').value;
    if (symbol) rule.symbol = symbol;
    const title = inputById('rule-title').value.trim();
    if (title) rule.title = title;
    if (familyOf(kind) === 'component') rule.component = inputById('rule-component').value;
    const template = inputById('rule-template').value.trim();
    if (template) rule.template = template;
    if (kind === 'conditions' && this.conditions) {
      const read = this.conditions.read((id, name, rules) => this.readNumber(id, name, rules));
      this.showTemplateValues(read.conditions);
      if (read.error) return { rule: null, error: read.error, preview: read.error.message };
      rule.conditions = read.conditions;
      rule.join = inputById('rule-join').value;
    } else this.showTemplateValues(null);
    const fields = this.numberFields(kind);
    for (const [key, field] of Object.entries(fields)) {
      const { value, error } = this.readNumber(field.id, field.name, field.rules);
      if (error) return { rule: null, error: { field: field.id, message: error }, preview: error };
      if (value !== null) rule[key] = value;
      else if (field.required) {
        const message = `${field.name}: required for ${kind.split('_').join(' ')}`;
        return { rule: null, error: { field: field.id, message }, preview: message };
      }
    }
    return { rule, error: null, preview: this.describe(rule) };
  }

  /**
   * The number fields the kind uses and how each is read.
   * @param {string} kind
   * @returns {Record<string, {id: string, name: string, required: boolean, rules: ReadRules}>}
   */
  numberFields(kind) {
    /** @type {ReturnType<RulesPanel['numberFields']>} */
    const fields = {};
    const threshold = thresholdOf(kind);
    if (threshold) {
      fields.threshold = {
        id: 'rule-threshold', name: 'Threshold', required: true, rules: threshold.rules,
      };
    }
    fields.cooldown_seconds = {
      id: 'rule-cooldown', name: 'Cooldown', required: false, rules: { integer: true, min: 0, max: MAX_COOLDOWN_SECONDS },
    };
    const hysteresis = HYSTERESIS[kind];
    if (hysteresis) {
      fields.hysteresis = { id: 'rule-hysteresis', name: 'Hysteresis', required: false, rules: { min: 0, max: hysteresis.max } };
    }
    return fields;
  }

  /**
   * The template hint's list of a compound rule's own variables (values.price,
   * values.signal_5m …); empty for the other kinds.
   * @param {Condition[] | null} conditions
   */
  showTemplateValues(conditions) {
    const names = (conditions || []).map((c) => `values.${nameOf(c)}`);
    setText(byId('rule-template-values'), names.length ? `This rule's values: ${[...new Set(names)].join(', ')}.` : '');
  }

  /**
   * "Will save: BTCUSDT price at or above 86,459.5 · hysteresis 0.5 % of the threshold
   * (default) · cooldown 300 s · warning", numbers as the user's locale writes them.
   * @param {RuleBody} rule
   * @returns {string}
   */
  describe(rule) {
    const kind = String(rule.kind);
    const parts = [`${rule.symbol || 'every symbol'}: ${this.watched(rule)}`];
    const hysteresis = HYSTERESIS[kind];
    if (hysteresis) {
      const given = typeof rule.hysteresis === 'number';
      const value = this.number(given ? Number(rule.hysteresis) : hysteresis.fallback);
      parts.push(`hysteresis ${value} ${hysteresis.unit}${given ? '' : ' (default)'}`);
    }
    const cooldown = typeof rule.cooldown_seconds === 'number' ? rule.cooldown_seconds : DEFAULT_COOLDOWN_SECONDS;
    parts.push(`cooldown ${this.number(cooldown)} s${rule.cooldown_seconds === undefined ? ' (default)' : ''}`);
    parts.push(String(rule.level));
    if (rule.template) parts.push('message from the template');
    return `Will save: ${parts.join(' · ')}`;
  }

  /**
   * What a rule watches in words: "price at or above 86,459.5", or for a compound rule
   * the server's description of its conditions ("any of: price at or above 60,000;
   * signal (5m) becomes long").
   * @param {RuleBody} rule
   * @returns {string}
   */
  watched(rule) {
    if (Array.isArray(rule.conditions)) {
      const parts = rule.conditions.map((c) => describeCondition(c, (v) => this.number(v)));
      return parts.length === 1 ? parts[0] : `${rule.join} of: ${parts.join('; ')}`;
    }
    const kind = String(rule.kind);
    let threshold = typeof rule.threshold === 'number' ? this.number(rule.threshold) : '';
    if (familyOf(kind) === 'funding' && typeof rule.threshold === 'number') {
      threshold += ` (${this.number(rule.threshold * 100)} %)`;
    }
    return KIND_WORDS[kind](threshold, rule);
  }

  /** @returns {FormReading} */
  showPreview() {
    const reading = this.readForm();
    const preview = byId('rule-preview');
    setText(preview, reading.error ? `Not saved: ${reading.preview}` : reading.preview);
    preview.classList.toggle('is-error', reading.error !== null);
    const submit = /** @type {HTMLButtonElement} */ (find(byId('rule-form'), 'button[type=submit]'));
    submit.setAttribute('aria-disabled', String(reading.error !== null));
    return reading;
  }

  async createRule() {
    const reading = this.showPreview();
    if (reading.error) {
      this.say(`Not saved: ${reading.error.message}`);
      inputById(reading.error.field).focus();
      return;
    }
    if (!needsToken('create the rule', this.say)) return;
    const template = inputById('rule-template');
    template.removeAttribute('aria-invalid');
    try {
      const body = await callApi('POST', '/api/alerts/rules', reading.rule, { authorized: true });
      this.say(`Rule created: ${body.rule.title || body.rule.description || body.rule.kind}`);
      await this.loadRules();
    } catch (error) {
      this.say(explainFailure(error, 'create the rule'));
      if (errorText(error).startsWith('template:')) template.setAttribute('aria-invalid', 'true');
    }
  }

  async loadRules() {
    try {
      this.renderRules(await fetchAllRules());
    } catch (error) {
      this.say(`Rules unavailable: ${errorText(error)}`);
    }
  }

  /**
   * Each rule in words: the server's `description` when the rule has one, else its
   * kind and threshold.
   * @param {Array<{id: string, kind: string, level: string, symbol?: string | null,
   *   threshold?: number | null, title?: string | null, description?: string | null}>} rules
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
      const threshold = rule.threshold == null ? '' : ` ${this.number(rule.threshold)}`;
      const what = rule.description || `${rule.kind}${threshold}`;
      const text = `${rule.level} · ${target} · ${what}${rule.title ? ` · ${rule.title}` : ''}`;
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

/**
 * Every stored rule: pages of RULES_PAGE until the server's `total` is reached (or a
 * page comes back empty).
 * @returns {Promise<any[]>}
 */
async function fetchAllRules() {
  /** @type {any[]} */
  const rules = [];
  for (;;) {
    const body = await callApi('GET', `/api/alerts/rules?limit=${RULES_PAGE}&offset=${rules.length}`);
    rules.push(...body.rules);
    if (body.rules.length === 0 || rules.length >= body.total) return rules;
  }
}
