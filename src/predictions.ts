import type { Manifest } from './registry/schema.ts';
import type { OutputTensor } from './runtime/types.ts';

export type Prediction = Record<string, unknown>;

/**
 * Shapes raw output tensors into one prediction object per row: the score under its name, the verdict at the
 * approved threshold, and the manifest's extra outputs (named vectors, labels).
 */
export function shapePredictions(
  output: Manifest['output'],
  tensors: Record<string, OutputTensor>,
  rows: number,
): Prediction[] {
  const score = tensors[output.scoreTensor];
  if (!score || score.data.length !== rows) {
    throw new Error(`model output "${output.scoreTensor}" missing or not one value per row`);
  }
  const predictions: Prediction[] = [];
  for (let r = 0; r < rows; r++) {
    const value = round(score.data[r] as number);
    const positive = value >= output.threshold;
    const p: Prediction = {
      [output.scoreName]: value,
      verdict: positive ? output.labels.positive : output.labels.negative,
      aboveThreshold: positive,
    };
    for (const extra of output.extras) {
      const t = tensors[extra.tensor];
      if (!t) throw new Error(`model output "${extra.tensor}" missing`);
      if (extra.kind === 'vector') {
        const width = extra.names.length;
        const named: Record<string, number> = {};
        extra.names.forEach((n, i) => {
          named[n] = round(t.data[r * width + i] as number);
        });
        p[extra.as] = named;
      } else {
        p[extra.as] = extra.labels[Math.round(t.data[r] as number)] ?? null;
      }
    }
    predictions.push(p);
  }
  return predictions;
}

/** float32 → a JSON number without float noise (0.30000001192 → 0.3). */
function round(v: number): number {
  return Number(v.toPrecision(7));
}
