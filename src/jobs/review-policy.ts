import type { Manifest } from '../registry/schema.ts';
import { confidenceOf, type Prediction } from '../serving/predictions.ts';

export interface HoldDecision {
  hold: boolean;
  reason: string;
}

/**
 * Whether a result waits for a clinician, by the model's review policy: always; when the least confident prediction
 * is below the threshold; or a random sample, for audit. No policy means no hold.
 */
export function holdDecision(
  manifest: Manifest,
  predictions: readonly Prediction[],
  random: () => number = Math.random,
): HoldDecision {
  const review = manifest.review;
  if (!review || review.policy === 'never') return { hold: false, reason: 'no review policy' };
  if (review.policy === 'always') return { hold: true, reason: 'policy: always reviewed' };
  if (review.policy === 'low-confidence') {
    const threshold = review.confidenceBelow ?? manifest.output.threshold;
    const lowest = Math.min(...predictions.map(confidenceOf));
    return lowest < threshold
      ? { hold: true, reason: `confidence ${lowest} below ${threshold}` }
      : { hold: false, reason: `confidence ${lowest} at or above ${threshold}` };
  }
  const percent = review.samplePercent ?? 0;
  return random() * 100 < percent
    ? { hold: true, reason: `sampled for audit (${percent}%)` }
    : { hold: false, reason: `not sampled (${percent}%)` };
}
