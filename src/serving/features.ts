import { Problem } from '../platform/errors.ts';
import type { Feature } from '../registry/schema.ts';

export interface InputError {
  /** JSON Pointer into the request body */
  pointer: string;
  detail: string;
}

const MAX_REPORTED_ERRORS = 20;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return `a ${typeof v}`;
}

const knownNames = new WeakMap<readonly Feature[], ReadonlySet<string>>();

function namesOf(features: readonly Feature[]): ReadonlySet<string> {
  let names = knownNames.get(features);
  if (!names) {
    names = new Set(features.map((f) => f.name));
    knownNames.set(features, names);
  }
  return names;
}

/** Counts the rows of which some value was missing and the manifest's default was assumed (for monitoring). */
export interface AssumedCount {
  rows: number;
}

/**
 * Validates one instance and encodes it into `out` at `offset`, columns in feature order. Returns its problems
 * (pointers under `at`), or undefined when it is valid. Pointers are built only on failure: this is the hot path.
 */
export function encodeRow(
  features: readonly Feature[],
  instance: unknown,
  out: Float32Array,
  offset: number,
  at: string,
  assumed?: AssumedCount,
  /**
   * a key of the instance that is not a value (a batch row's `id`, read in place rather than copied out): never an
   * unknown feature, never a feature's value
   */
  ignore?: string,
): InputError[] | undefined {
  if (!isPlainObject(instance)) return [{ pointer: at, detail: `must be an object, got ${describe(instance)}` }];
  const errors: InputError[] = [];
  const known = namesOf(features);
  for (const key in instance) {
    if (key !== ignore && Object.hasOwn(instance, key) && !known.has(key)) {
      errors.push({ pointer: `${at}/${escapePointer(key)}`, detail: 'unknown feature' });
    }
  }
  let filled = false;
  for (let col = 0; col < features.length; col++) {
    const f = features[col] as Feature;
    let value = f.name !== ignore && Object.hasOwn(instance, f.name) ? instance[f.name] : undefined;
    if (value === undefined || value === null) {
      if (f.required || f.default === undefined) {
        errors.push({ pointer: `${at}/${f.name}`, detail: 'required' });
        continue;
      }
      value = f.default;
      filled = true;
    }
    const encoded = encodeValue(f, value);
    if (typeof encoded === 'string') errors.push({ pointer: `${at}/${f.name}`, detail: encoded });
    else out[offset + col] = encoded;
  }
  if (errors.length > 0) return errors;
  if (filled && assumed) assumed.rows++;
  return undefined;
}

/**
 * Validates instances against the manifest's features and encodes them row-major into one Float32Array, columns
 * in feature order. Every problem is reported (up to a cap) with a JSON Pointer; values are never echoed back, so
 * an error body carries no patient data.
 */
export function encodeInstances(
  features: readonly Feature[],
  instances: readonly unknown[],
  basePointer = '/instances',
  assumed?: AssumedCount,
): Float32Array {
  const width = features.length;
  const data = new Float32Array(instances.length * width);
  const errors: InputError[] = [];
  for (let row = 0; row < instances.length && errors.length < MAX_REPORTED_ERRORS; row++) {
    const problems = encodeRow(features, instances[row], data, row * width, `${basePointer}/${row}`, assumed);
    if (problems) errors.push(...problems);
  }
  if (errors.length > 0) {
    throw new Problem('invalid_input', `${errors.length} problem(s) with the instances`, {
      extensions: { errors: errors.slice(0, MAX_REPORTED_ERRORS) },
    });
  }
  return data;
}

/** The encoded number, or a message saying why the value is refused. */
function encodeValue(f: Feature, value: unknown): number | string {
  switch (f.type) {
    case 'number':
    case 'integer': {
      if (typeof value !== 'number') return `must be a number, got ${describe(value)}`;
      if (!Number.isFinite(value)) return 'must be a finite number';
      if (f.type === 'integer' && !Number.isInteger(value)) return 'must be an integer';
      if (value < f.min || value > f.max)
        return `out of range: allowed ${f.min}..${f.max}${f.unit ? ` ${f.unit}` : ''}`;
      return value;
    }
    case 'boolean':
      return typeof value === 'boolean' ? (value ? 1 : 0) : `must be true or false, got ${describe(value)}`;
    case 'enum': {
      const index = typeof value === 'string' ? f.values.indexOf(value) : -1;
      return index >= 0 ? index : `must be one of ${f.values.join(', ')}`;
    }
  }
}

function escapePointer(key: string): string {
  // keys are attacker-chosen: cap them so an error body cannot be inflated by a huge key
  const capped = key.length > 64 ? `${key.slice(0, 64)}…` : key;
  return capped.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** A typical, in-range row for warm-up runs: defaults, else the middle of the range, else the first value. */
export function typicalRow(features: readonly Feature[]): Float32Array {
  return Float32Array.from(features, (f) => {
    switch (f.type) {
      case 'number':
        return f.default ?? (f.min + f.max) / 2;
      case 'integer':
        return f.default ?? Math.round((f.min + f.max) / 2);
      case 'boolean':
        return f.default ? 1 : 0;
      case 'enum':
        return Math.max(0, f.values.indexOf(f.default ?? (f.values[0] as string)));
    }
  });
}
