import type { Feature } from '../registry/schema.ts';
import { encodeValue } from '../serving/features.ts';
import { MAX_LINE } from './readers.ts';

/**
 * What `encode` found in a line it took: its id (`undefined` when the line gives none that is used, so the row is
 * named by its line number) and whether a default was assumed for a missing value.
 */
export interface EncodedLine {
  id: string | undefined;
  assumed: boolean;
}

/** The result `encode` returns for a line it does not take: the caller reads it with JSON.parse (ndjsonRow). */
export const NOT_TAKEN = null;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN = 0x7b;
const CLOSE = 0x7d;
const MINUS = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/** Powers of ten a double holds exactly: an integer under 2^53 divided by one is correctly rounded (as JSON.parse is). */
const POW10 = Array.from({ length: 23 }, (_, i) => 10 ** i);
/** digits of a number the fast path reads (its integer stays under 2^53) */
const MAX_DIGITS = 15;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

/**
 * A reader of flat NDJSON rows straight into a chunk's Float32Array, for a model's features: no object per row, no
 * copy without the id. It takes only the lines it can read exactly as the general path would (JSON.parse, the id apart
 * from the values, then encodeRow's validation) with that path finding nothing wrong: a flat object of the features
 * and `id`, each once, plain strings (no escapes), numbers without an exponent of up to 15 digits, booleans and
 * nulls, every value valid for its feature. Anything else (a bad row above all: its errors are the general path's to
 * report, word for word) is NOT_TAKEN, and the caller reads the line the general way: a line is never lost here.
 */
export class LineEncoder {
  readonly #features: readonly Feature[];
  readonly #names: readonly string[];
  /** per column, the last row that named it (a key seen twice is left to JSON.parse, whose last value wins) */
  readonly #seen: Uint32Array;
  /** per column, the last row that gave it a value (not null) */
  readonly #set: Uint32Array;
  /** per column, its default encoded, or undefined when a missing value is an error (required, or no default) */
  readonly #defaults: ReadonlyArray<number | undefined>;
  #row = 0;
  readonly #result: EncodedLine = { id: undefined, assumed: false };

  constructor(features: readonly Feature[]) {
    this.#features = features;
    this.#names = features.map((f) => f.name);
    this.#seen = new Uint32Array(features.length);
    this.#set = new Uint32Array(features.length);
    this.#defaults = features.map((f) => {
      if (f.required || f.default === undefined) return undefined;
      const encoded = encodeValue(f, f.default);
      return typeof encoded === 'number' ? encoded : undefined;
    });
  }

  /**
   * Encodes the row of `text` into `out` at `offset` (the columns in feature order). Returns what it found (the same
   * object each call: read it before the next), or NOT_TAKEN having written nothing the caller must keep.
   */
  encode(text: string, out: Float32Array, offset: number): EncodedLine | typeof NOT_TAKEN {
    if (text.length > MAX_LINE) return NOT_TAKEN;
    const features = this.#features;
    const names = this.#names;
    const seen = this.#seen;
    const set = this.#set;
    const columns = names.length;
    // a fresh stamp per row (wrapping after 2^32 rows: the stamps are cleared, rather than a stale one read as set)
    let row = (this.#row + 1) >>> 0;
    if (row === 0) {
      seen.fill(0);
      set.fill(0);
      row = 1;
    }
    this.#row = row;
    let id: string | undefined;
    let idSeen = false;
    const end = text.length;
    let i = 0;
    while (i < end && isSpace(text.charCodeAt(i))) i++;
    if (text.charCodeAt(i) !== OPEN) return NOT_TAKEN;
    i++;
    while (i < end && isSpace(text.charCodeAt(i))) i++;
    if (text.charCodeAt(i) === CLOSE) return NOT_TAKEN; // `{}`: rare, and its errors are the general path's
    /** the column the next key most likely names: files list the features in order */
    let expected = 0;
    for (;;) {
      // "key"
      if (text.charCodeAt(i) !== QUOTE) return NOT_TAKEN;
      const keyStart = ++i;
      for (;;) {
        if (i >= end) return NOT_TAKEN;
        const c = text.charCodeAt(i);
        if (c === QUOTE) break;
        if (c === BACKSLASH || c < 0x20) return NOT_TAKEN;
        i++;
      }
      const keyLength = i - keyStart;
      i++;
      let col = -1;
      const isId = keyLength === 2 && text.charCodeAt(keyStart) === 0x69 && text.charCodeAt(keyStart + 1) === 0x64;
      if (!isId) {
        const guess = names[expected];
        if (guess !== undefined && guess.length === keyLength && text.startsWith(guess, keyStart)) col = expected;
        else {
          for (let c = 0; c < columns; c++) {
            const name = names[c] as string;
            if (name.length === keyLength && text.startsWith(name, keyStart)) {
              col = c;
              break;
            }
          }
          if (col < 0) return NOT_TAKEN; // an unknown feature: the general path reports it
        }
        if (seen[col] === row) return NOT_TAKEN;
        seen[col] = row;
        expected = col + 1;
      } else if (idSeen) return NOT_TAKEN;
      else idSeen = true;
      while (i < end && isSpace(text.charCodeAt(i))) i++;
      if (text.charCodeAt(i) !== COLON) return NOT_TAKEN;
      i++;
      while (i < end && isSpace(text.charCodeAt(i))) i++;
      // the value
      const c = text.charCodeAt(i);
      const f = col >= 0 ? (features[col] as Feature) : undefined;
      if (c === QUOTE) {
        const valueStart = ++i;
        for (;;) {
          if (i >= end) return NOT_TAKEN;
          const d = text.charCodeAt(i);
          if (d === QUOTE) break;
          if (d === BACKSLASH || d < 0x20) return NOT_TAKEN;
          i++;
        }
        const length = i - valueStart;
        i++;
        if (!f) {
          // rowId: a string of 1 to 256 characters is the id, any other the line number's
          id = length > 0 && length <= 256 ? text.slice(valueStart, valueStart + length) : undefined;
        } else if (f.type === 'enum') {
          const values = f.values;
          let index = -1;
          for (let v = 0; v < values.length; v++) {
            const value = values[v] as string;
            if (value.length === length && text.startsWith(value, valueStart)) {
              index = v;
              break;
            }
          }
          if (index < 0) return NOT_TAKEN;
          out[offset + col] = index;
          set[col] = row;
        } else return NOT_TAKEN;
      } else if (c === MINUS || (c >= ZERO && c <= NINE)) {
        // -?(0|[1-9][0-9]*)(\.[0-9]+)?, no exponent
        const negative = c === MINUS;
        if (negative) i++;
        const first = text.charCodeAt(i);
        if (!(first >= ZERO && first <= NINE)) return NOT_TAKEN;
        let mantissa = 0;
        let digits = 0;
        let decimals = 0;
        while (i < end) {
          const d = text.charCodeAt(i);
          if (d < ZERO || d > NINE) break;
          mantissa = mantissa * 10 + (d - ZERO);
          digits++;
          i++;
        }
        if (first === ZERO && digits > 1) return NOT_TAKEN; // a leading zero: not JSON
        if (text.charCodeAt(i) === DOT) {
          i++;
          while (i < end) {
            const d = text.charCodeAt(i);
            if (d < ZERO || d > NINE) break;
            mantissa = mantissa * 10 + (d - ZERO);
            digits++;
            decimals++;
            i++;
          }
          if (decimals === 0) return NOT_TAKEN;
        }
        if (digits > MAX_DIGITS) return NOT_TAKEN;
        const e = text.charCodeAt(i);
        if (e === 0x65 || e === 0x45) return NOT_TAKEN; // an exponent: JSON.parse reads it
        const magnitude = decimals === 0 ? mantissa : mantissa / (POW10[decimals] as number);
        const value = negative ? -magnitude : magnitude;
        if (!f) {
          // rowId: a finite number is named by its text as String writes it
          id = String(value);
        } else if (f.type === 'number' || f.type === 'integer') {
          if (f.type === 'integer' && !Number.isInteger(value)) return NOT_TAKEN;
          if (value < f.min || value > f.max) return NOT_TAKEN;
          out[offset + col] = value;
          set[col] = row;
        } else return NOT_TAKEN;
      } else if (c === 0x74 || c === 0x66) {
        const value = c === 0x74;
        const word = value ? 'true' : 'false';
        if (!text.startsWith(word, i)) return NOT_TAKEN;
        i += word.length;
        if (!f) id = undefined;
        else if (f.type === 'boolean') {
          out[offset + col] = value ? 1 : 0;
          set[col] = row;
        } else return NOT_TAKEN;
      } else if (c === 0x6e) {
        if (!text.startsWith('null', i)) return NOT_TAKEN;
        i += 4;
        // a null feature is a missing one (its default, or required): left unset
        if (!f) id = undefined;
      } else return NOT_TAKEN; // an object, an array, or not JSON
      while (i < end && isSpace(text.charCodeAt(i))) i++;
      const next = text.charCodeAt(i);
      i++;
      if (next === COMMA) {
        while (i < end && isSpace(text.charCodeAt(i))) i++;
        continue;
      }
      if (next !== CLOSE) return NOT_TAKEN;
      while (i < end && isSpace(text.charCodeAt(i))) i++;
      if (i !== end) return NOT_TAKEN; // text after the object: not JSON
      break;
    }
    // missing (or null) values: the manifest's default, as encodeRow assumes it; a required one is an error
    let assumed = false;
    for (let col = 0; col < columns; col++) {
      if (set[col] === row) continue;
      const fallback = this.#defaults[col];
      if (fallback === undefined) return NOT_TAKEN;
      out[offset + col] = fallback;
      assumed = true;
    }
    const result = this.#result;
    result.id = id;
    result.assumed = assumed;
    return result;
  }
}
