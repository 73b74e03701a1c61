/**
 * The NEWS2 ONNX graph against cases worked out by hand from RCP NEWS2 Chart 1 (2017): both edges of every band,
 * every ACVPU value, air/oxygen on both SpO2 scales, the rounding of temperature, and the clinical risk bands.
 * Expected numbers are literals, not recomputed from the chart.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import YAML from 'yaml';
import { buildAll } from '../models/build.ts';

const MODEL_DIR = fileURLToPath(new URL('../models/news2/', import.meta.url));
const BANDS = ['low', 'low-medium', 'medium', 'high'] as const;
type Band = (typeof BANDS)[number];

interface Vitals {
  respirationRate: number;
  spo2: number;
  spo2Scale: 1 | 2;
  onOxygen: boolean;
  systolicBP: number;
  pulse: number;
  consciousness: 'alert' | 'confusion' | 'voice' | 'pain' | 'unresponsive';
  temperature: number;
}
/** scores 0 on every parameter */
const NORMAL: Vitals = {
  respirationRate: 16,
  spo2: 97,
  spo2Scale: 1,
  onOxygen: false,
  systolicBP: 120,
  pulse: 70,
  consciousness: 'alert',
  temperature: 37.0,
};
const ACVPU = ['alert', 'confusion', 'voice', 'pain', 'unresponsive'];
const row = (v: Vitals) => [
  v.respirationRate,
  v.spo2,
  v.spo2Scale,
  v.onOxygen ? 1 : 0,
  v.systolicBP,
  v.pulse,
  ACVPU.indexOf(v.consciousness),
  v.temperature,
];

/** subscores: respirationRate, spo2, airOrOxygen, systolicBP, pulse, consciousness, temperature */
type Sub = [number, number, number, number, number, number, number];
interface Case {
  name: string;
  vitals: Partial<Vitals>;
  sub: Sub;
  total: number;
  band: Band;
}
const c = (name: string, vitals: Partial<Vitals>, sub: Sub, total: number, band: Band): Case => ({
  name,
  vitals,
  sub,
  total,
  band,
});
const O2 = { onOxygen: true } as const;
const S2 = { spo2Scale: 2 } as const;

const CASES: Case[] = [
  c('all normal', {}, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  // respiration rate: <=8 3 | 9-11 1 | 12-20 0 | 21-24 2 | >=25 3
  c('RR 0', { respirationRate: 0 }, [3, 0, 0, 0, 0, 0, 0], 3, 'low-medium'),
  c('RR 8', { respirationRate: 8 }, [3, 0, 0, 0, 0, 0, 0], 3, 'low-medium'),
  c('RR 9', { respirationRate: 9 }, [1, 0, 0, 0, 0, 0, 0], 1, 'low'),
  c('RR 11', { respirationRate: 11 }, [1, 0, 0, 0, 0, 0, 0], 1, 'low'),
  c('RR 12', { respirationRate: 12 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('RR 20', { respirationRate: 20 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('RR 21', { respirationRate: 21 }, [2, 0, 0, 0, 0, 0, 0], 2, 'low'),
  c('RR 24', { respirationRate: 24 }, [2, 0, 0, 0, 0, 0, 0], 2, 'low'),
  c('RR 25', { respirationRate: 25 }, [3, 0, 0, 0, 0, 0, 0], 3, 'low-medium'),
  c('RR 80', { respirationRate: 80 }, [3, 0, 0, 0, 0, 0, 0], 3, 'low-medium'),
  // SpO2 scale 1: <=91 3 | 92-93 2 | 94-95 1 | >=96 0
  c('S1 50', { spo2: 50 }, [0, 3, 0, 0, 0, 0, 0], 3, 'low-medium'),
  c('S1 91', { spo2: 91 }, [0, 3, 0, 0, 0, 0, 0], 3, 'low-medium'),
  c('S1 92', { spo2: 92 }, [0, 2, 0, 0, 0, 0, 0], 2, 'low'),
  c('S1 93', { spo2: 93 }, [0, 2, 0, 0, 0, 0, 0], 2, 'low'),
  c('S1 94', { spo2: 94 }, [0, 1, 0, 0, 0, 0, 0], 1, 'low'),
  c('S1 95', { spo2: 95 }, [0, 1, 0, 0, 0, 0, 0], 1, 'low'),
  c('S1 96', { spo2: 96 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('S1 100', { spo2: 100 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  // scale 1 on oxygen: SpO2 bands unchanged, oxygen scores 2
  c('S1 96 on O2', { spo2: 96, ...O2 }, [0, 0, 2, 0, 0, 0, 0], 2, 'low'),
  c('S1 97 on O2', { spo2: 97, ...O2 }, [0, 0, 2, 0, 0, 0, 0], 2, 'low'),
  c('S1 94 on O2', { spo2: 94, ...O2 }, [0, 1, 2, 0, 0, 0, 0], 3, 'low'),
  c('S1 91 on O2', { spo2: 91, ...O2 }, [0, 3, 2, 0, 0, 0, 0], 5, 'medium'),
  // SpO2 scale 2 on air: <=83 3 | 84-85 2 | 86-87 1 | 88-92 0 | >=93 on air 0
  c('S2 83 air', { spo2: 83, ...S2 }, [0, 3, 0, 0, 0, 0, 0], 3, 'low-medium'),
  c('S2 84 air', { spo2: 84, ...S2 }, [0, 2, 0, 0, 0, 0, 0], 2, 'low'),
  c('S2 85 air', { spo2: 85, ...S2 }, [0, 2, 0, 0, 0, 0, 0], 2, 'low'),
  c('S2 86 air', { spo2: 86, ...S2 }, [0, 1, 0, 0, 0, 0, 0], 1, 'low'),
  c('S2 87 air', { spo2: 87, ...S2 }, [0, 1, 0, 0, 0, 0, 0], 1, 'low'),
  c('S2 88 air', { spo2: 88, ...S2 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('S2 92 air', { spo2: 92, ...S2 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('S2 93 air', { spo2: 93, ...S2 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('S2 96 air', { spo2: 96, ...S2 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('S2 97 air', { spo2: 97, ...S2 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('S2 100 air', { spo2: 100, ...S2 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  // scale 2 on oxygen: the low bands as on air; 93-94 1 | 95-96 2 | >=97 3; oxygen scores 2
  c('S2 83 O2', { spo2: 83, ...S2, ...O2 }, [0, 3, 2, 0, 0, 0, 0], 5, 'medium'),
  c('S2 84 O2', { spo2: 84, ...S2, ...O2 }, [0, 2, 2, 0, 0, 0, 0], 4, 'low'),
  c('S2 85 O2', { spo2: 85, ...S2, ...O2 }, [0, 2, 2, 0, 0, 0, 0], 4, 'low'),
  c('S2 86 O2', { spo2: 86, ...S2, ...O2 }, [0, 1, 2, 0, 0, 0, 0], 3, 'low'),
  c('S2 87 O2', { spo2: 87, ...S2, ...O2 }, [0, 1, 2, 0, 0, 0, 0], 3, 'low'),
  c('S2 88 O2', { spo2: 88, ...S2, ...O2 }, [0, 0, 2, 0, 0, 0, 0], 2, 'low'),
  c('S2 92 O2', { spo2: 92, ...S2, ...O2 }, [0, 0, 2, 0, 0, 0, 0], 2, 'low'),
  c('S2 93 O2', { spo2: 93, ...S2, ...O2 }, [0, 1, 2, 0, 0, 0, 0], 3, 'low'),
  c('S2 94 O2', { spo2: 94, ...S2, ...O2 }, [0, 1, 2, 0, 0, 0, 0], 3, 'low'),
  c('S2 95 O2', { spo2: 95, ...S2, ...O2 }, [0, 2, 2, 0, 0, 0, 0], 4, 'low'),
  c('S2 96 O2', { spo2: 96, ...S2, ...O2 }, [0, 2, 2, 0, 0, 0, 0], 4, 'low'),
  c('S2 97 O2', { spo2: 97, ...S2, ...O2 }, [0, 3, 2, 0, 0, 0, 0], 5, 'medium'),
  c('S2 100 O2', { spo2: 100, ...S2, ...O2 }, [0, 3, 2, 0, 0, 0, 0], 5, 'medium'),
  // systolic BP: <=90 3 | 91-100 2 | 101-110 1 | 111-219 0 | >=220 3
  c('BP 40', { systolicBP: 40 }, [0, 0, 0, 3, 0, 0, 0], 3, 'low-medium'),
  c('BP 90', { systolicBP: 90 }, [0, 0, 0, 3, 0, 0, 0], 3, 'low-medium'),
  c('BP 91', { systolicBP: 91 }, [0, 0, 0, 2, 0, 0, 0], 2, 'low'),
  c('BP 100', { systolicBP: 100 }, [0, 0, 0, 2, 0, 0, 0], 2, 'low'),
  c('BP 101', { systolicBP: 101 }, [0, 0, 0, 1, 0, 0, 0], 1, 'low'),
  c('BP 110', { systolicBP: 110 }, [0, 0, 0, 1, 0, 0, 0], 1, 'low'),
  c('BP 111', { systolicBP: 111 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('BP 219', { systolicBP: 219 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('BP 220', { systolicBP: 220 }, [0, 0, 0, 3, 0, 0, 0], 3, 'low-medium'),
  c('BP 300', { systolicBP: 300 }, [0, 0, 0, 3, 0, 0, 0], 3, 'low-medium'),
  // pulse: <=40 3 | 41-50 1 | 51-90 0 | 91-110 1 | 111-130 2 | >=131 3
  c('pulse 20', { pulse: 20 }, [0, 0, 0, 0, 3, 0, 0], 3, 'low-medium'),
  c('pulse 40', { pulse: 40 }, [0, 0, 0, 0, 3, 0, 0], 3, 'low-medium'),
  c('pulse 41', { pulse: 41 }, [0, 0, 0, 0, 1, 0, 0], 1, 'low'),
  c('pulse 50', { pulse: 50 }, [0, 0, 0, 0, 1, 0, 0], 1, 'low'),
  c('pulse 51', { pulse: 51 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('pulse 90', { pulse: 90 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('pulse 91', { pulse: 91 }, [0, 0, 0, 0, 1, 0, 0], 1, 'low'),
  c('pulse 110', { pulse: 110 }, [0, 0, 0, 0, 1, 0, 0], 1, 'low'),
  c('pulse 111', { pulse: 111 }, [0, 0, 0, 0, 2, 0, 0], 2, 'low'),
  c('pulse 130', { pulse: 130 }, [0, 0, 0, 0, 2, 0, 0], 2, 'low'),
  c('pulse 131', { pulse: 131 }, [0, 0, 0, 0, 3, 0, 0], 3, 'low-medium'),
  c('pulse 250', { pulse: 250 }, [0, 0, 0, 0, 3, 0, 0], 3, 'low-medium'),
  // ACVPU: alert 0, anything else 3
  c('alert', { consciousness: 'alert' }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('confusion', { consciousness: 'confusion' }, [0, 0, 0, 0, 0, 3, 0], 3, 'low-medium'),
  c('voice', { consciousness: 'voice' }, [0, 0, 0, 0, 0, 3, 0], 3, 'low-medium'),
  c('pain', { consciousness: 'pain' }, [0, 0, 0, 0, 0, 3, 0], 3, 'low-medium'),
  c('unresponsive', { consciousness: 'unresponsive' }, [0, 0, 0, 0, 0, 3, 0], 3, 'low-medium'),
  // temperature: <=35.0 3 | 35.1-36.0 1 | 36.1-38.0 0 | 38.1-39.0 1 | >=39.1 2
  c('T 25', { temperature: 25 }, [0, 0, 0, 0, 0, 0, 3], 3, 'low-medium'),
  c('T 35.0', { temperature: 35.0 }, [0, 0, 0, 0, 0, 0, 3], 3, 'low-medium'),
  c('T 35.1', { temperature: 35.1 }, [0, 0, 0, 0, 0, 0, 1], 1, 'low'),
  c('T 36.0', { temperature: 36.0 }, [0, 0, 0, 0, 0, 0, 1], 1, 'low'),
  c('T 36.1', { temperature: 36.1 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('T 38.0', { temperature: 38.0 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('T 38.1', { temperature: 38.1 }, [0, 0, 0, 0, 0, 0, 1], 1, 'low'),
  c('T 39.0', { temperature: 39.0 }, [0, 0, 0, 0, 0, 0, 1], 1, 'low'),
  c('T 39.1', { temperature: 39.1 }, [0, 0, 0, 0, 0, 0, 2], 2, 'low'),
  c('T 45', { temperature: 45 }, [0, 0, 0, 0, 0, 0, 2], 2, 'low'),
  // rounded to 0.1 degC before the lookup, half up
  c('T 35.04 -> 35.0', { temperature: 35.04 }, [0, 0, 0, 0, 0, 0, 3], 3, 'low-medium'),
  c('T 35.06 -> 35.1', { temperature: 35.06 }, [0, 0, 0, 0, 0, 0, 1], 1, 'low'),
  c('T 36.04 -> 36.0', { temperature: 36.04 }, [0, 0, 0, 0, 0, 0, 1], 1, 'low'),
  c('T 36.06 -> 36.1', { temperature: 36.06 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('T 38.04 -> 38.0', { temperature: 38.04 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('T 38.06 -> 38.1', { temperature: 38.06 }, [0, 0, 0, 0, 0, 0, 1], 1, 'low'),
  c('T 39.04 -> 39.0', { temperature: 39.04 }, [0, 0, 0, 0, 0, 0, 1], 1, 'low'),
  c('T 39.06 -> 39.1', { temperature: 39.06 }, [0, 0, 0, 0, 0, 0, 2], 2, 'low'),
  // ties round up (ONNX Round would send 36.05 to 36.0 but 35.15 to 35.2)
  c('T 35.05 -> 35.1', { temperature: 35.05 }, [0, 0, 0, 0, 0, 0, 1], 1, 'low'),
  c('T 36.05 -> 36.1', { temperature: 36.05 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('T 38.05 -> 38.1', { temperature: 38.05 }, [0, 0, 0, 0, 0, 0, 1], 1, 'low'),
  c('T 39.05 -> 39.1', { temperature: 39.05 }, [0, 0, 0, 0, 0, 0, 2], 2, 'low'),
  // integer parameters are rounded to whole numbers the same way
  c('RR 20.4 -> 20', { respirationRate: 20.4 }, [0, 0, 0, 0, 0, 0, 0], 0, 'low'),
  c('RR 20.5 -> 21', { respirationRate: 20.5 }, [2, 0, 0, 0, 0, 0, 0], 2, 'low'),
  // clinical risk: >=7 high; 5-6 medium; any single 3 low-medium; else low
  c('total 4, no 3', { respirationRate: 22, pulse: 115 }, [2, 0, 0, 0, 2, 0, 0], 4, 'low'),
  c('total 5', { respirationRate: 22, pulse: 115, temperature: 38.5 }, [2, 0, 0, 0, 2, 0, 1], 5, 'medium'),
  c('total 6', { respirationRate: 22, pulse: 115, temperature: 39.5 }, [2, 0, 0, 0, 2, 0, 2], 6, 'medium'),
  c(
    'total 7, no 3',
    { respirationRate: 22, pulse: 115, temperature: 39.5, systolicBP: 105 },
    [2, 0, 0, 1, 2, 0, 2],
    7,
    'high',
  ),
  c('single 3, total 4', { respirationRate: 7, temperature: 38.5 }, [3, 0, 0, 0, 0, 0, 1], 4, 'low-medium'),
  c('single 3, total 5', { consciousness: 'pain', pulse: 115 }, [0, 0, 0, 0, 2, 3, 0], 5, 'medium'),
  c('two 3s, total 6', { respirationRate: 7, systolicBP: 85 }, [3, 0, 0, 3, 0, 0, 0], 6, 'medium'),
  c(
    'the maximum, 20',
    {
      respirationRate: 5,
      spo2: 85,
      onOxygen: true,
      systolicBP: 80,
      pulse: 140,
      consciousness: 'unresponsive',
      temperature: 34,
    },
    [3, 3, 2, 3, 3, 3, 3],
    20,
    'high',
  ),
];

interface Scored {
  total: number;
  sub: number[];
  band: string;
}

let session: ort.InferenceSession;
async function score(cases: readonly Case[]): Promise<Scored[]> {
  const data = Float32Array.from(cases.flatMap((k) => row({ ...NORMAL, ...k.vitals })));
  const out = await session.run({ features: new ort.Tensor('float32', data, [cases.length, 8]) });
  const total = out.total?.data as Float32Array;
  const sub = out.subscores?.data as Float32Array;
  const band = out.band?.data as Float32Array;
  return cases.map((_, i) => ({
    total: total[i] as number,
    sub: Array.from(sub.subarray(i * 7, i * 7 + 7)),
    band: BANDS[band[i] as number] ?? `?${band[i]}`,
  }));
}

before(async () => {
  session = await ort.InferenceSession.create(`${MODEL_DIR}1/model.onnx`);
});

describe('NEWS2 graph', () => {
  test('one input `features`; outputs total [N], subscores [N, 7], band [N]', async () => {
    assert.deepEqual(session.inputNames, ['features']);
    assert.deepEqual(session.outputNames, ['total', 'subscores', 'band']);
    const data = Float32Array.from([...row(NORMAL), ...row(NORMAL), ...row(NORMAL)]);
    const out = await session.run({ features: new ort.Tensor('float32', data, [3, 8]) });
    assert.deepEqual(out.total?.dims, [3]);
    assert.deepEqual(out.subscores?.dims, [3, 7]);
    assert.deepEqual(out.band?.dims, [3]);
    assert.equal(out.total?.type, 'float32');
  });

  for (const k of CASES) {
    test(k.name, async () => {
      const [got] = await score([k]);
      assert.deepEqual(got, { total: k.total, sub: k.sub, band: k.band });
    });
  }

  test('a batch of every case gives the single-row results', async () => {
    const batch = await score(CASES);
    const singles = await Promise.all(CASES.map(async (k) => (await score([k]))[0]));
    assert.deepEqual(batch, singles);
    assert.deepEqual(
      batch,
      CASES.map((k) => ({ total: k.total, sub: k.sub, band: k.band })),
    );
  });
});

describe('NEWS2 manifest and build', () => {
  const manifest = YAML.parse(readFileSync(`${MODEL_DIR}model.yaml`, 'utf8'));

  test('column order, subscore names and band labels are the ones the graph and these tests assume', () => {
    assert.deepEqual(
      manifest.features.map((f: { name: string }) => f.name),
      ['respirationRate', 'spo2', 'spo2Scale', 'onOxygen', 'systolicBP', 'pulse', 'consciousness', 'temperature'],
    );
    assert.deepEqual(manifest.features[6].values, ACVPU);
    assert.deepEqual(manifest.output.extras[0].names, [
      'respirationRate',
      'spo2',
      'airOrOxygen',
      'systolicBP',
      'pulse',
      'consciousness',
      'temperature',
    ]);
    assert.deepEqual(manifest.output.extras[1].labels, BANDS);
  });

  test('the manifest sha256 is the file sha256, and a rebuild gives the same bytes', () => {
    const file = readFileSync(`${MODEL_DIR}1/model.onnx`);
    assert.equal(manifest.versions[0].runtime.sha256, createHash('sha256').update(file).digest('hex'));
    const rebuilt = buildAll().find((a) => a.model === 'news2' && a.version === '1');
    assert.ok(rebuilt);
    assert.ok(Buffer.from(rebuilt.bytes).equals(file), 'models/news2/1/model.onnx is stale: npm run models:build');
  });
});
