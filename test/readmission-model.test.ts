/**
 * The readmission batch model: its ONNX graph run directly (range, monotonicity, the capped logistic formula, batch
 * equal to single rows), its manifest (schema, registry load as a batch model), the build's sha256, and the
 * synthetic sample file (deterministic, exactly its five deliberately bad rows refused).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import YAML from 'yaml';
import { buildAll } from '../models/build.ts';
import { BAD_ROWS, generateSample, SAMPLE_FILE, SAMPLE_ROWS } from '../models/readmission/generate-sample.ts';
import { VERSIONS } from '../models/readmission/graph.ts';
import { readNdjson } from '../src/batch/readers.ts';
import { loadModel } from '../src/registry/load.ts';
import { manifestSchema } from '../src/registry/schema.ts';
import { encodeInstances } from '../src/serving/features.ts';

const MODELS_DIR = fileURLToPath(new URL('../models/', import.meta.url));
const MODEL_DIR = fileURLToPath(new URL('../models/readmission/', import.meta.url));
const THRESHOLD = 0.25;
const FEATURES = [
  'age',
  'lengthOfStayDays',
  'priorAdmissions12m',
  'charlsonIndex',
  'emergencyAdmission',
  'dischargeToHome',
  'medicationCount',
  'lastHaemoglobin',
  'lastSodium',
] as const;
type Discharge = Record<(typeof FEATURES)[number], number>;

const TYPICAL: Discharge = {
  age: 68,
  lengthOfStayDays: 4,
  priorAdmissions12m: 0,
  charlsonIndex: 2,
  emergencyAdmission: 1,
  dischargeToHome: 1,
  medicationCount: 8,
  lastHaemoglobin: 13,
  lastSodium: 140,
};
const LOW_RISK: Discharge = {
  age: 35,
  lengthOfStayDays: 1,
  priorAdmissions12m: 0,
  charlsonIndex: 0,
  emergencyAdmission: 0,
  dischargeToHome: 1,
  medicationCount: 2,
  lastHaemoglobin: 14.2,
  lastSodium: 141,
};
const HIGH_RISK: Discharge = {
  age: 84,
  lengthOfStayDays: 16,
  priorAdmissions12m: 3,
  charlsonIndex: 6,
  emergencyAdmission: 1,
  dischargeToHome: 0,
  medicationCount: 17,
  lastHaemoglobin: 9.8,
  lastSodium: 131,
};
const LOWEST: Discharge = {
  age: 18,
  lengthOfStayDays: 0,
  priorAdmissions12m: 0,
  charlsonIndex: 0,
  emergencyAdmission: 0,
  dischargeToHome: 0,
  medicationCount: 0,
  lastHaemoglobin: 3,
  lastSodium: 100,
};
const HIGHEST: Discharge = {
  age: 120,
  lengthOfStayDays: 365,
  priorAdmissions12m: 50,
  charlsonIndex: 37,
  emergencyAdmission: 1,
  dischargeToHome: 1,
  medicationCount: 60,
  lastHaemoglobin: 25,
  lastSodium: 180,
};
/** every feature at its riskiest end of the manifest range: the largest logit the model can give */
const WORST: Discharge = { ...HIGHEST, dischargeToHome: 0, lastHaemoglobin: 3, lastSodium: 100 };
/** and the smallest */
const BEST: Discharge = { ...LOWEST, dischargeToHome: 1, lastHaemoglobin: 25, lastSodium: 180 };

const raw = YAML.parse(readFileSync(`${MODEL_DIR}model.yaml`, 'utf8'));
let session: ort.InferenceSession;
async function risk(discharges: readonly Discharge[]): Promise<number[]> {
  const data = Float32Array.from(discharges.flatMap((d) => FEATURES.map((f) => d[f])));
  const out = await session.run({ features: new ort.Tensor('float32', data, [discharges.length, FEATURES.length]) });
  assert.deepEqual(out.probability?.dims, [discharges.length]);
  return Array.from(out.probability?.data as Float32Array);
}
const vary = (key: keyof Discharge, values: number[]): Discharge[] => values.map((v) => ({ ...TYPICAL, [key]: v }));
const range = (from: number, to: number, step = 1) =>
  Array.from({ length: Math.floor((to - from) / step) + 1 }, (_, i) => from + i * step);

function assertMonotonic(xs: number[], what: string, strict: boolean): void {
  for (let i = 1; i < xs.length; i++) {
    const [a, b] = [xs[i - 1] as number, xs[i] as number];
    assert.ok(strict ? b > a : b >= a, `${what}: ${a} then ${b} at step ${i}`);
  }
}
const assertFlat = (xs: number[], what: string) => assert.ok(new Set(xs).size === 1, `${what}: ${xs}`);

/** The model written out from the weights of graph.ts, in float64: sigmoid(sum(((clip(x) - mean) / std) * w) + b). */
function expected(d: Discharge): number {
  const lr = VERSIONS['1'];
  assert.ok(lr);
  const z = FEATURES.reduce((acc, f) => {
    const c = lr.coefficients[f];
    assert.ok(c, f);
    const capped = Math.min(Math.max(d[f], c.low), c.high);
    return acc + ((capped - c.mean) / c.std) * c.weight;
  }, lr.bias);
  return 1 / (1 + Math.exp(-z));
}

before(async () => {
  session = await ort.InferenceSession.create(`${MODEL_DIR}1/model.onnx`);
});

describe('readmission v1 graph', () => {
  test('one input `features` [N, 9], one output `probability` [N], strictly inside (0, 1) even at the extremes', async () => {
    assert.deepEqual(session.inputNames, ['features']);
    assert.deepEqual(session.outputNames, ['probability']);
    const ps = await risk([TYPICAL, LOW_RISK, HIGH_RISK, LOWEST, HIGHEST, WORST, BEST]);
    for (const p of ps) assert.ok(p > 0 && p < 1, `probability ${p}`);
    const [worst, best] = ps.slice(-2) as [number, number];
    assert.ok(worst < 0.99999 && best > 0.001, `the caps bound the logit: worst ${worst}, best ${best}`);
  });

  test('a high-risk discharge is at or above the threshold 0.25, typical and low-risk ones below', async () => {
    const [typical, low, high] = (await risk([TYPICAL, LOW_RISK, HIGH_RISK])) as [number, number, number];
    assert.ok(high >= THRESHOLD, `high ${high}`);
    assert.ok(typical < THRESHOLD, `typical ${typical}`);
    assert.ok(low < typical, `low ${low} < typical ${typical}`);
  });

  test('risk rises with prior admissions and Charlson index up to their caps, then stays flat', async () => {
    assertMonotonic(await risk(vary('priorAdmissions12m', range(0, 10))), 'priorAdmissions12m', true);
    assertFlat(await risk(vary('priorAdmissions12m', range(10, 50))), 'priorAdmissions12m past 10');
    assertMonotonic(await risk(vary('charlsonIndex', range(0, 12))), 'charlsonIndex', true);
    assertFlat(await risk(vary('charlsonIndex', range(12, 37))), 'charlsonIndex past 12');
    // and never falls anywhere in the manifest range, from any starting point
    for (const base of [LOW_RISK, HIGH_RISK, LOWEST]) {
      const at = (key: keyof Discharge, to: number) => range(0, to).map((v) => ({ ...base, [key]: v }));
      assertMonotonic(await risk(at('priorAdmissions12m', 50)), 'priorAdmissions12m 0..50', false);
      assertMonotonic(await risk(at('charlsonIndex', 37)), 'charlsonIndex 0..37', false);
    }
  });

  test('risk rises with stay, medications, age and an emergency admission, and when not discharged home', async () => {
    assertMonotonic(await risk(vary('lengthOfStayDays', range(0, 30, 0.5))), 'lengthOfStayDays', true);
    assertMonotonic(await risk(vary('medicationCount', range(0, 30))), 'medicationCount', true);
    assertMonotonic(await risk(vary('age', range(18, 120, 2))), 'age', true);
    assertMonotonic(await risk(vary('emergencyAdmission', [0, 1])), 'emergencyAdmission', true);
    assertMonotonic(await risk(vary('dischargeToHome', [1, 0])), 'not home', true);
  });

  test('a low haemoglobin or sodium raises the risk; a high one counts as normal, not as protective', async () => {
    assertMonotonic(await risk(vary('lastHaemoglobin', range(13, 3, -0.5))), 'haemoglobin falling', true);
    assertFlat(await risk(vary('lastHaemoglobin', range(13, 25, 0.5))), 'haemoglobin above 13');
    assertMonotonic(await risk(vary('lastSodium', range(140, 100, -1))), 'sodium falling', true);
    assertFlat(await risk(vary('lastSodium', range(140, 180))), 'sodium above 140');
  });

  test('the graph computes the capped logistic formula with the weights of graph.ts', async () => {
    const discharges = [TYPICAL, LOW_RISK, HIGH_RISK, LOWEST, HIGHEST, WORST, BEST];
    const got = await risk(discharges);
    discharges.forEach((d, i) => {
      const want = expected(d);
      assert.ok(Math.abs((got[i] as number) - want) < 1e-5, `discharge ${i}: ${got[i]} vs ${want}`);
    });
  });

  test('a batch gives the single-row results', async () => {
    const discharges = [TYPICAL, LOW_RISK, HIGH_RISK, LOWEST, HIGHEST, ...vary('charlsonIndex', range(0, 20, 2))];
    const batch = await risk(discharges);
    const singles = await Promise.all(discharges.map(async (d) => (await risk([d]))[0]));
    assert.deepEqual(batch, singles);
  });
});

describe('readmission manifest and build', () => {
  test('validates with the manifest schema: batch-only, one nightly schedule, the approved threshold', () => {
    const parsed = manifestSchema.safeParse(raw);
    assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
    const m = parsed.data;
    assert.deepEqual(
      m.features.map((f) => f.name),
      FEATURES,
    );
    assert.equal(m.tier, 'batch');
    assert.equal(m.sync, undefined);
    assert.equal(m.decisionWindowMs, undefined);
    assert.equal(m.review, undefined);
    assert.deepEqual(m.batch, { chunkSize: 512, lookbackHours: 720 });
    assert.deepEqual(m.schedules, [
      {
        id: 'readmission-nightly',
        cron: '0 30 2 * * *',
        timezone: 'Europe/London',
        input: { path: 'inputs/readmission/discharges.ndjson', format: 'ndjson' },
        missed: 'catch-up',
      },
    ]);
    assert.equal(m.output.kind, 'score');
    if (m.output.kind !== 'score') return;
    assert.equal(m.output.scoreTensor, 'probability');
    assert.equal(m.output.scoreName, 'readmissionRisk');
    assert.equal(m.output.threshold, THRESHOLD);
    assert.deepEqual(m.output.labels, { positive: 'transitional-care-outreach', negative: 'standard-discharge' });
    assert.equal(m.versions.length, 1);
    assert.equal(m.versions[0]?.evidence?.approvedThreshold, THRESHOLD);
    assert.equal(m.versions[0]?.evidence?.rollbackTarget, null);
    assert.equal(m.routing.primary, '1');
    assert.deepEqual(m.owner, { team: 'Population Health Analytics', contact: 'pop-health@example.org' });
    assert.match(m.disclaimer ?? '', /illustrative/i);
    assert.match(m.disclaimer ?? '', /not clinically validated/i);
    // optional labs default to the value the graph's caps treat as normal
    const byName = new Map(m.features.map((f) => [f.name, f]));
    assert.deepEqual(
      [byName.get('lastHaemoglobin'), byName.get('lastSodium')].map((f) => [f?.required, f?.default]),
      [
        [false, VERSIONS['1']?.coefficients.lastHaemoglobin?.high],
        [false, VERSIONS['1']?.coefficients.lastSodium?.high],
      ],
    );
  });

  test('the registry loads it as a batch model because it only has schedules', async () => {
    const loaded = await loadModel(MODEL_DIR.replace(/\/$/, ''), MODELS_DIR, 5_000);
    assert.deepEqual(loaded.classification, { tier: 'batch', reasons: ['only has schedules'] });
    assert.equal(loaded.manifest.routing.primary, '1');
    assert.deepEqual([...loaded.artifacts.keys()], ['1']);
  });

  test('the manifest sha256 is the file sha256, and a rebuild gives the same bytes', () => {
    const file = readFileSync(`${MODEL_DIR}1/model.onnx`);
    assert.equal(raw.versions[0]?.runtime.sha256, createHash('sha256').update(file).digest('hex'));
    const again = buildAll().filter((a) => a.model === 'readmission');
    assert.equal(again.length, 1);
    assert.ok(again[0] && Buffer.from(again[0].bytes).equals(file), 'stale: npm run models:build');
  });
});

describe('readmission sample discharges', () => {
  test('the file is what generate-sample.ts writes (deterministic)', () => {
    assert.equal(generateSample(), generateSample());
    assert.equal(
      readFileSync(SAMPLE_FILE, 'utf8'),
      generateSample(),
      'stale: node --import tsx models/readmission/generate-sample.ts',
    );
  });

  test('read as the batch reads it, exactly the deliberately bad rows are refused; the rest score both ways', async () => {
    const m = manifestSchema.parse(raw);
    const rows = [];
    for await (const row of readNdjson(createReadStream(SAMPLE_FILE))) rows.push(row);
    assert.equal(rows.length, SAMPLE_ROWS);
    assert.equal(new Set(rows.map((r) => r.id)).size, SAMPLE_ROWS);
    const refused: string[] = [];
    const valid: Float32Array[] = [];
    for (const row of rows) {
      assert.equal(row.error, undefined);
      try {
        valid.push(encodeInstances(m.features, [row.values]));
      } catch {
        refused.push(row.id);
      }
    }
    assert.deepEqual(
      refused,
      Object.keys(BAD_ROWS).map((n) => `enc-${n.padStart(4, '0')}`),
    );
    const ps = await risk(
      valid.map((v) => Object.fromEntries(FEATURES.map((f, i) => [f, v[i] as number])) as Discharge),
    );
    const flagged = ps.filter((p) => p >= THRESHOLD).length / ps.length;
    assert.ok(flagged > 0.1 && flagged < 0.5, `${(flagged * 100).toFixed(0)}% flagged for outreach`);
  });
});
