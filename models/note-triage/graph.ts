/**
 * The note-triage graph: a clinical note, feature-hashed by src/serving/documents.ts, to probabilities over three follow-up
 * classes. A DEMONSTRATION: the weights come from small hand-written keyword lexicons, not from labelled notes, and
 * the model is not clinically validated. It cannot read negation ("no chest pain" still counts "chest pain").
 *
 *   probabilities = softmax(scale * (features @ W + b))     features [N, B] -> probabilities [N, 3]
 *
 * W [B, 3] is built from the lexicons with the featurizer's own term and bucket logic (the unigrams and bigrams that
 * hashDocument counts, bucketed by fnv1a % B), so a lexicon phrase in a note lands exactly on its weights.
 * Bigrams carry most weight (they are the phrase); a phrase's content words carry some; BIGRAM_ONLY words none.
 * With only 1024 buckets, unrelated words share buckets with lexicon terms (e.g. "home" with "chest pain"): buckets
 * shared by two classes or by common BACKGROUND wording are left empty, and the lexicons were edited until every
 * phrase kept some weight (lexiconWeights throws otherwise). Some collisions with other words remain.
 */
import { fnv1a, tokenize } from '../../src/serving/documents.ts';
import { encodeModel, GraphBuilder } from '../onnx.ts';

/** The classes, in the column order of `probabilities` (the manifest's labels must match). */
export const LABELS = ['urgent-follow-up', 'routine-follow-up', 'no-action'] as const;
export type Label = (typeof LABELS)[number];

export const LEXICONS: Record<Label, readonly string[]> = {
  'urgent-follow-up': [
    'chest pain',
    'shortness of breath',
    'sepsis',
    'septic',
    'troponin',
    'raised troponin',
    'suicidal ideation',
    'new confusion',
    'haemoptysis',
    'urgently',
    'urgent review',
    'suicidal thoughts',
    'self harm',
    'hypotension',
    'hypotensive',
    'raised lactate',
    'melaena',
    'vomiting blood',
    'collapse',
    'syncope',
    'facial droop',
    'acute kidney injury',
    'anaphylactic',
    'escalate',
    'deteriorating',
  ],
  'routine-follow-up': [
    'follow up',
    'review in clinic',
    'clinic review',
    'repeat bloods',
    'medications reviewed',
    'stable',
    'routine',
    'outpatient',
    'recheck',
    'titrate',
    'gp review',
    'monitor',
  ],
  'no-action': [
    'normal',
    'no concerns',
    'no complaints',
    'discharged',
    'resolved',
    'unremarkable',
    'no further action',
    'no follow',
    'no action',
    'within normal limits',
    'reassured',
    'no abnormality detected',
    'fully recovered',
    'asymptomatic',
  ],
};

/**
 * Words that count only inside a lexicon phrase's bigrams, not on their own: stop words, and words too common or
 * too shared between classes to mean anything alone ("urgent review" is urgent, "review" is not).
 */
const BIGRAM_ONLY = new Set([
  ...['of', 'in', 'no', 'up', 'the', 'and', 'to', 'for', 'with', 'on', 'at', 'by', 'is'],
  ...['urgent', 'review', 'follow', 'assessment', 'referral', 'new', 'raised', 'repeat', 'blood', 'further'],
]);

/**
 * Everyday note wording with no class signal: the buckets of these terms (and their bigrams) carry no lexicon
 * weight, so that "Seen today." or "patient reports" does not read as a class. It costs the lexicon terms that
 * share those buckets (e.g. "of breath", masked by "appointment"; "shortness of" still counts).
 */
export const BACKGROUND = [
  'patient seen on the ward round this morning',
  'patient reports feeling',
  'year old man',
  'year old woman',
  'history of',
  'past medical history',
  'plan',
  'in days',
  'in weeks',
  'in months',
  'letter received from the hospital regarding the appointment',
  'telephone consultation with daughter son wife husband',
  'eating and drinking',
  'mobilising with physiotherapy',
  'observations',
  'on examination',
  'overnight',
  'nursing staff',
  'dressing change',
  'wound',
  'blood pressure',
  'heart rate',
  'temperature',
  'pain',
  'has been',
  'he she they',
  'her his their',
  'was were will be',
  'left right',
  'today yesterday',
  'no not has had given continue',
  'ecg',
];

/** Weight of a phrase's bigrams and of its content words (a one-word phrase is all content word). */
export const BIGRAM_WEIGHT = 1;
export const UNIGRAM_WEIGHT = 0.5;
/** Multiplies the logits before the softmax (an inverse temperature): hashed features are L2-normalised, so small. */
export const LOGIT_SCALE = 5;
/** Per-class bias: a note with no lexicon term leans, weakly, to routine follow-up (below any confident threshold). */
export const BIAS: Record<Label, number> = { 'urgent-follow-up': 0, 'routine-follow-up': 0.05, 'no-action': 0 };

/**
 * The terms of a phrase exactly as hashDocument counts them (each token, each adjacent pair) with their weights.
 */
export function phraseTerms(phrase: string): { term: string; weight: number }[] {
  const tokens = tokenize(phrase);
  const terms: { term: string; weight: number }[] = [];
  tokens.forEach((t, i) => {
    if (!BIGRAM_ONLY.has(t)) terms.push({ term: t, weight: tokens.length === 1 ? BIGRAM_WEIGHT : UNIGRAM_WEIGHT });
    const next = tokens[i + 1];
    if (next !== undefined) terms.push({ term: `${t} ${next}`, weight: BIGRAM_WEIGHT });
  });
  if (terms.length === 0) throw new Error(`note-triage: lexicon phrase "${phrase}" has no usable terms`);
  return terms;
}

/** Every term (token and adjacent pair) of a text, as hashDocument forms them. */
function allTerms(text: string): string[] {
  const tokens = tokenize(text);
  return tokens.flatMap((t, i) => (i + 1 < tokens.length ? [t, `${t} ${tokens[i + 1]}`] : [t]));
}

/**
 * W [buckets, labels], row-major. Each class's lexicon terms (each counted once per class, at its highest weight)
 * go into their hash buckets, except ambiguous buckets, left empty: those hit by terms of two classes, or by a
 * BACKGROUND term. Throws if that leaves a lexicon phrase with no weight at all (edit the lexicon).
 */
export function lexiconWeights(labels: readonly string[], buckets: number): Float64Array {
  if (labels.join() !== LABELS.join()) throw new Error(`note-triage: labels must be ${LABELS.join(', ')}`);
  const bucketOf = (term: string) => fnv1a(term) % buckets;
  const perClass = LABELS.map((label) => {
    const terms = new Map<string, number>();
    for (const phrase of LEXICONS[label]) {
      for (const { term, weight } of phraseTerms(phrase)) terms.set(term, Math.max(weight, terms.get(term) ?? 0));
    }
    return terms;
  });
  const classesIn = new Map<number, Set<number>>();
  perClass.forEach((terms, c) => {
    for (const term of terms.keys()) classesIn.set(bucketOf(term), (classesIn.get(bucketOf(term)) ?? new Set()).add(c));
  });
  const background = new Set(BACKGROUND.flatMap(allTerms).map(bucketOf));
  const usable = (term: string) => !background.has(bucketOf(term)) && classesIn.get(bucketOf(term))?.size === 1;

  const w = new Float64Array(buckets * LABELS.length);
  perClass.forEach((terms, c) => {
    for (const [term, weight] of terms) if (usable(term)) w[bucketOf(term) * LABELS.length + c] = weight;
  });
  for (const label of LABELS) {
    for (const phrase of LEXICONS[label]) {
      if (!phraseTerms(phrase).some(({ term }) => usable(term))) {
        throw new Error(`note-triage: every term of "${phrase}" (${label}) is in an ambiguous bucket`);
      }
    }
  }
  return w;
}

export interface NoteTriageIo {
  /** the manifest's output labels, in column order */
  labels: readonly string[];
  /** the manifest's document.hashBuckets */
  hashBuckets: number;
}

export function buildNoteTriageModel(io: NoteTriageIo): Uint8Array {
  const B = io.hashBuckets;
  const K = LABELS.length;
  const g = new GraphBuilder();
  const w = g.floats('lexicon_weights', Array.from(lexiconWeights(io.labels, B)), [B, K]);
  const b = g.floats(
    'class_bias',
    LABELS.map((l) => BIAS[l]),
    [K],
  );
  const scores = g.op('MatMul', ['features', w], 'lexicon_scores'); // [N, K]
  const logits = g.op('Add', [scores, b], 'logits');
  const scaled = g.op('Mul', [logits, g.floats('logit_scale', [LOGIT_SCALE], [])], 'scaled_logits');
  g.op('Softmax', [scaled], 'probabilities', { axis: 1 }); // [N, K]

  return encodeModel({
    name: 'note_triage',
    docString:
      'Note triage DEMONSTRATION: keyword-lexicon weights over hashed note features; not trained on patient data, ' +
      'not clinically validated.',
    graph: g,
    inputs: [{ name: 'features', dims: ['N', B] }],
    outputs: [{ name: 'probabilities', dims: ['N', K] }],
    metadata: {
      labels: LABELS.join(','),
      featurizer: `src/documents.ts hashDocument, ${B} buckets`,
      weights: 'demonstration keyword lexicons, not clinically validated',
    },
  });
}
