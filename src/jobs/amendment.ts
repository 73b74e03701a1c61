import { Problem } from '../platform/errors.ts';
import type { OutputSpec } from '../registry/schema.ts';
import type { CorpusEntry } from '../serving/predictions.ts';

/** The fields of a model's output, by its kind (src/serving/predictions.ts shapes them). */
export function outputFields(spec: OutputSpec): string[] {
  if (spec.kind === 'classification') return ['category', 'confidence', 'confident', 'probabilities'];
  if (spec.kind === 'retrieval') return ['matches', 'confidence'];
  return [spec.scoreName, 'verdict', 'aboveThreshold', ...spec.extras.map((e) => e.as)];
}

const refuse = (detail: string): never => {
  throw new Problem('invalid_request', `output: ${detail}`);
};

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const unit = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 1;

/**
 * A clinician's amendment → an output of exactly the model's shape, so a callback consumer reads an amended result
 * the way it reads the model's own. A field the model does not produce is refused by name rather than dropped: a
 * reviewer who typed `comment` must learn it went nowhere. Fields a clinician does not state (a class's
 * probabilities) are those of a human label: certain, one-hot.
 */
export function validateAmendment(
  spec: OutputSpec | undefined,
  corpus: readonly CorpusEntry[] | undefined,
  output: unknown,
): Record<string, unknown> {
  if (!isObject(output)) return refuse('an amended output object is required');
  if (JSON.stringify(output).length > 64 * 1024) refuse('too large');
  if (!spec) return output;
  const fields = outputFields(spec);
  const unknown = Object.keys(output).filter((k) => !fields.includes(k));
  if (unknown.length > 0) {
    refuse(`${unknown.map((k) => `"${k}"`).join(', ')} not in this model's output (fields: ${fields.join(', ')})`);
  }
  if (spec.kind === 'classification') return classification(spec.labels, spec.threshold, output);
  if (spec.kind === 'retrieval') return retrieval(corpus ?? [], output);
  const score = output[spec.scoreName];
  if (typeof score !== 'number' || !Number.isFinite(score)) return refuse(`${spec.scoreName} must be a number`);
  const positive = score >= spec.threshold;
  const shaped: Record<string, unknown> = {
    [spec.scoreName]: score,
    verdict: positive ? spec.labels.positive : spec.labels.negative,
    aboveThreshold: positive,
  };
  for (const extra of spec.extras) if (output[extra.as] !== undefined) shaped[extra.as] = output[extra.as];
  for (const k of ['verdict', 'aboveThreshold'] as const) {
    if (output[k] !== undefined && output[k] !== shaped[k]) refuse(`${k} must agree with ${spec.scoreName}`);
  }
  return shaped;
}

function classification(
  labels: readonly string[],
  threshold: number,
  output: Record<string, unknown>,
): Record<string, unknown> {
  const { category, probabilities, confidence } = output;
  if (typeof category !== 'string' || !labels.includes(category)) {
    return refuse(`category must be one of ${labels.join(', ')}`);
  }
  let probs: Record<string, number>;
  if (probabilities === undefined) {
    probs = Object.fromEntries(labels.map((l) => [l, l === category ? 1 : 0]));
  } else {
    if (!isObject(probabilities)) return refuse('probabilities must be an object of label → probability');
    const keys = Object.keys(probabilities);
    if (keys.length !== labels.length || !labels.every((l) => unit(probabilities[l]))) {
      return refuse(`probabilities must give each of ${labels.join(', ')} a number from 0 to 1`);
    }
    probs = probabilities as Record<string, number>;
    if (labels.some((l) => (probs[l] as number) > (probs[category] as number))) {
      refuse('category must be the most probable label');
    }
  }
  const top = probs[category] as number;
  if (confidence !== undefined && confidence !== top) refuse(`confidence must equal the probability of ${category}`);
  if (output.confident !== undefined && output.confident !== top >= threshold) {
    refuse('confident must agree with confidence and the threshold');
  }
  return { category, confidence: top, confident: top >= threshold, probabilities: probs };
}

function retrieval(corpus: readonly CorpusEntry[], output: Record<string, unknown>): Record<string, unknown> {
  const byId = new Map(corpus.map((e) => [e.id, e]));
  const { matches } = output;
  if (!Array.isArray(matches) || matches.some((m) => !isObject(m) || typeof m.id !== 'string' || !byId.has(m.id))) {
    return refuse('matches must be an array of {id} from the reference corpus');
  }
  const shaped = (matches as Array<{ id: string; score?: unknown }>).map((m) => {
    const extra = Object.keys(m).filter((k) => !['id', 'title', 'score'].includes(k));
    if (extra.length > 0) refuse(`a match has only id, title and score, not ${extra.join(', ')}`);
    if (m.score !== undefined && !unit(m.score)) refuse('a match score is a number from 0 to 1');
    return { id: m.id, title: byId.get(m.id)?.title, score: (m.score as number | undefined) ?? 1 };
  });
  return { matches: shaped, confidence: shaped[0]?.score ?? 0 };
}
