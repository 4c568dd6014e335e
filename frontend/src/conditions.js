// The conditions of a compound rule (kind "conditions") in the rule form: one to five
// rows, each a metric, a comparison the metric accepts, a value (a number typed the
// locale's way, or a state), a timeframe where the metric takes one and a component
// for the component metric. What each metric accepts mirrors the server's
// app/services/alerts/compound.py (NUMERIC, STATES, TIMEFRAMES_OF); the page test
// checks the choices against it.

import { el, setText } from './dom.js';

/**
 * How a number field is read: numbers.js's options and the range the server takes.
 * @typedef {import('./numbers.js').ParseOptions & {min?: number, max?: number, above?: number}} ReadRules
 * @typedef {(id: string, name: string, rules: ReadRules) => {value: number | null, error: string | null}} ReadNumber
 * @typedef {{metric: string, comparison: string, value?: number | string,
 *   timeframe?: string, component?: string}} Condition
 * @typedef {{words: string, unit?: string, rules?: ReadRules, states?: readonly string[],
 *   timeframes?: readonly string[], required?: boolean, none?: string}} MetricSpec
 */

export const MAX_CONDITIONS = 5;
const TIMEFRAMES = ['1m', '5m', '30m', '1h', '4h', '1d'];
const BETA_TIMEFRAMES = ['4h', '1h', '5m'];
const COMPONENTS = ['technical', 'volume', 'orderflow', 'sentiment', 'orderbook', 'price_structure'];
const COMBINED = 'all timeframes combined';
/** @type {Record<string, string>} */
const COMPARISON_WORDS = {
  above: 'at or above', below: 'at or below', is: 'is', becomes: 'becomes', changes: 'changes',
};

/**
 * Every metric a condition may compare, in the server's order.
 * @type {Record<string, MetricSpec>}
 */
export const METRICS = {
  price: { words: 'price', unit: 'quote currency', rules: { above: 0 } },
  change_24h_pct: { words: '24h change %', unit: '%', rules: { negative: true, min: -1_000_000, max: 1_000_000 } },
  volume_spike: {
    words: 'volume spike', unit: 'last candle ÷ mean of 20', rules: { min: 0, max: 1000 }, timeframes: TIMEFRAMES, required: true,
  },
  confluence: { words: 'confluence score', unit: 'score 0–100', rules: { min: 0, max: 100 }, timeframes: TIMEFRAMES, none: COMBINED },
  component: { words: 'component score', unit: 'score 0–100', rules: { min: 0, max: 100 }, timeframes: TIMEFRAMES, none: COMBINED },
  signal: { words: 'signal', states: ['long', 'short', 'neutral'], timeframes: TIMEFRAMES, none: COMBINED },
  beta_band: {
    words: 'beta band', states: ['high', 'moderate', 'neutral', 'low', 'defensive'], timeframes: BETA_TIMEFRAMES, none: 'headline beta',
  },
  funding_rate: {
    words: 'funding rate', unit: 'fraction per interval (0.0005 = 0.05 %)', rules: { negative: true, min: -0.05, max: 0.05 },
  },
  open_interest_change_pct: {
    words: '1h open interest change %', unit: '%', rules: { negative: true, min: -100, max: 1_000_000 },
  },
  long_short_ratio: { words: 'long/short ratio', unit: 'accounts long ÷ short', rules: { above: 0, max: 1000 } },
};

/**
 * The comparisons a metric accepts: above/below for a number, is/becomes/changes for a state.
 * @param {string} metric
 * @returns {string[]}
 */
export const comparisonsOf = (metric) => (METRICS[metric].states ? ['is', 'becomes', 'changes'] : ['above', 'below']);

/**
 * A condition's name in an alert's values (the server's ConditionInput.name):
 * metric, component and timeframe joined by "_", e.g. signal_5m.
 * @param {Condition} c
 */
export const nameOf = (c) => [c.metric, c.component, c.timeframe].filter(Boolean).join('_');

/**
 * A condition in words, as the server describes it (numbers as the locale writes them):
 * "price at or above 60,000", "signal (5m) becomes long", "beta band changes".
 * @param {Condition} c
 * @param {(value: number) => string} number
 */
export function describeCondition(c, number) {
  let what = c.component ? `${c.component} component` : c.metric.split('_').join(' ');
  if (c.timeframe) what += ` (${c.timeframe})`;
  else if (['confluence', 'component', 'signal'].includes(c.metric)) what += ` (${COMBINED})`;
  const value = typeof c.value === 'number' ? number(c.value) : c.value;
  if (c.comparison === 'changes') return `${what} changes`;
  return `${what} ${COMPARISON_WORDS[c.comparison]} ${value}`;
}

/**
 * Options of a select: [value, text] pairs, keeping the chosen value when it is still offered.
 * @param {HTMLSelectElement} select
 * @param {Array<[string, string]>} choices
 */
function offer(select, choices) {
  const before = select.value;
  select.replaceChildren(...choices.map(([value, text]) => Object.assign(el('option', '', text), { value })));
  if (choices.some(([value]) => value === before)) select.value = before;
}

let serial = 0;

/** One row of the list: its controls, labelled by the row's number. */
class ConditionRow {
  constructor() {
    const id = `rule-condition-${++serial}`;
    this.node = el('li', 'condition');
    this.metric = el('select');
    offer(this.metric, Object.entries(METRICS).map(([key, spec]) => [key, spec.words]));
    this.comparison = el('select');
    this.number = el('input');
    Object.assign(this.number, { id: `${id}-value`, type: 'text', inputMode: 'decimal', autocomplete: 'off', spellcheck: false });
    this.unit = el('span', 'unit');
    this.state = el('select');
    this.timeframe = el('select');
    this.component = el('select');
    offer(this.component, COMPONENTS.map((c) => [c, c.replace('_', ' ')]));
    this.remove = el('button', 'condition-remove', 'Remove');
    this.remove.type = 'button';
    /** @type {Record<string, HTMLElement>} the label of each control, hidden when it does not apply */
    this.labels = {
      metric: this.field('Metric', this.metric),
      component: this.field('Component', this.component),
      comparison: this.field('Comparison', this.comparison),
      number: this.field('Value', this.number, this.unit),
      state: this.field('State', this.state),
      timeframe: this.field('Timeframe', this.timeframe),
    };
    this.node.append(...Object.values(this.labels), this.remove);
    this.metric.addEventListener('change', () => this.fit());
    this.comparison.addEventListener('change', () => this.fit());
    this.fit();
  }

  /**
   * @param {string} text the visible label
   * @param {HTMLElement} control
   * @param {HTMLElement[]} extra shown after the control
   */
  field(text, control, ...extra) {
    const label = el('label');
    label.append(el('span', '', text), control, ...extra);
    control.dataset.field = text.toLowerCase();
    return label;
  }

  /** @param {number} n the row's number (1-based): the controls' accessible names */
  numbered(n) {
    for (const control of [this.metric, this.component, this.comparison, this.number, this.state, this.timeframe]) {
      control.setAttribute('aria-label', `Condition ${n} ${control.dataset.field}`);
    }
    this.remove.setAttribute('aria-label', `Remove condition ${n}`);
  }

  /** Offers what the chosen metric accepts and shows only the fields that apply. */
  fit() {
    const spec = METRICS[this.metric.value];
    offer(this.comparison, comparisonsOf(this.metric.value).map((c) => [c, COMPARISON_WORDS[c]]));
    if (spec.states) offer(this.state, spec.states.map((s) => [s, s]));
    const timeframes = (spec.timeframes || []).map((t) => /** @type {[string, string]} */ ([t, t]));
    if (spec.none) timeframes.unshift(['', spec.none]);
    offer(this.timeframe, timeframes);
    setText(this.unit, spec.unit || '');
    this.labels.component.hidden = this.metric.value !== 'component';
    this.labels.number.hidden = !spec.rules;
    this.labels.state.hidden = !spec.states || this.comparison.value === 'changes';
    this.labels.timeframe.hidden = !spec.timeframes;
    if (!spec.rules) this.number.removeAttribute('aria-invalid');
  }

  /**
   * The condition this row says, or why it refuses.
   * @param {number} n the row's number
   * @param {ReadNumber} readNumber
   * @returns {{condition: Condition, error: null} | {condition: null, error: {field: string, message: string}}}
   */
  read(n, readNumber) {
    const metric = this.metric.value;
    const spec = METRICS[metric];
    /** @type {Condition} */
    const condition = { metric, comparison: this.comparison.value };
    if (metric === 'component') condition.component = this.component.value;
    if (spec.timeframes && this.timeframe.value) condition.timeframe = this.timeframe.value;
    if (spec.rules) {
      const name = `Condition ${n} value`;
      const { value, error } = readNumber(this.number.id, name, spec.rules);
      if (error) return { condition: null, error: { field: this.number.id, message: error } };
      if (value === null) {
        return { condition: null, error: { field: this.number.id, message: `${name}: required for ${spec.words}` } };
      }
      condition.value = value;
    } else if (condition.comparison !== 'changes') condition.value = this.state.value;
    return { condition, error: null };
  }
}

/** The rows of the form's condition list, with its add button. */
export class ConditionList {
  /**
   * @param {HTMLElement} list the <ol> of rows
   * @param {HTMLButtonElement} addButton
   * @param {() => void} changed told after the user added or removed a row
   */
  constructor(list, addButton, changed) {
    this.list = list;
    this.addButton = addButton;
    this.changed = changed;
    /** @type {ConditionRow[]} */
    this.rows = [];
    addButton.addEventListener('click', () => this.add());
    this.add(false);
  }

  /** @param {boolean} [focus] move the focus to the new row's metric */
  add(focus = true) {
    if (this.rows.length >= MAX_CONDITIONS) return;
    const row = new ConditionRow();
    row.remove.addEventListener('click', () => this.drop(row));
    this.rows.push(row);
    this.list.append(row.node);
    this.renumber();
    if (!focus) return;
    row.metric.focus();
    this.changed();
  }

  /** @param {ConditionRow} row */
  drop(row) {
    if (this.rows.length <= 1) return;
    const at = this.rows.indexOf(row);
    this.rows.splice(at, 1);
    row.node.remove();
    this.renumber();
    this.rows[Math.min(at, this.rows.length - 1)].metric.focus();
    this.changed();
  }

  renumber() {
    this.rows.forEach((row, i) => {
      row.numbered(i + 1);
      row.remove.hidden = this.rows.length === 1;
    });
    const full = this.rows.length >= MAX_CONDITIONS;
    this.addButton.disabled = full;
    setText(this.addButton, full ? `At most ${MAX_CONDITIONS} conditions` : 'Add condition');
  }

  /**
   * @param {ReadNumber} readNumber
   * @returns {{conditions: Condition[], error: null} | {conditions: null, error: {field: string, message: string}}}
   */
  read(readNumber) {
    /** @type {Condition[]} */
    const conditions = [];
    for (const [i, row] of this.rows.entries()) {
      const reading = row.read(i + 1, readNumber);
      if (reading.error) return { conditions: null, error: reading.error };
      conditions.push(reading.condition);
    }
    return { conditions, error: null };
  }
}
