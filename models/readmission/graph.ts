/**
 * The 30-day readmission risk model: logistic regression over what a hospital knows at discharge.
 *
 *   capped      = min(max(features, low), high)                    per column: LACE-style caps
 *   probability = sigmoid(((capped - mean) / std) @ weights + bias)  features [N, F] -> probability [N]
 *
 * The caps (winsorising) do two things a plain linear model cannot: a count stops adding risk past a ceiling (as LACE
 * caps length of stay and prior visits), and haemoglobin or sodium only add risk BELOW normal (as HOSPITAL scores a
 * low haemoglobin and a low sodium at discharge): a high value is treated as normal, not as protective. The optional
 * features' defaults (13 g/dL, 140 mmol/L) sit at those caps, so a missing lab counts as a normal one.
 *
 * THE WEIGHTS ARE ILLUSTRATIVE, NOT FITTED TO ANY DATA AND NOT CLINICALLY VALIDATED. They only have plausible signs and
 * relative sizes in the spirit of the LACE index and the HOSPITAL score.
 */
import { encodeModel, GraphBuilder } from '../onnx.ts';

export interface Coefficient {
  /** the value is capped to [low, high] first (the feature's own range when it is not capped) */
  low: number;
  high: number;
  /** standardisation: (capped - mean) / std */
  mean: number;
  std: number;
  /** log-odds per standard deviation */
  weight: number;
}
export interface LogisticModel {
  bias: number;
  coefficients: Record<string, Coefficient>;
}

/** Per version. Booleans are 0/1. The population constants describe an illustrative adult discharge cohort. */
export const VERSIONS: Record<string, LogisticModel> = {
  '1': {
    bias: -1.8,
    coefficients: {
      age: { low: 18, high: 120, mean: 65, std: 18, weight: 0.1 },
      lengthOfStayDays: { low: 0, high: 30, mean: 5, std: 6, weight: 0.3 },
      priorAdmissions12m: { low: 0, high: 10, mean: 0.8, std: 1.4, weight: 0.55 },
      charlsonIndex: { low: 0, high: 12, mean: 2.5, std: 2.3, weight: 0.45 },
      emergencyAdmission: { low: 0, high: 1, mean: 0.6, std: 0.49, weight: 0.35 },
      dischargeToHome: { low: 0, high: 1, mean: 0.8, std: 0.4, weight: -0.3 },
      medicationCount: { low: 0, high: 30, mean: 9, std: 5, weight: 0.2 },
      lastHaemoglobin: { low: 3, high: 13, mean: 12.5, std: 1.9, weight: -0.25 },
      lastSodium: { low: 100, high: 140, mean: 138.5, std: 3.8, weight: -0.15 },
    },
  },
};

/** Builds the graph of one version; `features` is the manifest's column order. */
export function buildReadmissionModel(version: string, features: readonly string[]): Uint8Array {
  const lr = VERSIONS[version];
  if (!lr) throw new Error(`readmission: no weights for version ${version}`);
  const names = Object.keys(lr.coefficients);
  if (names.length !== features.length || !features.every((f) => names.includes(f))) {
    throw new Error(`readmission v${version}: weights for [${names}] but features [${features}]`);
  }
  const coef = features.map((f) => lr.coefficients[f] as Coefficient);
  const F = features.length;
  const column = (key: keyof Coefficient) => coef.map((c) => c[key]);

  const g = new GraphBuilder();
  const floor = g.op('Max', ['features', g.floats('low', column('low'))], 'floored');
  const capped = g.op('Min', [floor, g.floats('high', column('high'))], 'capped');
  const centred = g.op('Sub', [capped, g.floats('mean', column('mean'))], 'centred');
  const z = g.op('Div', [centred, g.floats('std', column('std'))], 'standardised');
  const logit = g.op('MatMul', [z, g.floats('weights', column('weight'), [F, 1])], 'weighted'); // [N, 1]
  const withBias = g.op('Add', [logit, g.floats('bias', [lr.bias], [1])], 'logit');
  const p = g.op('Sigmoid', [withBias], 'probability_n1');
  g.op('Squeeze', [p, g.int64s('squeeze_axes', [1])], 'probability'); // [N]

  return encodeModel({
    name: `readmission_v${version}`,
    docString: `30-day readmission risk v${version}: capped logistic regression, ILLUSTRATIVE weights, not clinically validated.`,
    graph: g,
    inputs: [{ name: 'features', dims: ['N', F] }],
    outputs: [{ name: 'probability', dims: ['N'] }],
    metadata: { features: features.join(','), weights: 'illustrative, not clinically validated' },
  });
}
