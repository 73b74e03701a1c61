import type { OutputSpec } from '../registry/schema.ts';
import type { OutputTensor } from '../runtime/types.ts';

export type Prediction = Record<string, unknown>;

export interface CorpusEntry {
  id: string;
  title: string;
  summary?: string;
}

/**
 * Shapes raw output tensors into one prediction object per row, by the manifest's output kind: a score with its
 * verdict at the approved threshold (and extra named outputs), class probabilities, or retrieval matches.
 */
export function shapePredictions(
  output: OutputSpec,
  tensors: Record<string, OutputTensor>,
  rows: number,
  corpus: readonly CorpusEntry[] = [],
): Prediction[] {
  const tensor = (name: string, perRow?: number): Float32Array => {
    const t = tensors[name];
    if (!t || (perRow !== undefined && t.data.length !== rows * perRow)) {
      throw new Error(`model output "${name}" missing or of the wrong shape`);
    }
    return t.data;
  };
  const predictions: Prediction[] = [];
  if (output.kind === 'classification') {
    const width = output.labels.length;
    const probs = tensor(output.tensor, width);
    for (let r = 0; r < rows; r++) {
      let best = 0;
      const probabilities: Record<string, number> = {};
      output.labels.forEach((label, i) => {
        const p = probs[r * width + i] as number;
        probabilities[label] = round(p);
        if (p > (probs[r * width + best] as number)) best = i;
      });
      const confidence = round(probs[r * width + best] as number);
      predictions.push({
        category: output.labels[best],
        confidence,
        confident: confidence >= output.threshold,
        probabilities,
      });
    }
    return predictions;
  }
  if (output.kind === 'retrieval') {
    const scores = tensor(output.scoresTensor);
    const indices = tensor(output.indicesTensor, scores.length / Math.max(rows, 1));
    const k = scores.length / Math.max(rows, 1);
    for (let r = 0; r < rows; r++) {
      const matches = [];
      for (let j = 0; j < k; j++) {
        const score = round(scores[r * k + j] as number);
        const entry = corpus[indices[r * k + j] as number];
        if (entry && score >= output.threshold) matches.push({ id: entry.id, title: entry.title, score });
      }
      predictions.push({ matches, confidence: round(scores[r * k] ?? 0) });
    }
    return predictions;
  }
  const score = tensor(output.scoreTensor, 1);
  for (let r = 0; r < rows; r++) {
    const value = round(score[r] as number);
    const positive = value >= output.threshold;
    const p: Prediction = {
      [output.scoreName]: value,
      verdict: positive ? output.labels.positive : output.labels.negative,
      aboveThreshold: positive,
    };
    for (const extra of output.extras) {
      if (extra.kind === 'vector') {
        const width = extra.names.length;
        const t = tensor(extra.tensor, width);
        const named: Record<string, number> = {};
        extra.names.forEach((n, i) => {
          named[n] = round(t[r * width + i] as number);
        });
        p[extra.as] = named;
      } else {
        p[extra.as] = extra.labels[Math.round(tensor(extra.tensor, 1)[r] as number)] ?? null;
      }
    }
    predictions.push(p);
  }
  return predictions;
}

/** The confidence a review policy looks at: the top-class confidence, the best match, or 1 for scores. */
export function confidenceOf(prediction: Prediction): number {
  return typeof prediction.confidence === 'number' ? prediction.confidence : 1;
}

/** float32 → a JSON number without float noise (0.30000001192 → 0.3): six decimals, as float32 carries ~7 digits. */
function round(v: number): number {
  return Math.round(v * 1e6) / 1e6;
}

/** Where a prediction's JSON is written: bytes as they are, ASCII text, any text (UTF-8), a JSON string. */
export interface JsonSink {
  raw(bytes: Uint8Array): void;
  ascii(text: string): void;
  /** a number as JSON.stringify writes it (non-finite: null) */
  number(value: number): void;
  text(text: string): void;
  jsonString(value: string): void;
}

/** A key V8 orders before the others in an object (an array index): a template could not keep JSON.stringify's order. */
const INDEX_KEY = /^(0|[1-9]\d*)$/;

const utf8 = (text: string): Uint8Array => Buffer.from(text);

/** JSON.stringify of a number, as it writes one in an object: non-finite numbers are null. */
function writeNumber(out: JsonSink, v: unknown): void {
  if (typeof v === 'number') out.number(v);
  else out.text(JSON.stringify(v) ?? 'null');
}

type Writer = (out: JsonSink, p: Prediction) => void;
const writers = new WeakMap<OutputSpec, Writer>();

/**
 * Writes the JSON of a prediction `shapePredictions` made: the same bytes as `Buffer.from(JSON.stringify(p))`, from a
 * template of the output's fixed shape (keys and labels encoded once per output spec, numbers formatted as
 * JSON.stringify formats them). A batch writes a line per row, and a generic stringify walking each object, then the
 * line encoded again, cost more than the model run. Outputs whose keys a template cannot order as an object does
 * (array-index keys, a key used twice), and the classification and retrieval kinds, are stringified.
 */
export function predictionWriter(output: OutputSpec): Writer {
  let writer = writers.get(output);
  if (!writer) {
    writer = scoreTemplate(output) ?? ((out, p) => out.text(String(JSON.stringify(p))));
    writers.set(output, writer);
  }
  return writer;
}

function scoreTemplate(output: OutputSpec): Writer | undefined {
  if (output.kind !== 'score') return undefined;
  const keys = [output.scoreName, 'verdict', 'aboveThreshold', ...output.extras.map((e) => e.as)];
  const ordered = (names: readonly string[]) =>
    new Set(names).size === names.length && !names.some((k) => INDEX_KEY.test(k));
  if (!ordered(keys)) return undefined;
  if (output.extras.some((e) => e.kind === 'vector' && (e.names.length === 0 || !ordered(e.names)))) return undefined;
  /** a label's JSON, encoded once (a value not among them is stringified) */
  const labelJson = (labels: readonly string[]) => {
    const known = new Map(labels.map((l) => [l, utf8(JSON.stringify(l))]));
    return (out: JsonSink, v: unknown) => {
      const bytes = typeof v === 'string' ? known.get(v) : undefined;
      if (bytes) out.raw(bytes);
      else out.text(JSON.stringify(v) ?? 'null');
    };
  };
  const verdict = labelJson([output.labels.positive, output.labels.negative]);
  const head = utf8(`{${JSON.stringify(output.scoreName)}:`);
  const verdictKey = utf8(',"verdict":');
  const aboveTrue = utf8(',"aboveThreshold":true');
  const aboveFalse = utf8(',"aboveThreshold":false');
  const close = utf8('}');
  const extras = output.extras.map((extra): Writer => {
    const key = utf8(`,${JSON.stringify(extra.as)}:`);
    if (extra.kind === 'label') {
      const label = labelJson(extra.labels);
      // shapePredictions writes null for an index past the labels
      return (out, p) => {
        out.raw(key);
        label(out, p[extra.as]);
      };
    }
    const names = extra.names.map((n, i) => utf8(`${i === 0 ? '{' : ','}${JSON.stringify(n)}:`));
    return (out, p) => {
      out.raw(key);
      const named = p[extra.as] as Record<string, unknown> | undefined;
      if (typeof named !== 'object' || named === null) {
        out.text(JSON.stringify(named) ?? 'null');
        return;
      }
      for (let i = 0; i < names.length; i++) {
        out.raw(names[i] as Uint8Array);
        writeNumber(out, named[extra.names[i] as string]);
      }
      out.raw(close);
    };
  });
  return (out, p) => {
    if (typeof p !== 'object' || p === null || typeof p.aboveThreshold !== 'boolean') {
      out.text(String(JSON.stringify(p)));
      return;
    }
    out.raw(head);
    writeNumber(out, p[output.scoreName]);
    out.raw(verdictKey);
    verdict(out, p.verdict);
    out.raw(p.aboveThreshold === true ? aboveTrue : aboveFalse);
    for (let i = 0; i < extras.length; i++) (extras[i] as Writer)(out, p);
    out.raw(close);
  };
}
