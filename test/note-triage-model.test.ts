/**
 * The note-triage demonstration graph on onnxruntime-node: notes featurised with the serving featurizer
 * (hashDocument), the class each kind of note lands in, probabilities summing to 1, batch = single rows, a FHIR
 * DocumentReference through documentText, the lexicon weights sitting where hashDocument puts the phrases, and the
 * manifest (schema, sha256, deterministic rebuild).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import YAML from 'yaml';
import { buildAll } from '../models/build.ts';
import { LABELS, LEXICONS, lexiconWeights, phraseTerms } from '../models/note-triage/graph.ts';
import { loadModel } from '../src/registry/load.ts';
import { manifestSchema } from '../src/registry/schema.ts';
import { documentText, fnv1a, hashDocument } from '../src/serving/documents.ts';
import { shapePredictions } from '../src/serving/predictions.ts';

const MODEL_DIR = fileURLToPath(new URL('../models/note-triage/', import.meta.url));
const MODELS_DIR = fileURLToPath(new URL('../models/', import.meta.url));
/** a Synthea R4 bundle of ../shared/data with DocumentReference notes */
const SYNTHEA_BUNDLE = fileURLToPath(
  new URL('../../shared/data/synthea/6c8f3e83-c351-ed33-c38d-6be101c275d2.json', import.meta.url),
);
const BUCKETS = 1024;
const THRESHOLD = 0.6;

const NOTES: Record<(typeof LABELS)[number], string[]> = {
  'urgent-follow-up': [
    'Patient reports central chest pain radiating to the left arm, troponin raised. Urgent cardiology review.',
    '72 year old with new confusion, fever, hypotensive, lactate 4. Suspected sepsis, escalate to medical registrar.',
    'Expressed suicidal ideation with a plan. Urgent mental health assessment required today.',
    'Coughing up blood (haemoptysis) and shortness of breath since this morning.',
    'Two episodes of melaena overnight and syncope on standing. Hypotension despite fluids.',
  ],
  'routine-follow-up': [
    'Hypertension well controlled and stable on amlodipine. Repeat bloods in 3 months and review in clinic.',
    'Type 2 diabetes, HbA1c slightly raised. Medication review with GP, titrate metformin, follow up in 6 weeks.',
    'Asthma stable. Routine follow up in outpatient clinic in 3 months.',
    'Eczema improving on emollients. Recheck at the next routine clinic review.',
  ],
  'no-action': [
    'Chest X-ray normal. Bloods unremarkable. No concerns, discharged.',
    'Rash has fully resolved. No further action. Patient reassured.',
    'Examination within normal limits. ECG normal. No follow up needed.',
    'Symptoms resolved, asymptomatic at review, fully recovered.',
  ],
};
const ALL_NOTES = LABELS.flatMap((label) => NOTES[label].map((text) => ({ label, text })));

const manifestText = readFileSync(`${MODEL_DIR}model.yaml`, 'utf8');
const manifest = manifestSchema.parse(YAML.parse(manifestText));

let session: ort.InferenceSession;
before(async () => {
  session = await ort.InferenceSession.create(`${MODEL_DIR}1/model.onnx`);
});

const featurise = (texts: readonly string[]): Float32Array => {
  const data = new Float32Array(texts.length * BUCKETS);
  texts.forEach((t, i) => {
    hashDocument(t, data.subarray(i * BUCKETS, (i + 1) * BUCKETS));
  });
  return data;
};

/** probabilities [N, 3] as rows */
async function classify(texts: readonly string[]): Promise<number[][]> {
  return classifyFeatures(featurise(texts), texts.length);
}
async function classifyFeatures(features: Float32Array, rows: number): Promise<number[][]> {
  const out = await session.run({ features: new ort.Tensor('float32', features, [rows, BUCKETS]) });
  const probs = out.probabilities;
  assert.ok(probs);
  assert.deepEqual(probs.dims, [rows, LABELS.length]);
  const data = Array.from(probs.data as Float32Array);
  return Array.from({ length: rows }, (_, r) => data.slice(r * LABELS.length, (r + 1) * LABELS.length));
}
const top = (row: readonly number[]) => LABELS[row.indexOf(Math.max(...row))];

function assertDistribution(row: readonly number[], what: string): void {
  for (const p of row) assert.ok(Number.isFinite(p) && p >= 0 && p <= 1, `${what}: probability ${p}`);
  const sum = row.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(sum - 1) < 1e-5, `${what}: probabilities sum to ${sum}`);
}

describe('note-triage graph', () => {
  test('one input `features` [N, 1024], one output `probabilities` [N, 3]', async () => {
    assert.deepEqual(session.inputNames, ['features']);
    assert.deepEqual(session.outputNames, ['probabilities']);
    await classify(['one note']);
  });

  for (const label of LABELS) {
    test(`clearly ${label} notes are ${label}, confidently (>= ${THRESHOLD})`, async () => {
      const rows = await classify(NOTES[label]);
      rows.forEach((row, i) => {
        assert.equal(top(row), label, `"${NOTES[label][i]}" -> [${row.map((p) => p.toFixed(3))}]`);
        assert.ok(Math.max(...row) >= THRESHOLD, `"${NOTES[label][i]}" confidence ${Math.max(...row)}`);
      });
    });
  }

  test('every row is a probability distribution, including odd inputs', async () => {
    const texts = [...ALL_NOTES.map((n) => n.text), 'x', 'a b c', 'chest pain '.repeat(5000), 'Seen today.'];
    (await classify(texts)).forEach((row, i) => {
      assertDistribution(row, `row ${i}`);
    });
    // a note with no token the featurizer keeps (all-zero features) gives the bias alone: not confident
    const [zero] = await classifyFeatures(new Float32Array(BUCKETS), 1);
    assert.ok(zero);
    assertDistribution(zero, 'all-zero features');
    assert.ok(Math.max(...zero) < THRESHOLD, `all-zero features: [${zero}]`);
  });

  test('a batch gives the single-row results', async () => {
    const texts = ALL_NOTES.map((n) => n.text);
    const batch = await classify(texts);
    const singles = await Promise.all(texts.map(async (t) => (await classify([t]))[0]));
    batch.forEach((row, i) => {
      row.forEach((p, j) => {
        assert.ok(Math.abs(p - (singles[i]?.[j] as number)) < 1e-6, `row ${i} class ${j}`);
      });
    });
  });

  test('shaped as the gateway shapes it: category, confidence, confident, probabilities by label', async () => {
    const texts = ALL_NOTES.map((n) => n.text);
    const out = await session.run({ features: new ort.Tensor('float32', featurise(texts), [texts.length, BUCKETS]) });
    const data = out.probabilities?.data as Float32Array;
    const predictions = shapePredictions(
      manifest.output,
      { probabilities: { data, dims: [texts.length, LABELS.length] } },
      texts.length,
    );
    predictions.forEach((p, i) => {
      assert.equal(p.category, ALL_NOTES[i]?.label);
      assert.equal(p.confident, true);
      assert.deepEqual(Object.keys(p.probabilities as object), [...LABELS]);
    });
  });

  test('a FHIR DocumentReference (base64 text/plain attachment) goes through documentText', async () => {
    const note = 'ED review: new confusion and hypotensive, lactate 5. Sepsis suspected, urgent review by registrar.';
    const document = {
      resourceType: 'DocumentReference',
      status: 'current',
      type: { coding: [{ system: 'http://loinc.org', code: '11506-3', display: 'Progress note' }] },
      subject: { reference: 'Patient/example' },
      date: '2026-11-29T08:30:00Z',
      content: [
        { attachment: { contentType: 'text/plain; charset=utf-8', data: Buffer.from(note).toString('base64') } },
      ],
    };
    const text = documentText({ document }, manifest.document?.maxChars ?? 0);
    assert.equal(text, note);
    const [row] = await classify([text]);
    assert.ok(row);
    assert.equal(top(row), 'urgent-follow-up', `[${row}]`);
  });

  test('Synthea DocumentReference notes (shared/data) classify to valid distributions', async () => {
    const bundle = JSON.parse(readFileSync(SYNTHEA_BUNDLE, 'utf8')) as {
      entry: { resource: { resourceType: string } }[];
    };
    const docs = bundle.entry.map((e) => e.resource).filter((r) => r.resourceType === 'DocumentReference');
    assert.ok(docs.length > 0, 'the bundle has DocumentReferences');
    const texts = docs.map((document) => documentText({ document }, manifest.document?.maxChars ?? 0));
    const rows = await classify(texts);
    rows.forEach((row, i) => {
      assertDistribution(row, `Synthea note ${i}`);
      // routine well-visit notes ("No complaints", care plans): never confidently urgent
      assert.ok((row[0] as number) < THRESHOLD, `Synthea note ${i}: [${row}]`);
    });
  });
});

describe('note-triage lexicon weights', () => {
  const w = lexiconWeights(LABELS, BUCKETS);

  test('every lexicon phrase keeps weight for its class, on buckets hashDocument sets for the phrase', () => {
    LABELS.forEach((label, c) => {
      for (const phrase of LEXICONS[label]) {
        const features = hashDocument(phrase, new Float32Array(BUCKETS));
        const weighted = phraseTerms(phrase)
          .map(({ term }) => fnv1a(term) % BUCKETS)
          .filter((b) => (w[b * LABELS.length + c] as number) > 0);
        assert.ok(weighted.length > 0, `"${phrase}" has no weight`);
        for (const b of weighted) assert.ok((features[b] as number) > 0, `"${phrase}": bucket ${b} not in features`);
      }
    });
  });

  test('no bucket carries weight for two classes', () => {
    for (let b = 0; b < BUCKETS; b++) {
      const classes = LABELS.filter((_, c) => (w[b * LABELS.length + c] as number) !== 0);
      assert.ok(classes.length <= 1, `bucket ${b}: ${classes.join(', ')}`);
    }
  });
});

describe('note-triage manifest and build', () => {
  test('validates against manifestSchema: async document classification, labels in graph order', () => {
    const parsed = manifestSchema.safeParse(YAML.parse(manifestText));
    assert.ok(parsed.success, parsed.success ? '' : JSON.stringify(parsed.error.issues));
    const m = parsed.data;
    assert.equal(m.name, 'note-triage');
    assert.equal(m.tier, 'async');
    assert.equal(m.input, 'document');
    assert.deepEqual(m.document, { hashBuckets: BUCKETS, maxChars: 100_000 });
    assert.equal(m.output.kind, 'classification');
    if (m.output.kind !== 'classification') return;
    assert.deepEqual(m.output.labels, [...LABELS]);
    assert.equal(m.output.threshold, THRESHOLD);
    assert.equal(m.versions[0]?.evidence?.approvedThreshold, THRESHOLD);
    assert.equal(m.review?.policy, 'always');
    assert.deepEqual(m.async, { timeoutMs: 30_000, attempts: 3 });
    assert.match(m.disclaimer ?? '', /demonstration/i);
    assert.match(m.disclaimer ?? '', /not clinically validated/i);
  });

  test('the registry loads it (sha256, threshold, tier checks) as an async model', async () => {
    const loaded = await loadModel(MODEL_DIR.replace(/\/$/, ''), MODELS_DIR, 5_000);
    assert.equal(loaded.classification.tier, 'async');
  });

  test('the manifest sha256 is the file sha256, and a rebuild gives the same bytes', () => {
    const file = readFileSync(`${MODEL_DIR}1/model.onnx`);
    assert.equal(
      (manifest.versions[0]?.runtime as { sha256?: string } | undefined)?.sha256,
      createHash('sha256').update(file).digest('hex'),
    );
    const again = buildAll().find((a) => a.model === 'note-triage' && a.version === '1');
    assert.ok(again && Buffer.from(again.bytes).equals(file), 'stale: npm run models:build');
  });
});
