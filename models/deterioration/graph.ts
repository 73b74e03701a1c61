/**
 * The deterioration risk model: logistic regression over standardised vitals and age.
 *
 *   probability = sigmoid(((features - mean) / std) @ weights + bias)     features [N, F] -> probability [N]
 *
 * THE WEIGHTS ARE ILLUSTRATIVE, NOT FITTED TO ANY DATA AND NOT CLINICALLY VALIDATED. They only have plausible signs
 * (faster breathing, lower SpO2, lower BP, faster pulse, fever, oxygen and age raise the risk), and, being linear,
 * they cannot express that a low temperature or a very high BP is also a warning sign.
 */
import { encodeModel, GraphBuilder } from '../onnx.ts';

export interface Coefficient {
  /** standardisation: (x - mean) / std */
  mean: number;
  std: number;
  /** log-odds per standard deviation */
  weight: number;
}
export interface LogisticModel {
  bias: number;
  coefficients: Record<string, Coefficient>;
}

/** Standardisation constants shared by both versions (an illustrative adult inpatient population). */
const population = {
  age: { mean: 62, std: 18 },
  respirationRate: { mean: 17, std: 4 },
  spo2: { mean: 96, std: 2.5 },
  systolicBP: { mean: 128, std: 20 },
  pulse: { mean: 82, std: 16 },
  temperature: { mean: 36.9, std: 0.7 },
  onOxygen: { mean: 0.15, std: 0.36 },
};

const model = (bias: number, weights: Record<keyof typeof population, number>): LogisticModel => ({
  bias,
  coefficients: Object.fromEntries(
    Object.entries(population).map(([name, s]) => [name, { ...s, weight: weights[name as keyof typeof population] }]),
  ),
});

/** Per version; version 2 reweights toward respiration and oxygen (still illustrative). */
export const VERSIONS: Record<string, LogisticModel> = {
  '1': model(-2.4, {
    age: 0.35,
    respirationRate: 0.7,
    spo2: -0.45,
    systolicBP: -0.35,
    pulse: 0.4,
    temperature: 0.2,
    onOxygen: 0.5,
  }),
  '2': model(-2.5, {
    age: 0.3,
    respirationRate: 0.85,
    spo2: -0.55,
    systolicBP: -0.3,
    pulse: 0.35,
    temperature: 0.25,
    onOxygen: 0.65,
  }),
};

/** Builds the graph of one version; `features` is the manifest's column order. */
export function buildDeteriorationModel(version: string, features: readonly string[]): Uint8Array {
  const lr = VERSIONS[version];
  if (!lr) throw new Error(`deterioration: no weights for version ${version}`);
  const names = Object.keys(lr.coefficients);
  if (names.length !== features.length || !features.every((f) => names.includes(f))) {
    throw new Error(`deterioration v${version}: weights for [${names}] but features [${features}]`);
  }
  const coef = features.map((f) => lr.coefficients[f] as Coefficient);
  const F = features.length;

  const g = new GraphBuilder();
  const mean = g.floats(
    'mean',
    coef.map((c) => c.mean),
  );
  const std = g.floats(
    'std',
    coef.map((c) => c.std),
  );
  const weights = g.floats(
    'weights',
    coef.map((c) => c.weight),
    [F, 1],
  );
  const centred = g.op('Sub', ['features', mean], 'centred');
  const z = g.op('Div', [centred, std], 'standardised');
  const logit = g.op('MatMul', [z, weights], 'weighted'); // [N, 1]
  const withBias = g.op('Add', [logit, g.floats('bias', [lr.bias], [1])], 'logit');
  const p = g.op('Sigmoid', [withBias], 'probability_n1');
  g.op('Squeeze', [p, g.int64s('squeeze_axes', [1])], 'probability'); // [N]

  return encodeModel({
    name: `deterioration_v${version}`,
    docString: `Deterioration risk v${version}: logistic regression, ILLUSTRATIVE weights, not clinically validated.`,
    graph: g,
    inputs: [{ name: 'features', dims: ['N', F] }],
    outputs: [{ name: 'probability', dims: ['N'] }],
    metadata: { features: features.join(','), weights: 'illustrative, not clinically validated' },
  });
}
