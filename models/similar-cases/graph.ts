/**
 * The similar-cases graph: a clinical note, feature-hashed by src/serving/documents.ts, to its top-k most similar entries of
 * the bundled reference corpus (corpus.json: short synthetic case summaries, no patient data). A DEMONSTRATION of
 * retrieval, not a validated model: the "embedding" is a fixed random projection of bag-of-words features.
 *
 *   e       = normalise(features @ P)        features [N, B], P [B, D] (seeded pseudo-random) -> e [N, D]
 *   sims    = e @ E^T                        E [K, D]: each corpus entry embedded the same way, at build time
 *   scores, indices = TopK(sims, k)          [N, k] each, best first; indices cast to float32
 *
 * The corpus embeddings go through the same featurizer (hashDocument), the same float32 projection and the same
 * normalisation as the graph, so a note identical to an entry scores ~1 against it. Scores are cosine
 * similarities (in [-1, 1]).
 */
import { createHash } from 'node:crypto';
import { hashDocument } from '../../src/serving/documents.ts';
import type { CorpusEntry } from '../../src/serving/predictions.ts';
import { DataType, encodeModel, GraphBuilder } from '../onnx.ts';
import { mulberry32 } from '../prng.ts';

export const EMBEDDING_DIM = 128;
export const TOP_K = 5;
export const PROJECTION_SEED = 0x7219a5e3;
/** Added to the row norm before dividing, so an all-zero note gives zero scores instead of NaN. */
export const NORM_EPSILON = 1e-6;

/**
 * P [buckets, dim], row-major, float32: uniform in [-1, 1), scaled by 1 / sqrt(dim) (the scale does not change the
 * cosine scores; it keeps the intermediate values near unit size).
 */
export function projectionMatrix(buckets: number, dim = EMBEDDING_DIM, seed = PROJECTION_SEED): Float32Array {
  const next = mulberry32(seed);
  const scale = 1 / Math.sqrt(dim);
  const p = new Float32Array(buckets * dim);
  for (let i = 0; i < p.length; i++) p[i] = (next() * 2 - 1) * scale;
  return p;
}

/** The text of a corpus entry that is embedded: its title and summary. */
export const entryText = (e: CorpusEntry): string => `${e.title}\n${e.summary ?? ''}`;

/** Embeds a text as the graph does: hashDocument, float32 projection, L2 normalisation (+ epsilon). */
export function embed(text: string, projection: Float32Array, buckets: number, dim = EMBEDDING_DIM): Float32Array {
  const features = hashDocument(text, new Float32Array(buckets));
  const e = new Float32Array(dim);
  for (let b = 0; b < buckets; b++) {
    const f = features[b] as number;
    if (f === 0) continue;
    for (let d = 0; d < dim; d++) e[d]! += f * (projection[b * dim + d] as number);
  }
  let norm = 0;
  for (let d = 0; d < dim; d++) norm += (e[d] as number) ** 2;
  const inv = 1 / (Math.sqrt(norm) + NORM_EPSILON);
  for (let d = 0; d < dim; d++) e[d]! *= inv;
  return e;
}

/** A digest of the corpus content (id, title, summary, in order), independent of the JSON file's formatting. */
export function corpusDigest(corpus: readonly CorpusEntry[]): string {
  const canonical = JSON.stringify(corpus.map((e) => [e.id, e.title, e.summary ?? '']));
  return createHash('sha256').update(canonical).digest('hex');
}

export function checkCorpus(corpus: unknown): CorpusEntry[] {
  if (!Array.isArray(corpus)) throw new Error('similar-cases: the corpus must be a JSON array');
  const ids = new Set<string>();
  corpus.forEach((e: Partial<CorpusEntry>, i) => {
    if (typeof e?.id !== 'string' || typeof e.title !== 'string' || typeof e.summary !== 'string') {
      throw new Error(`similar-cases: corpus entry ${i} needs string id, title and summary`);
    }
    if (ids.has(e.id)) throw new Error(`similar-cases: duplicate corpus id ${e.id}`);
    ids.add(e.id);
  });
  if (corpus.length < TOP_K) throw new Error(`similar-cases: the corpus needs at least ${TOP_K} entries`);
  return corpus as CorpusEntry[];
}

export interface SimilarCasesIo {
  /** the manifest's document.hashBuckets */
  hashBuckets: number;
  /** corpus.json, in index order */
  corpus: readonly CorpusEntry[];
}

export function buildSimilarCasesModel(io: SimilarCasesIo): Uint8Array {
  const B = io.hashBuckets;
  const D = EMBEDDING_DIM;
  const corpus = checkCorpus(io.corpus);
  const K = corpus.length;
  const projection = projectionMatrix(B, D);
  // E^T [D, K]: column k is entry k's embedding
  const embeddings = corpus.map((e) => embed(entryText(e), projection, B, D));
  const et = new Float32Array(D * K);
  embeddings.forEach((e, k) => {
    for (let d = 0; d < D; d++) et[d * K + k] = e[d] as number;
  });

  const g = new GraphBuilder();
  const projected = g.op('MatMul', ['features', g.floats('projection', Array.from(projection), [B, D])], 'projected');
  const norm = g.op('ReduceL2', [projected], 'projected_norm', { axes: [1], keepdims: 1 }); // [N, 1]
  const safeNorm = g.op('Add', [norm, g.floats('norm_epsilon', [NORM_EPSILON], [])], 'projected_norm_eps');
  const embedding = g.op('Div', [projected, safeNorm], 'embedding'); // [N, D]
  const sims = g.op('MatMul', [embedding, g.floats('corpus_embeddings_t', Array.from(et), [D, K])], 'similarities');
  // opset 13: TopK takes k as a 1-element int64 input
  const [, topIndices] = g.opMulti('TopK', [sims, g.int64s('k', [TOP_K])], ['scores', 'indices_i64'], {
    axis: 1,
    largest: 1,
    sorted: 1,
  });
  g.op('Cast', [topIndices as string], 'indices', { to: DataType.FLOAT });

  return encodeModel({
    name: 'similar_cases',
    docString:
      'Similar cases DEMONSTRATION: top-k cosine neighbours in a bundled synthetic corpus, over a seeded random ' +
      'projection of hashed note features; not clinically validated.',
    graph: g,
    inputs: [{ name: 'features', dims: ['N', B] }],
    outputs: [
      { name: 'scores', dims: ['N', TOP_K] },
      { name: 'indices', dims: ['N', TOP_K] },
    ],
    metadata: {
      featurizer: `src/documents.ts hashDocument, ${B} buckets`,
      projection: `mulberry32 seed ${PROJECTION_SEED}, ${B}x${D}, uniform [-1, 1) / sqrt(${D})`,
      corpusEntries: String(K),
      corpusDigest: corpusDigest(corpus),
    },
  });
}
