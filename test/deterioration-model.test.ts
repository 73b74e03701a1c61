/**
 * The deterioration logistic-regression graphs (versions 1 and 2): shape, range, monotonicity, the two versions
 * disagreeing, and the manifest sha256 matching a deterministic rebuild.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import YAML from 'yaml';
import { buildAll } from '../models/build.ts';
import { VERSIONS } from '../models/deterioration/graph.ts';

const MODEL_DIR = fileURLToPath(new URL('../models/deterioration/', import.meta.url));
const FEATURES = ['age', 'respirationRate', 'spo2', 'systolicBP', 'pulse', 'temperature', 'onOxygen'] as const;
type Patient = Record<(typeof FEATURES)[number], number>;
const TYPICAL: Patient = {
  age: 70,
  respirationRate: 18,
  spo2: 95,
  systolicBP: 125,
  pulse: 85,
  temperature: 37.2,
  onOxygen: 0,
};
const LOWEST: Patient = {
  age: 16,
  respirationRate: 0,
  spo2: 50,
  systolicBP: 40,
  pulse: 20,
  temperature: 25,
  onOxygen: 0,
};
const HIGHEST: Patient = {
  age: 120,
  respirationRate: 80,
  spo2: 100,
  systolicBP: 300,
  pulse: 250,
  temperature: 45,
  onOxygen: 1,
};
const SICK: Patient = {
  age: 85,
  respirationRate: 30,
  spo2: 88,
  systolicBP: 85,
  pulse: 130,
  temperature: 39.5,
  onOxygen: 1,
};
const WELL: Patient = {
  age: 25,
  respirationRate: 14,
  spo2: 99,
  systolicBP: 135,
  pulse: 65,
  temperature: 36.8,
  onOxygen: 0,
};

const sessions: Record<string, ort.InferenceSession> = {};
async function risk(version: string, patients: readonly Patient[]): Promise<number[]> {
  const session = sessions[version];
  assert.ok(session, `no session for v${version}`);
  const data = Float32Array.from(patients.flatMap((p) => FEATURES.map((f) => p[f])));
  const out = await session.run({ features: new ort.Tensor('float32', data, [patients.length, FEATURES.length]) });
  assert.deepEqual(out.probability?.dims, [patients.length]);
  return Array.from(out.probability?.data as Float32Array);
}
const vary = (key: keyof Patient, values: number[]): Patient[] => values.map((v) => ({ ...TYPICAL, [key]: v }));
const range = (from: number, to: number, step = 1) =>
  Array.from({ length: Math.floor((to - from) / step) + 1 }, (_, i) => from + i * step);

function assertIncreasing(xs: number[], what: string): void {
  for (let i = 1; i < xs.length; i++) {
    assert.ok((xs[i] as number) > (xs[i - 1] as number), `${what}: ${xs[i - 1]} then ${xs[i]} at step ${i}`);
  }
}

before(async () => {
  for (const v of ['1', '2']) sessions[v] = await ort.InferenceSession.create(`${MODEL_DIR}${v}/model.onnx`);
});

for (const version of ['1', '2']) {
  describe(`deterioration v${version}`, () => {
    test('one input `features` [N, 7], one output `probability` [N], strictly inside (0, 1)', async () => {
      const session = sessions[version];
      assert.deepEqual(session?.inputNames, ['features']);
      assert.deepEqual(session?.outputNames, ['probability']);
      const ps = await risk(version, [TYPICAL, LOWEST, HIGHEST, SICK, WELL]);
      for (const p of ps) assert.ok(p > 0 && p < 1, `probability ${p}`);
    });

    test('a sick patient scores above the threshold 0.3, a well one below', async () => {
      const [sick, well] = await risk(version, [SICK, WELL]);
      assert.ok((sick as number) > 0.3, `sick ${sick}`);
      assert.ok((well as number) < 0.3, `well ${well}`);
    });

    test('risk rises with RR, pulse, age, temperature and oxygen, and as SpO2 or systolic BP falls', async () => {
      assertIncreasing(await risk(version, vary('respirationRate', range(4, 40))), 'respirationRate');
      assertIncreasing(await risk(version, vary('pulse', range(30, 180, 5))), 'pulse');
      assertIncreasing(await risk(version, vary('age', range(16, 110, 2))), 'age');
      assertIncreasing(await risk(version, vary('temperature', range(35, 41, 0.5))), 'temperature');
      assertIncreasing(await risk(version, vary('onOxygen', [0, 1])), 'onOxygen');
      assertIncreasing(await risk(version, vary('spo2', range(100, 70, -1))), 'spo2 falling');
      assertIncreasing(await risk(version, vary('systolicBP', range(200, 60, -5))), 'systolicBP falling');
    });

    test('the graph computes sigmoid(((x - mean) / std) . w + b) with the weights of graph.ts', async () => {
      const lr = VERSIONS[version];
      assert.ok(lr);
      const patients = [TYPICAL, SICK, WELL, LOWEST];
      const got = await risk(version, patients);
      patients.forEach((p, i) => {
        const z = FEATURES.reduce((acc, f) => {
          const k = lr.coefficients[f];
          assert.ok(k);
          return acc + ((p[f] - k.mean) / k.std) * k.weight;
        }, lr.bias);
        assert.ok(Math.abs((got[i] as number) - 1 / (1 + Math.exp(-z))) < 1e-5, `patient ${i}`);
      });
    });

    test('a batch gives the single-row results', async () => {
      const patients = [TYPICAL, SICK, WELL, LOWEST, HIGHEST, ...vary('respirationRate', range(5, 35, 3))];
      const batch = await risk(version, patients);
      const singles = await Promise.all(patients.map(async (p) => (await risk(version, [p]))[0]));
      assert.deepEqual(batch, singles);
    });
  });
}

describe('deterioration versions', () => {
  test('v1 and v2 differ measurably', async () => {
    const patients = [TYPICAL, SICK, WELL];
    const [v1, v2] = [await risk('1', patients), await risk('2', patients)];
    const maxDiff = Math.max(...v1.map((p, i) => Math.abs(p - (v2[i] as number))));
    assert.ok(maxDiff > 0.01, `largest difference ${maxDiff}`);
    assert.ok(Math.abs((v1[0] as number) - (v2[0] as number)) > 0.001, 'typical patient');
  });
});

describe('deterioration manifest and build', () => {
  const manifest = YAML.parse(readFileSync(`${MODEL_DIR}model.yaml`, 'utf8'));

  test('features in the column order the tests use; v1 primary; both versions carry evidence', () => {
    assert.deepEqual(
      manifest.features.map((f: { name: string }) => f.name),
      FEATURES,
    );
    assert.deepEqual(
      manifest.versions.map((v: { version: string }) => v.version),
      ['1', '2'],
    );
    assert.equal(manifest.routing.primary, '1');
    for (const v of manifest.versions) assert.ok(v.evidence, `v${v.version} evidence`);
    assert.match(manifest.disclaimer, /illustrative/i);
    assert.match(manifest.disclaimer, /not clinically validated/i);
  });

  test('each manifest sha256 is its file sha256, and a rebuild gives the same bytes', () => {
    const rebuilt = buildAll().filter((a) => a.model === 'deterioration');
    assert.equal(rebuilt.length, 2);
    for (const v of manifest.versions) {
      const file = readFileSync(`${MODEL_DIR}${v.runtime.path}`);
      assert.equal(v.runtime.sha256, createHash('sha256').update(file).digest('hex'), `v${v.version}`);
      const again = rebuilt.find((a) => a.version === v.version);
      assert.ok(again && Buffer.from(again.bytes).equals(file), `v${v.version} is stale: npm run models:build`);
    }
  });
});
