import type { OutputSpec } from '../registry/schema.ts';
import { RemoteError } from './resilience.ts';
import type { OutputTensor } from './types.ts';

/* The JSON codec remote endpoints share (SageMaker and Vertex AI alike): feature rows out, predictions back. */

/**
 * A float32 feature as the shortest decimal that is the same float32 (0.1f is 0.100000001490116… as a double: the
 * endpoint gets `0.1`, what the caller sent).
 */
export function float32ToNumber(v: number): number {
  if (Number.isInteger(v) || !Number.isFinite(v)) return v;
  for (let p = 1; p <= 9; p++) {
    const n = Number(v.toPrecision(p));
    if (Math.fround(n) === v) return n;
  }
  return v;
}

/** The row-major input tensor as rows of numbers, columns in the manifest's feature order. */
export function inputRows(input: Float32Array, rows: number, width: number): number[][] {
  if (input.length !== rows * width) {
    throw new RemoteError('rejected', `input has ${input.length} values, expected ${rows} rows × ${width} features`);
  }
  const out: number[][] = new Array(rows);
  for (let r = 0; r < rows; r++) {
    const row: number[] = new Array(width);
    for (let c = 0; c < width; c++) row[c] = float32ToNumber(input[r * width + c] as number);
    out[r] = row;
  }
  return out;
}

/** The tensor a bare number (or a bare list of numbers) per prediction stands for. */
export function primaryTensor(output: OutputSpec): string {
  if (output.kind === 'classification') return output.tensor;
  if (output.kind === 'retrieval') return output.scoresTensor;
  return output.scoreTensor;
}

/** Tensors the gateway needs to shape a prediction: a reply without one of them is malformed. */
export function requiredTensors(output: OutputSpec): string[] {
  if (output.kind === 'classification') return [output.tensor];
  if (output.kind === 'retrieval') return [output.scoresTensor, output.indicesTensor];
  return [output.scoreTensor, ...output.extras.map((e) => e.tensor)];
}

function isNumberList(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isFinite(x));
}

/**
 * `predictions` of a reply → output tensors. One prediction per input row, all of the same form:
 * - a number: the score (the output's primary tensor, dims [N]);
 * - a list of k numbers: the primary tensor, dims [N, k] (class probabilities);
 * - an object keyed by output tensor names, each a number ([N]) or a list of k numbers ([N, k]), e.g.
 *   `{"total": 7, "subscores": [0, 1, …], "band": 2}`.
 * Anything else (wrong count, non-numbers, ragged rows, a needed tensor missing) is a RemoteError `malformed`.
 */
export function decodePredictions(
  predictions: unknown,
  rows: number,
  output: OutputSpec,
  endpoint: string,
): Record<string, OutputTensor> {
  const malformed = (why: string) =>
    new RemoteError('malformed', `${endpoint}: malformed reply: ${why}`, { endpoint, upstream: 'malformed' });
  if (!Array.isArray(predictions)) throw malformed('no "predictions" array');
  if (predictions.length !== rows) throw malformed(`${predictions.length} predictions for ${rows} instances`);
  const columns = new Map<string, { width: number | undefined; values: number[] }>();
  const add = (name: string, value: unknown, row: number) => {
    let column = columns.get(name);
    if (!column) {
      if (row !== 0) throw malformed(`prediction ${row} has "${name}", the first has not`);
      column = { width: Array.isArray(value) ? value.length : undefined, values: [] };
      columns.set(name, column);
    }
    if (typeof value === 'number' && Number.isFinite(value) && column.width === undefined) {
      column.values.push(value);
    } else if (isNumberList(value) && value.length === column.width && value.length > 0) {
      column.values.push(...value);
    } else {
      throw malformed(`prediction ${row} "${name}" is not a number or a list of numbers like the others`);
    }
  };
  const primary = primaryTensor(output);
  predictions.forEach((p, row) => {
    if (typeof p === 'number' || Array.isArray(p)) add(primary, p, row);
    else if (typeof p === 'object' && p !== null) {
      const keys = Object.keys(p);
      if (row > 0 && keys.length !== columns.size)
        throw malformed(`prediction ${row} has other outputs than the first`);
      for (const key of keys) add(key, (p as Record<string, unknown>)[key], row);
    } else throw malformed(`prediction ${row} is ${p === null ? 'null' : `a ${typeof p}`}`);
  });
  for (const needed of requiredTensors(output)) {
    if (!columns.has(needed)) throw malformed(`output "${needed}" is missing`);
  }
  const tensors: Record<string, OutputTensor> = {};
  for (const [name, column] of columns) {
    tensors[name] = {
      data: Float32Array.from(column.values),
      dims: column.width === undefined ? [rows] : [rows, column.width],
    };
  }
  return tensors;
}

// ---------------------------------------------------------------------------------------------------------------
// SageMaker
// ---------------------------------------------------------------------------------------------------------------
