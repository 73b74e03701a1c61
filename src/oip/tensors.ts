import { Problem } from '../platform/errors.ts';
import type { Feature, Manifest, OutputSpec } from '../registry/schema.ts';
import type { Prediction } from '../serving/predictions.ts';

/**
 * Open Inference Protocol v2 tensors ↔ Triage instances and predictions. Inputs are one tensor per feature, named
 * after it, shape [N] or [N, 1] (or the model's own [N, F] matrix, `features`); they become the same instance objects `/v1/…/predict` takes, so every check of the
 * sync tier (ranges, enums, required features, the instance limit) is the same one. Outputs are one tensor per field
 * of the prediction, in the order the manifest's output defines.
 */

export const NUMERIC_DATATYPES = [
  'FP32',
  'FP64',
  'FP16',
  'INT8',
  'INT16',
  'INT32',
  'INT64',
  'UINT8',
  'UINT16',
  'UINT32',
  'UINT64',
] as const;
export const DATATYPES = [...NUMERIC_DATATYPES, 'BOOL', 'BYTES'] as const;
export type Datatype = (typeof DATATYPES)[number];

export interface MetadataTensor {
  name: string;
  datatype: Datatype;
  shape: number[];
}

export interface RequestInput {
  name: string;
  shape: number[];
  datatype: Datatype;
  data: unknown[];
}

export interface ResponseOutput extends MetadataTensor {
  data: unknown[];
  parameters?: Record<string, string | number | boolean>;
}

/** The datatype a feature's tensor is advertised with (any numeric datatype is accepted for numbers). */
export function datatypeOf(f: Feature): Datatype {
  if (f.type === 'boolean') return 'BOOL';
  if (f.type === 'enum') return 'BYTES';
  return f.type === 'integer' ? 'INT32' : 'FP32';
}

export function inputMetadata(manifest: Manifest): MetadataTensor[] {
  if (manifest.input === 'document') return [{ name: 'text', datatype: 'BYTES', shape: [1] }];
  return manifest.features.map((f) => ({ name: f.name, datatype: datatypeOf(f), shape: [-1] }));
}

/** One output tensor: a scalar field of each prediction, a named vector (`names` are its columns), or JSON text. */
interface OutputField {
  name: string;
  datatype: Datatype;
  names?: readonly string[];
  json?: boolean;
}

function outputFields(output: OutputSpec): OutputField[] {
  if (output.kind === 'classification') {
    return [
      { name: 'category', datatype: 'BYTES' },
      { name: 'confidence', datatype: 'FP32' },
      { name: 'confident', datatype: 'BOOL' },
      { name: 'probabilities', datatype: 'FP32', names: output.labels },
    ];
  }
  if (output.kind === 'retrieval') {
    return [
      { name: 'matches', datatype: 'BYTES', json: true },
      { name: 'confidence', datatype: 'FP32' },
    ];
  }
  return [
    { name: output.scoreName, datatype: 'FP32' },
    { name: 'verdict', datatype: 'BYTES' },
    { name: 'aboveThreshold', datatype: 'BOOL' },
    ...output.extras.map(
      (e): OutputField =>
        e.kind === 'vector' ? { name: e.as, datatype: 'FP32', names: e.names } : { name: e.as, datatype: 'BYTES' },
    ),
  ];
}

export function outputMetadata(output: OutputSpec): MetadataTensor[] {
  return outputFields(output).map((f) => ({
    name: f.name,
    datatype: f.datatype,
    shape: f.names ? [-1, f.names.length] : [-1],
  }));
}

/** The predictions as OIP output tensors, only those asked for when `wanted` is given. */
export function toOutputs(output: OutputSpec, predictions: readonly Prediction[], wanted?: ReadonlySet<string>) {
  const outputs: ResponseOutput[] = [];
  const n = predictions.length;
  for (const f of outputFields(output)) {
    if (wanted && !wanted.has(f.name)) continue;
    const data: unknown[] = [];
    for (const p of predictions) {
      const value = p[f.name];
      if (f.names) for (const col of f.names) data.push((value as Record<string, number>)[col]);
      else if (f.json) data.push(JSON.stringify(value));
      else data.push(f.datatype === 'BYTES' ? String(value ?? '') : value);
    }
    outputs.push({
      name: f.name,
      datatype: f.datatype,
      shape: f.names ? [n, f.names.length] : [n],
      data,
      // a vector's columns by name: metadata tensors carry no labels
      ...(f.names ? { parameters: { columns: f.names.join(',') } } : {}),
    });
  }
  return outputs;
}

export function outputNames(output: OutputSpec): Set<string> {
  return new Set(outputFields(output).map((f) => f.name));
}

const NUMERIC = new Set<string>(NUMERIC_DATATYPES);

function flatten(data: unknown[]): unknown[] {
  return data.some(Array.isArray) ? (data.flat(Number.POSITIVE_INFINITY) as unknown[]) : data;
}

function refuse(pointer: string, detail: string): never {
  throw new Problem('invalid_input', `1 problem(s) with the inputs`, { extensions: { errors: [{ pointer, detail }] } });
}

/** Where a value of the request lives, for error pointers: row and feature → `/inputs/i/data/k`. */
export type PointerOf = (row: number, feature: string) => string | undefined;

/**
 * The model's own input, for clients that send one matrix: `features` [N, F], FP32 (any numeric type), columns in the
 * manifest's feature order, booleans as 0/1 and enums as the index of the value, as the ONNX graph takes it.
 */
export const FEATURES_TENSOR = 'features';

/**
 * The input tensors as instance objects (row r of every tensor is instance r), and where each value came from, so
 * the sync tier's pointers (`/instances/3/spo2`) can be told back as `/inputs/i/data/k`. Values are passed as they
 * are: their checks are the sync tier's.
 */
export function toInstances(
  features: readonly Feature[],
  inputs: readonly RequestInput[],
): { instances: Record<string, unknown>[]; pointerOf: PointerOf } {
  const byName = new Map(features.map((f) => [f.name, f]));
  const only = inputs.length === 1 ? inputs[0] : undefined;
  if (only?.name === FEATURES_TENSOR && !byName.has(FEATURES_TENSOR)) return fromMatrix(features, only);
  const tensorOf = new Map<string, number>();
  let rows: number | undefined;
  const columns: unknown[][] = [];
  inputs.forEach((input, i) => {
    const at = `/inputs/${i}`;
    const f = byName.get(input.name);
    if (!f) refuse(`${at}/name`, 'no input tensor by that name: GET /v2/models/{model} lists them');
    if (tensorOf.has(f.name)) refuse(`${at}/name`, 'this tensor is given twice');
    const expected = datatypeOf(f);
    const fits =
      expected === 'BOOL' || expected === 'BYTES' ? input.datatype === expected : NUMERIC.has(input.datatype);
    if (!fits)
      refuse(`${at}/datatype`, `must be ${expected === 'BOOL' || expected === 'BYTES' ? expected : 'numeric'}`);
    const [n, width, ...more] = input.shape;
    if (n === undefined || more.length > 0 || (width !== undefined && width !== 1)) {
      refuse(`${at}/shape`, 'must be [N] or [N, 1]: one tensor per feature, one row per instance');
    }
    const data = flatten(input.data);
    if (data.length !== n) refuse(`${at}/data`, `holds ${data.length} values, the shape says ${n}`);
    if (rows !== undefined && n !== rows) refuse(`${at}/shape`, `every tensor must have the same N (${rows})`);
    rows = n;
    tensorOf.set(f.name, i);
    columns.push(data);
  });
  const instances: Record<string, unknown>[] = [];
  const names = [...tensorOf.keys()];
  for (let r = 0; r < (rows ?? 0); r++) {
    const instance: Record<string, unknown> = {};
    names.forEach((name, c) => {
      instance[name] = (columns[c] as unknown[])[r];
    });
    instances.push(instance);
  }
  const pointerOf: PointerOf = (row, name) => {
    const i = tensorOf.get(name);
    return i === undefined ? undefined : `/inputs/${i}/data/${row}`;
  };
  return { instances, pointerOf };
}

function fromMatrix(features: readonly Feature[], input: RequestInput) {
  const width = features.length;
  if (!NUMERIC.has(input.datatype)) refuse('/inputs/0/datatype', 'must be numeric');
  const [n, w, ...more] = input.shape;
  if (n === undefined || w !== width || more.length > 0) refuse('/inputs/0/shape', `must be [N, ${width}]`);
  const data = flatten(input.data);
  if (data.length !== n * width) refuse('/inputs/0/data', `holds ${data.length} values, the shape says ${n * width}`);
  const instances: Record<string, unknown>[] = [];
  for (let r = 0; r < n; r++) {
    const instance: Record<string, unknown> = {};
    features.forEach((f, c) => {
      const v = data[r * width + c];
      // decoded back to what /predict takes; a value that does not decode is passed on for the sync tier to refuse
      if (f.type === 'boolean') instance[f.name] = v === 0 ? false : v === 1 ? true : v;
      else if (f.type === 'enum') instance[f.name] = typeof v === 'number' ? (f.values[v] ?? v) : v;
      else instance[f.name] = v;
    });
    instances.push(instance);
  }
  const column = new Map(features.map((f, c) => [f.name, c]));
  const pointerOf: PointerOf = (row, name) => {
    const c = column.get(name);
    return c === undefined ? undefined : `/inputs/0/data/${row * width + c}`;
  };
  return { instances, pointerOf };
}

/** The sync tier's input errors, pointed into the OIP request instead of `/instances`. */
export function retarget(err: unknown, pointerOf: PointerOf): unknown {
  if (!(err instanceof Problem) || err.code !== 'invalid_input') return err;
  const errors = err.extensions.errors as { pointer: string; detail: string }[] | undefined;
  if (!errors) return err;
  const seen = new Set<string>();
  const mapped: { pointer: string; detail: string }[] = [];
  for (const e of errors) {
    const m = /^\/instances\/(\d+)\/(.+)$/.exec(e.pointer);
    const pointer = m ? pointerOf(Number(m[1]), m[2] as string) : undefined;
    const item = pointer
      ? { pointer, detail: e.detail }
      : { pointer: '/inputs', detail: m ? `tensor "${m[2]}" is ${e.detail}` : e.detail };
    const key = `${item.pointer} ${item.detail}`;
    if (!seen.has(key)) {
      seen.add(key);
      mapped.push(item);
    }
  }
  return new Problem('invalid_input', `${mapped.length} problem(s) with the inputs`, {
    extensions: { ...err.extensions, errors: mapped },
    headers: err.headers,
  });
}
