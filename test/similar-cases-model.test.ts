/**
 * The similar-cases demonstration graph on onnxruntime-node: a paraphrase of a corpus entry finds that entry first,
 * every entry finds itself (score ~1), scores descend, indices are valid and distinct, batch = single rows, a FHIR
 * DocumentReference through documentText, the graph matching its JS reference (featurizer + seeded projection), the
 * embedded corpus matching corpus.json, and the manifest (schema, sha256, deterministic rebuild).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import YAML from 'yaml';
import { buildAll } from '../models/build.ts';
import { mulberry32 } from '../models/prng.ts';
import {
  checkCorpus,
  corpusDigest,
  EMBEDDING_DIM,
  embed,
  entryText,
  projectionMatrix,
  TOP_K,
} from '../models/similar-cases/graph.ts';
import { loadModel } from '../src/registry/load.ts';
import { manifestSchema } from '../src/registry/schema.ts';
import { documentText, hashDocument } from '../src/serving/documents.ts';
import { shapePredictions } from '../src/serving/predictions.ts';

const MODEL_DIR = fileURLToPath(new URL('../models/similar-cases/', import.meta.url));
const MODELS_DIR = fileURLToPath(new URL('../models/', import.meta.url));
const BUCKETS = 1024;

const manifestText = readFileSync(`${MODEL_DIR}model.yaml`, 'utf8');
const manifest = manifestSchema.parse(YAML.parse(manifestText));
const corpus = checkCorpus(JSON.parse(readFileSync(`${MODEL_DIR}corpus.json`, 'utf8')));
const indexOf = (id: string) => corpus.findIndex((e) => e.id === id);

/** Paraphrases (other wording, abbreviations, different order) of corpus entries, by the id they should find. */
const PARAPHRASES: [string, string][] = [
  [
    'case-001',
    'Elderly man, productive cough and fever for 3 days with pleuritic chest pain; chest X-ray shows right lower lobe ' +
      'consolidation. CRP raised. Started amoxicillin and clarithromycin.',
  ],
  [
    'case-003',
    'Worsening breathlessness, orthopnoea and ankle oedema, crackles at both bases, BNP high; IV furosemide.',
  ],
  [
    'case-004',
    'Creatinine has doubled after diarrhoea and vomiting, on ramipril and metformin; held medications and gave IV ' +
      'fluids for AKI.',
  ],
  ['case-005', 'Sudden onset left arm and leg weakness with facial droop and slurred speech; CT head no bleed.'],
  [
    'case-006',
    'Type 1 diabetic vomiting with abdominal pain, ketones high and acidotic, missed insulin. Fixed rate insulin ' +
      'infusion started.',
  ],
  [
    'case-007',
    'COPD with increased breathlessness and purulent sputum, sats 86% on air; controlled oxygen, nebulisers and ' +
      'prednisolone.',
  ],
  ['case-008', 'Found on the floor after a fall, leg shortened and externally rotated, X-ray: neck of femur fracture.'],
  [
    'case-009',
    'Breathless with pleuritic chest pain after knee surgery, D-dimer raised, CT pulmonary angiogram confirms ' +
      'pulmonary emboli.',
  ],
  ['case-010', 'Vomiting blood and passing melaena on naproxen, haemoglobin dropped, for urgent endoscopy.'],
  [
    'case-012',
    'Confused and agitated overnight, fluctuating attention, 4AT positive, constipated with urinary retention.',
  ],
];

let session: ort.InferenceSession;
before(async () => {
  session = await ort.InferenceSession.create(`${MODEL_DIR}1/model.onnx`);
});

interface Result {
  scores: number[][];
  indices: number[][];
}
async function searchFeatures(features: Float32Array, rows: number): Promise<Result> {
  const out = await session.run({ features: new ort.Tensor('float32', features, [rows, BUCKETS]) });
  assert.deepEqual(out.scores?.dims, [rows, TOP_K]);
  assert.deepEqual(out.indices?.dims, [rows, TOP_K]);
  assert.equal(out.indices?.type, 'float32');
  const split = (t: ort.Tensor | undefined) => {
    const data = Array.from(t?.data as Float32Array);
    return Array.from({ length: rows }, (_, r) => data.slice(r * TOP_K, (r + 1) * TOP_K));
  };
  return { scores: split(out.scores), indices: split(out.indices) };
}
/** [N, 1024] features of the texts, as the gateway computes them */
function featurise(texts: readonly string[]): Float32Array {
  const data = new Float32Array(texts.length * BUCKETS);
  texts.forEach((t, i) => {
    hashDocument(t, data.subarray(i * BUCKETS, (i + 1) * BUCKETS));
  });
  return data;
}
const search = (texts: readonly string[]): Promise<Result> => searchFeatures(featurise(texts), texts.length);

function assertWellFormed({ scores, indices }: Result, what: string): void {
  scores.forEach((row, r) => {
    assert.equal(row.length, TOP_K, `${what} row ${r}`);
    for (let j = 0; j < TOP_K; j++) {
      const s = row[j] as number;
      assert.ok(Number.isFinite(s) && s >= -1 - 1e-5 && s <= 1 + 1e-5, `${what} row ${r}: score ${s}`);
      if (j > 0) assert.ok(s <= (row[j - 1] as number), `${what} row ${r}: scores not descending [${row}]`);
    }
    const idx = indices[r] as number[];
    for (const i of idx) assert.ok(Number.isInteger(i) && i >= 0 && i < corpus.length, `${what} row ${r}: index ${i}`);
    assert.equal(new Set(idx).size, TOP_K, `${what} row ${r}: repeated index [${idx}]`);
  });
}

describe('similar-cases graph', () => {
  test('one input `features` [N, 1024]; outputs `scores` and `indices` [N, 5], float32', async () => {
    assert.deepEqual(session.inputNames, ['features']);
    assert.deepEqual([...session.outputNames].sort(), ['indices', 'scores']);
    assertWellFormed(await search(['one note']), 'one note');
  });

  test('a paraphrase of a corpus entry finds that entry first', async () => {
    const result = await search(PARAPHRASES.map(([, text]) => text));
    assertWellFormed(result, 'paraphrases');
    PARAPHRASES.forEach(([id], r) => {
      const found = corpus[result.indices[r]?.[0] as number]?.id;
      assert.equal(found, id, `paraphrase of ${id}: top ${found}, scores [${result.scores[r]}]`);
      assert.ok((result.scores[r]?.[0] as number) >= (manifest.output.threshold as number), `${id} above threshold`);
    });
  });

  test('every corpus entry finds itself first, with a cosine score of ~1', async () => {
    const result = await search(corpus.map(entryText));
    assertWellFormed(result, 'corpus');
    corpus.forEach((e, r) => {
      assert.equal(result.indices[r]?.[0], r, `${e.id}`);
      assert.ok(Math.abs((result.scores[r]?.[0] as number) - 1) < 1e-4, `${e.id}: ${result.scores[r]?.[0]}`);
      assert.ok((result.scores[r]?.[1] as number) < 0.9, `${e.id}: a near-duplicate entry`);
    });
  });

  test('the graph computes the JS reference: cosine of embed() (hashDocument + seeded projection)', async () => {
    const projection = projectionMatrix(BUCKETS);
    const embeddings = corpus.map((e) => embed(entryText(e), projection, BUCKETS));
    const texts = PARAPHRASES.map(([, text]) => text);
    const result = await search(texts);
    texts.forEach((t, r) => {
      const q = embed(t, projection, BUCKETS);
      const cos = embeddings.map((e) => e.reduce((acc, v, d) => acc + v * (q[d] as number), 0));
      const expected = [...cos].sort((a, b) => b - a).slice(0, TOP_K);
      expected.forEach((s, j) => {
        assert.ok(Math.abs(s - (result.scores[r]?.[j] as number)) < 1e-4, `row ${r} #${j}`);
      });
    });
  });

  test('a batch gives the single-row results', async () => {
    const texts = [...PARAPHRASES.map(([, text]) => text), ...corpus.slice(0, 5).map(entryText)];
    const batch = await search(texts);
    for (const [r, t] of texts.entries()) {
      const single = await search([t]);
      assert.deepEqual(single.indices[0], batch.indices[r], `row ${r} indices`);
      single.scores[0]?.forEach((s, j) => {
        assert.ok(Math.abs(s - (batch.scores[r]?.[j] as number)) < 1e-6, `row ${r}`);
      });
    }
  });

  test('all-zero features (no usable token) give finite zero scores, not NaN', async () => {
    const result = await searchFeatures(new Float32Array(2 * BUCKETS), 2);
    assertWellFormed(result, 'zero');
    for (const row of result.scores) for (const s of row) assert.equal(s, 0);
  });

  test('a FHIR DocumentReference (base64 text/plain attachment) goes through documentText', async () => {
    const [id, note] = PARAPHRASES[7] as [string, string];
    const document = {
      resourceType: 'DocumentReference',
      status: 'current',
      type: { coding: [{ system: 'http://loinc.org', code: '18842-5', display: 'Discharge summary' }] },
      subject: { reference: 'Patient/example' },
      content: [{ attachment: { contentType: 'text/plain', data: Buffer.from(note).toString('base64') } }],
    };
    const text = documentText({ document }, manifest.document?.maxChars ?? 0);
    assert.equal(text, note);
    const result = await search([text]);
    assert.equal(result.indices[0]?.[0], indexOf(id));
  });

  test('shaped as the gateway shapes it: matches with corpus ids and titles at or above the threshold', async () => {
    const texts = PARAPHRASES.map(([, text]) => text);
    const features = new ort.Tensor('float32', featurise(texts), [texts.length, BUCKETS]);
    const out = await session.run({ features });
    const tensor = (name: string) => ({ data: out[name]?.data as Float32Array, dims: [texts.length, TOP_K] });
    const predictions = shapePredictions(
      manifest.output,
      { scores: tensor('scores'), indices: tensor('indices') },
      texts.length,
      corpus,
    );
    predictions.forEach((p, r) => {
      const matches = p.matches as { id: string; title: string; score: number }[];
      assert.ok(matches.length >= 1 && matches.length <= TOP_K);
      assert.equal(matches[0]?.id, PARAPHRASES[r]?.[0]);
      assert.equal(matches[0]?.title, corpus[indexOf(matches[0]?.id ?? '')]?.title);
    });
  });
});

describe('similar-cases corpus and projection', () => {
  test('corpus.json: ~30 synthetic entries, ids case-NNN in order, titles and summaries', () => {
    assert.ok(corpus.length >= 30, `${corpus.length} entries`);
    corpus.forEach((e, i) => {
      assert.equal(e.id, `case-${String(i + 1).padStart(3, '0')}`);
      assert.ok(e.title.length > 0 && (e.summary ?? '').length > 40, e.id);
    });
  });

  test('the model embeds the current corpus.json (metadata corpusDigest)', () => {
    const model = onnxProto.onnx.ModelProto.decode(readFileSync(`${MODEL_DIR}1/model.onnx`));
    const meta = Object.fromEntries(model.metadataProps.map((p) => [p.key, p.value]));
    assert.equal(meta.corpusEntries, String(corpus.length));
    assert.equal(meta.corpusDigest, corpusDigest(corpus), 'corpus.json changed: npm run models:build');
  });

  test('mulberry32 and the projection are deterministic', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const xs = Array.from({ length: 5 }, () => a());
    assert.deepEqual(
      xs,
      Array.from({ length: 5 }, () => b()),
    );
    for (const x of xs) assert.ok(x >= 0 && x < 1);
    const p = projectionMatrix(BUCKETS);
    assert.equal(p.length, BUCKETS * EMBEDDING_DIM);
    assert.deepEqual(p, projectionMatrix(BUCKETS));
  });
});

describe('similar-cases manifest and build', () => {
  test('validates against manifestSchema: async document retrieval over corpus.json', () => {
    const parsed = manifestSchema.safeParse(YAML.parse(manifestText));
    assert.ok(parsed.success, parsed.success ? '' : JSON.stringify(parsed.error.issues));
    const m = parsed.data;
    assert.equal(m.name, 'similar-cases');
    assert.equal(m.tier, 'async');
    assert.equal(m.input, 'document');
    assert.deepEqual(m.document, { hashBuckets: BUCKETS, maxChars: 100_000 });
    assert.equal(m.output.kind, 'retrieval');
    if (m.output.kind !== 'retrieval') return;
    assert.equal(m.output.scoresTensor, 'scores');
    assert.equal(m.output.indicesTensor, 'indices');
    assert.equal(m.output.corpus, 'corpus.json');
    assert.equal(m.output.threshold, 0.1);
    assert.equal(m.versions[0]?.evidence?.approvedThreshold, 0.1);
    assert.equal(m.review?.policy, 'sample');
    assert.equal(m.review?.samplePercent, 20);
    assert.deepEqual(m.async, { timeoutMs: 30_000, attempts: 3 });
    assert.match(m.disclaimer ?? '', /demonstration/i);
    assert.match(m.disclaimer ?? '', /not clinically validated/i);
  });

  test('the registry loads it (sha256, threshold, tier checks) as an async model with its corpus', async () => {
    const loaded = await loadModel(MODEL_DIR.replace(/\/$/, ''), MODELS_DIR, 5_000);
    assert.equal(loaded.classification.tier, 'async');
  });

  test('the manifest sha256 is the file sha256, and a rebuild gives the same bytes', () => {
    const file = readFileSync(`${MODEL_DIR}1/model.onnx`);
    assert.equal(
      (manifest.versions[0]?.runtime as { sha256?: string } | undefined)?.sha256,
      createHash('sha256').update(file).digest('hex'),
    );
    const again = buildAll().find((a) => a.model === 'similar-cases' && a.version === '1');
    assert.ok(again && Buffer.from(again.bytes).equals(file), 'stale: npm run models:build');
  });
});
