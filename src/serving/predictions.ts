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
