/**
 * How a version's predictions fared against observed outcomes: sensitivity and PPV at the threshold approved when
 * each prediction was made, calibration (Brier score and calibration bins, for scores that are probabilities), AUROC
 * once there are enough labels of each class, and the label delay (outcome observed − prediction made).
 */
export interface Labelled {
  score: number;
  /** the approved threshold the prediction was made at */
  threshold: number;
  outcome: boolean;
  /** ms from the prediction to the observation of its outcome */
  delayMs: number;
}

export interface OutcomeMetrics {
  labelled: number;
  positives: number;
  confusion: { tp: number; fp: number; tn: number; fn: number };
  sensitivity: number | null;
  specificity: number | null;
  ppv: number | null;
  /** null when the scores are not probabilities (e.g. a points score) */
  brier: number | null;
  calibration: Array<{ from: number; to: number; count: number; meanPredicted: number; observedRate: number }> | null;
  /** null until there are `minPerClass` labels of each class */
  auroc: number | null;
  labelDelayHours: { median: number; p90: number } | null;
}

const round = (v: number) => Math.round(v * 1e6) / 1e6;
const ratio = (n: number, d: number) => (d > 0 ? round(n / d) : null);

/** AUROC as the Mann–Whitney statistic: the chance a positive outscores a negative (ties count half). */
export function auroc(rows: readonly Labelled[]): number {
  const sorted = [...rows].sort((a, b) => a.score - b.score);
  let rankSum = 0;
  let positives = 0;
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j < sorted.length && (sorted[j] as Labelled).score === (sorted[i] as Labelled).score) j++;
    const midRank = (i + 1 + j) / 2; // ranks are 1-based; ties share their mean rank
    for (let k = i; k < j; k++) {
      if ((sorted[k] as Labelled).outcome) {
        rankSum += midRank;
        positives++;
      }
    }
    i = j;
  }
  const negatives = sorted.length - positives;
  return (rankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

export function outcomeMetrics(
  rows: readonly Labelled[],
  options: { probability: boolean; minPerClass?: number; bins?: number } = { probability: true },
): OutcomeMetrics {
  const c = { tp: 0, fp: 0, tn: 0, fn: 0 };
  let brierSum = 0;
  for (const r of rows) {
    const predicted = r.score >= r.threshold;
    if (predicted && r.outcome) c.tp++;
    else if (predicted) c.fp++;
    else if (r.outcome) c.fn++;
    else c.tn++;
    brierSum += (r.score - (r.outcome ? 1 : 0)) ** 2;
  }
  const positives = c.tp + c.fn;
  const negatives = c.tn + c.fp;
  const minPerClass = options.minPerClass ?? 10;
  const bins = options.bins ?? 10;
  let calibration: OutcomeMetrics['calibration'] = null;
  if (options.probability && rows.length > 0) {
    calibration = [];
    for (let b = 0; b < bins; b++) {
      const inBin = rows.filter((r) => Math.min(bins - 1, Math.floor(r.score * bins)) === b);
      if (inBin.length === 0) continue;
      calibration.push({
        from: round(b / bins),
        to: round((b + 1) / bins),
        count: inBin.length,
        meanPredicted: round(inBin.reduce((s, r) => s + r.score, 0) / inBin.length),
        observedRate: round(inBin.filter((r) => r.outcome).length / inBin.length),
      });
    }
  }
  const delays = rows.map((r) => r.delayMs / 3_600_000).sort((a, b) => a - b);
  return {
    labelled: rows.length,
    positives,
    confusion: c,
    sensitivity: ratio(c.tp, positives),
    specificity: ratio(c.tn, negatives),
    ppv: ratio(c.tp, c.tp + c.fp),
    brier: options.probability && rows.length > 0 ? round(brierSum / rows.length) : null,
    calibration,
    auroc: positives >= minPerClass && negatives >= minPerClass ? round(auroc(rows)) : null,
    labelDelayHours:
      delays.length > 0 ? { median: round(quantile(delays, 0.5)), p90: round(quantile(delays, 0.9)) } : null,
  };
}
