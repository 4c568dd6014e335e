// Numbers typed by a user, and large numbers and funding rates shown to one. No DOM here:
// node tests it alone.
//
// Input (parseNumber), for the user's locale (its decimal and group separators and
// grouping sizes, from Intl.NumberFormat(locale).formatToParts):
//   accepted: plain digits (also full-width and the locale's own digits); the locale's
//     decimal separator (once); its group separator, or a space, between groups of 3
//     digits (or the locale's own grouping, e.g. 12,34,567 in hi-IN) before the decimal
//     separator only; "." as the decimal point in a locale whose decimal separator is
//     another character, when it cannot be read as a group separator ("1.5", "0.001",
//     "1.2345" in de-DE); a leading "-" (or "−") where negatives are allowed, a leading "+";
//   refused with a message naming the problem: "1.234" in de-DE or fr-FR (thousands or
//     decimals?), a separator in a wrong place ("86459,5" and "1,2,3" in en-US), grouping
//     after the decimal separator ("86.459,5" in en-US), two decimal separators, exponent
//     notation ("1e5"), more than 15 significant digits (a double would silently round
//     them), a magnitude a double cannot hold as typed (above ~1.8e308 it is Infinity,
//     below ~2.2e-308 it loses digits or becomes 0), any other character;
//   "1,234" in en-US is 1234 (the locale's own way to write it); the form shows the value
//     it is about to save, so a reading the user did not mean is seen before it is saved.
//
// Display (formatMagnitude), the same in every locale (like prices, "." for decimals):
//   null, undefined, NaN, ±Infinity → "—"; 0 → "0";
//   |v| < 1 → 3 significant digits, 4+ zeros after the point as 0.0ₙ (0.00000001 → 0.0₇1);
//   1 ≤ |v| < 1000 → 2 decimals; then K, M, B, T with 2 decimals (1234567 → 1.23M),
//   rounded first, so 999.995 is 1.00K, not 1000.00; from 1e15 → 3.34×10¹⁷;
//   negatives with a leading "-".

import { compactZeros } from './prices.js';

/** Significant digits a double keeps exactly: input with more is refused. */
export const MAX_SIGNIFICANT_DIGITS = 15;
/** The smallest normal double: below it a double keeps fewer digits (then none). */
const MIN_NORMAL = 2.2250738585072014e-308;
const SUPERSCRIPTS = '⁰¹²³⁴⁵⁶⁷⁸⁹';
const UNITS = /** @type {const} */ (['', 'K', 'M', 'B', 'T']);

/**
 * @typedef {{decimal: string, group: string, primary: number, secondary: number,
 *   digits: string[]}} Separators
 * @typedef {{value: number | null, error: string | null}} Parsed
 *   value null and error null: the input was empty
 * @typedef {{negative?: boolean, integer?: boolean}} ParseOptions
 */

/** @type {Map<string, Separators>} */
const separatorCache = new Map();

/**
 * The user's locale as the browser's Intl sees it (node: the process's).
 * @returns {string}
 */
export const userLocale = () => new Intl.NumberFormat().resolvedOptions().locale;

/**
 * A separator as it reads after NFKC (the narrow and the plain no-break space become " ").
 * @param {string} text
 */
const normalized = (text) => text.normalize('NFKC').replace(/\s/gu, ' ');

/**
 * The locale's decimal and group separators, its grouping sizes and its digits.
 * @param {string} locale
 * @returns {Separators}
 */
export function separatorsOf(locale) {
  const cached = separatorCache.get(locale);
  if (cached) return cached;
  const parts = new Intl.NumberFormat(locale, { useGrouping: true }).formatToParts(1234567890.5);
  const sizes = parts.filter((p) => p.type === 'integer').map((p) => p.value.length);
  const plain = new Intl.NumberFormat(locale, { useGrouping: false });
  const found = {
    decimal: normalized(parts.find((p) => p.type === 'decimal')?.value ?? '.'),
    group: normalized(parts.find((p) => p.type === 'group')?.value ?? ','),
    primary: sizes.length > 1 ? sizes[sizes.length - 1] : 3,
    secondary: sizes.length > 2 ? sizes[sizes.length - 2] : 3,
    digits: [...Array(10).keys()].map((d) => plain.format(d)),
  };
  separatorCache.set(locale, found);
  return found;
}

/**
 * @param {string} error
 * @returns {Parsed}
 */
const refused = (error) => ({ value: null, error });

/**
 * The input with ASCII digits, "-" for a minus and " " for any space, trimmed.
 * @param {string} text
 * @param {Separators} seps
 */
function canonicalInput(text, seps) {
  let out = text.normalize('NFKC').replace(/\s/gu, ' ').replace(/\u2212/gu, '-').trim();
  seps.digits.forEach((digit, value) => {
    if (digit !== String(value)) out = out.split(digit).join(String(value));
  });
  if (seps.group === '\u2019') out = out.replace(/'/g, '\u2019'); // de-CH: ' for ’
  return out;
}

/**
 * Whether `text` is digits in valid groups split by any of `groupChars`: the last group
 * `primary` long, the others `secondary` long (or every group 3 long), the first 1 to
 * that many digits, not starting with 0.
 * @param {string} text
 * @param {string[]} groupChars
 * @param {Separators} seps
 */
function validGroups(text, groupChars, seps) {
  const groups = [...text].map((c) => (groupChars.includes(c) ? '|' : c)).join('').split('|');
  if (groups.length < 2 || !groups.every((g) => /^\d+$/.test(g)) || groups[0].startsWith('0')) return false;
  /** @param {number} primary @param {number} secondary */
  const fits = (primary, secondary) => groups[groups.length - 1].length === primary
    && groups.slice(1, -1).every((g) => g.length === secondary)
    && groups[0].length <= (groups.length > 2 ? secondary : primary);
  return fits(seps.primary, seps.secondary) || fits(3, 3);
}

/**
 * The integer part's digits, or an error: plain digits, or grouped (validGroups).
 * @param {string} text
 * @param {Separators} seps
 * @param {string} locale
 * @returns {{digits: string, error: string | null}}
 */
function integerDigits(text, seps, locale) {
  if (/^\d*$/.test(text)) return { digits: text, error: null };
  const groupChars = [...new Set([seps.group, ' '])];
  const stray = [...text].find((c) => !/\d/.test(c) && !groupChars.includes(c));
  if (stray !== undefined) return { digits: '', error: strayMessage(stray, seps, locale) };
  if (!validGroups(text, groupChars, seps)) {
    return { digits: '', error: `${named(seps.group)} must separate groups of 3 digits (${example(seps)}); for decimals use “${seps.decimal}”` };
  }
  return { digits: text.replace(/\D/g, ''), error: null };
}

/**
 * A separator as a message names it: “,” or "a space".
 * @param {string} sep
 */
const named = (sep) => (sep === ' ' ? 'a space' : `“${sep}”`);

/**
 * 1234567.5 written in the locale's way (for messages).
 * @param {Separators} seps
 */
const example = (seps) => {
  const g = seps.group;
  return seps.secondary === 2 ? `12${g}34${g}567` : `1${g}234${g}567`;
};

/**
 * @param {string} stray a character that is no separator of the locale
 * @param {Separators} seps
 * @param {string} locale
 */
function strayMessage(stray, seps, locale) {
  if (stray === '.' || stray === ',') {
    return `“${stray}” is not a separator in ${locale}: use “${seps.decimal}” for decimals, no grouping (or ${named(seps.group)} between groups of 3 digits)`;
  }
  if (stray === '-' || stray === '+') return `“${stray}” only at the start`;
  return `unexpected “${stray}”: only digits, “${seps.decimal}” for decimals and ${named(seps.group)} between groups of 3 digits`;
}

/**
 * Splits an unsigned input at its decimal separator: the locale's, or "." where it is
 * unambiguous (see the rule at the top). An error when neither reading works.
 * @param {string} text
 * @param {Separators} seps
 * @param {string} locale
 * @returns {{integer: string, fraction: string, error: string | null}}
 */
function splitDecimal(text, seps, locale) {
  const decimals = text.split(seps.decimal).length - 1;
  if (decimals > 1) return { integer: '', fraction: '', error: `more than one decimal separator “${seps.decimal}”` };
  if (decimals === 1) {
    const [integer, fraction] = text.split(seps.decimal);
    const stray = fraction.replace(/\d/g, '');
    if (stray) {
      return { integer, fraction, error: `“${stray[0]}” after the decimal separator: in ${locale} use “${seps.decimal}” for decimals, no grouping after it` };
    }
    return { integer, fraction, error: null };
  }
  if (seps.decimal !== '.' && text.includes('.')) return splitAtPoint(text, seps, locale);
  return { integer: text, fraction: '', error: null };
}

/**
 * "." in a locale whose decimal separator is another character: a decimal point when
 * it cannot be a group separator, the group separator when it cannot be a decimal
 * point and is the locale's, refused when it could be either.
 * @param {string} text
 * @param {Separators} seps
 * @param {string} locale
 * @returns {{integer: string, fraction: string, error: string | null}}
 */
function splitAtPoint(text, seps, locale) {
  const points = text.split('.').length - 1;
  const [integer, fraction] = text.split('.');
  const asDecimal = points === 1 && /^\d*$/.test(fraction);
  const asGroups = validGroups(text, ['.'], seps);
  if (asDecimal && asGroups) {
    return { integer, fraction, error: `ambiguous “${text}”: “.” could separate thousands or decimals; write ${text.replace('.', '')} or ${text.replace('.', seps.decimal)}` };
  }
  if (asDecimal) return { integer, fraction, error: null };
  if (asGroups && seps.group === '.') return { integer: text, fraction: '', error: null };
  return { integer, fraction, error: strayMessage('.', seps, locale) };
}

/**
 * @param {string} digits
 */
const significantDigits = (digits) => digits.replace(/^0+/, '').replace(/0+$/, '').length;

/**
 * A number typed by the user, read for `locale` (the rule at the top of this module).
 * Empty input: value null and error null.
 * @param {string} text
 * @param {string} [locale]
 * @param {ParseOptions} [options] negative: a leading minus allowed; integer: no decimals
 * @returns {Parsed}
 */
export function parseNumber(text, locale = userLocale(), options = {}) {
  const seps = separatorsOf(locale);
  const input = canonicalInput(text, seps);
  if (input === '') return { value: null, error: null };
  if (/e/i.test(input)) return refused('write the number out: no exponent (e)');
  const sign = /^[-+]/.test(input) ? input[0] : '';
  if (sign === '-' && !options.negative) return refused('must not be negative');
  const body = input.slice(sign.length).trim();
  const split = splitDecimal(body, seps, locale);
  if (split.error) return refused(split.error);
  const integer = integerDigits(split.integer, seps, locale);
  if (integer.error) return refused(integer.error);
  if (integer.digits === '' && split.fraction === '') return refused('no digits');
  if (options.integer && /[1-9]/.test(split.fraction)) return refused('whole numbers only');
  if (significantDigits(integer.digits + split.fraction) > MAX_SIGNIFICANT_DIGITS) {
    return refused(`too many digits: at most ${MAX_SIGNIFICANT_DIGITS} significant digits`);
  }
  const value = Number(`${sign === '-' ? '-' : ''}${integer.digits || '0'}.${split.fraction || '0'}`);
  return heldExactly(value, /[1-9]/.test(integer.digits + split.fraction));
}

/**
 * The value read, unless a double cannot hold it as typed: too large (Infinity) or too
 * small (digits lost below the smallest normal double, or 0 for a nonzero input).
 * @param {number} value
 * @param {boolean} nonzero whether the input had a nonzero digit
 * @returns {Parsed}
 */
function heldExactly(value, nonzero) {
  if (!Number.isFinite(value)) return refused('too large: a number this big cannot be stored');
  if (nonzero && Math.abs(value) < MIN_NORMAL) return refused('too small: a number this close to 0 cannot be stored');
  return { value: Object.is(value, -0) ? 0 : value, error: null };
}

/**
 * A value as the user's locale writes it (the rule form's preview).
 * @param {number} value
 * @param {string} [locale]
 * @returns {string}
 */
export function formatForLocale(value, locale = userLocale()) {
  return new Intl.NumberFormat(locale, { maximumSignificantDigits: MAX_SIGNIFICANT_DIGITS }).format(value);
}

// --- large and small magnitudes --------------------------------------------------------

/**
 * `value` rounded half away from zero to `decimals`, without binary noise (999.995 → 1000).
 * @param {number} value
 * @param {number} decimals
 */
function rounded(value, decimals) {
  const scaled = Number((Math.abs(value) * 10 ** decimals).toPrecision(12));
  return Math.sign(value) * Math.round(scaled) / 10 ** decimals;
}

/**
 * @param {number} exponent
 */
const superscript = (exponent) => [...String(exponent)].map((d) => SUPERSCRIPTS[Number(d)]).join('');

/**
 * An unsigned magnitude ≥ 1 with its unit (see the rule at the top).
 * @param {number} magnitude
 */
function scaled(magnitude) {
  for (let index = 0; index < UNITS.length; index += 1) {
    const mantissa = rounded(magnitude / 1000 ** index, 2);
    if (mantissa < 1000) return `${mantissa.toFixed(2)}${UNITS[index]}`;
  }
  let exponent = Math.floor(Math.log10(magnitude));
  let mantissa = rounded(magnitude / 10 ** exponent, 2);
  if (mantissa >= 10) {
    exponent += 1;
    mantissa = rounded(magnitude / 10 ** exponent, 2);
  }
  return `${mantissa.toFixed(2)}×10${superscript(exponent)}`;
}

/**
 * A magnitude below 1: 3 significant digits, trailing zeros dropped, 0.0ₙ for 4+ zeros.
 * @param {number} magnitude
 */
function small(magnitude) {
  const decimals = Math.min(100, 2 - Math.floor(Math.log10(magnitude)));
  const fixed = rounded(magnitude, decimals).toFixed(decimals).replace(/0+$/, '').replace(/\.$/, '');
  return compactZeros(fixed);
}

/**
 * A volume, turnover, open interest or any large or small value, compact (the rule at
 * the top of this module).
 * @param {number | null | undefined} value
 * @returns {string}
 */
export function formatMagnitude(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  const magnitude = Math.abs(value);
  if (magnitude === 0) return '0';
  const tiny = magnitude < 1 ? small(magnitude) : null;
  const text = tiny === null || tiny === '1' ? scaled(magnitude) : tiny;
  return value < 0 ? `-${text}` : text;
}

// --- perpetual swaps: funding, open interest, positioning --------------------------------
//
// Funding (formatFundingRate): the rate is a fraction per funding interval, as the
// exchange gives it; shown in percent with 4 decimals and its sign (0.0001 → +0.0100%,
// -0.00028908 → -0.0289%, 0 → 0.0000%), a missing or non-finite rate → "—".
// Heat (fundingHeat): the rate's distance from the neutral rate (+0.01 % per 8-hour
// interval, the interest-rate component most exchanges charge when the premium is nil),
// as a signed level -5…5: |rate − neutral| below 0.005 % → 0, then a level per doubling
// (0.005, 0.01, 0.02, 0.04, 0.08 % → 1…5); positive when longs pay more than neutral.
// A contract settling every h hours is read per 8 hours (rate · 8 / h) first, so a 1-hour
// contract's rate is not shown eight times cooler than the same positioning on 8 hours.

/** The neutral funding rate per interval (Bybit's and Binance's interest rate, 0.01 %). */
export const NEUTRAL_FUNDING_RATE = 0.0001;
/** Distances from neutral (fractions) where the heat levels 1…5 begin. */
export const FUNDING_HEAT_STEPS = [0.00005, 0.0001, 0.0002, 0.0004, 0.0008];

/**
 * @param {unknown} value
 * @returns {value is number}
 */
const finite = (value) => typeof value === 'number' && Number.isFinite(value);

/**
 * A funding rate (a fraction per interval) in percent, signed (see the rule above).
 * @param {number | null | undefined} rate
 * @returns {string}
 */
export function formatFundingRate(rate) {
  if (!finite(rate)) return '—';
  const text = (Math.abs(rate) * 100).toFixed(4);
  if (Number(text) === 0) return '0.0000%';
  return `${rate > 0 ? '+' : '-'}${text}%`;
}

/**
 * How far a funding rate is from neutral: -5…5 (see the rule above); null without a rate.
 * @param {number | null | undefined} rate a fraction per interval
 * @param {number} [intervalHours] hours between settlements (8 when not given)
 * @returns {number | null}
 */
export function fundingHeat(rate, intervalHours = 8) {
  if (!finite(rate)) return null;
  const hours = finite(intervalHours) && intervalHours > 0 ? intervalHours : 8;
  const distance = (rate * 8) / hours - NEUTRAL_FUNDING_RATE;
  // rounded to 1e-12: 0.00015 − 0.0001 is 5e-5 exactly, not a hair below it
  const magnitude = Math.round(Math.abs(distance) * 1e12) / 1e12;
  const level = FUNDING_HEAT_STEPS.filter((step) => magnitude >= step).length;
  return level === 0 ? 0 : Math.sign(distance) * level;
}

/**
 * A ratio such as long/short accounts (0.8309 → 0.83), "—" when missing.
 * @param {number | null | undefined} value
 * @returns {string}
 */
export function formatRatio(value) {
  return finite(value) ? value.toFixed(2) : '—';
}
