/**
 * The batch tier's per-row fast paths must give what the general paths give, byte for byte: an NDJSON line encoded in
 * place (encodeLine: parsed, the id read where it is, no copy of the values without it) against ndjsonRow +
 * encodeRow, and the prediction templates (predictionWriter) against JSON.stringify, on every bundled model's
 * features and outputs and on random and hostile lines and tensors. A line encodeLine refuses is read by the general
 * path, which reports it: a bad row is never lost.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { mulberry32 } from '../models/prng.ts';
import { encodeLine } from '../src/batch/chunk.ts';
import { ByteLines } from '../src/batch/line-bytes.ts';
import { ndjsonRow } from '../src/batch/readers.ts';
import { loadModels } from '../src/registry/load.ts';
import { type Feature, featureSchema, type OutputSpec, outputSchema } from '../src/registry/schema.ts';
import { encodeRow } from '../src/serving/features.ts';
import { type Prediction, predictionWriter, shapePredictions } from '../src/serving/predictions.ts';
import { MODELS_DIR } from './support/models.ts';

const models = await loadModels(MODELS_DIR, 60_000);

const mixed: Feature[] = [
  { name: 'pulse', type: 'integer', min: 20, max: 250, required: true },
  { name: 'temperature', type: 'number', min: -5, max: 45.5, required: true },
  { name: 'onOxygen', type: 'boolean', required: false, default: false },
  { name: 'consciousness', type: 'enum', values: ['alert', 'voice', 'pain'], required: false, default: 'alert' },
  { name: 'ratio', type: 'number', min: -1, max: 1, required: false, default: 0.25 },
  { name: 'id', type: 'integer', min: 0, max: 10, required: false, default: 3 },
].map((f) => featureSchema.parse(f));

const featureSets: Array<[string, readonly Feature[]]> = [
  ['mixed', mixed],
  ...models
    .filter((m) => m.manifest.features.length > 0)
    .map((m): [string, readonly Feature[]] => [m.manifest.name, m.manifest.features]),
];

/** The general path's reading of a line: its id and encoded values, or undefined for a row it reports as bad. */
function general(features: readonly Feature[], text: string, line: number) {
  const row = ndjsonRow(text, line);
  if (row.error) return undefined;
  const out = new Float32Array(features.length);
  const assumed = { rows: 0 };
  if (encodeRow(features, row.values, out, 0, '', assumed)) return undefined;
  return { id: row.id, bytes: Buffer.from(out.buffer), assumed: assumed.rows === 1 };
}

/** encodeLine's reading of the same line, checked against the general one; true when it took the line. */
function agrees(features: readonly Feature[], text: string): boolean {
  const line = 7;
  const out = new Float32Array(features.length + 2).fill(Number.NaN);
  const assumed = { rows: 0 };
  const id = encodeLine(features, { text, line }, out, 1, assumed);
  const expected = general(features, text, line);
  // refused: exactly the lines the general path reports as bad rows
  assert.equal(id === undefined, expected === undefined, text);
  if (id === undefined || !expected) return false;
  assert.equal(id, expected.id, text);
  assert.deepEqual(Buffer.from(out.buffer, 4, features.length * 4), expected.bytes, text);
  assert.equal(assumed.rows === 1, expected.assumed, text);
  // nothing written outside its row
  assert.ok(Number.isNaN(out[0]) && Number.isNaN(out[features.length + 1]), text);
  return true;
}

const space = (random: () => number) => (random() < 0.85 ? '' : [' ', '\t', '  ', ' \t '][Math.floor(random() * 4)]);

function numberText(random: () => number, f: Feature | undefined): string {
  const pick = random();
  const lo = f && (f.type === 'number' || f.type === 'integer') ? f.min : -100;
  const hi = f && (f.type === 'number' || f.type === 'integer') ? f.max : 100;
  if (pick < 0.4) return String(Math.round(lo + random() * (hi - lo)));
  if (pick < 0.6)
    return String(
      Math.round((lo + random() * (hi - lo)) * 10 ** Math.floor(random() * 8)) / 10 ** Math.floor(random() * 8),
    );
  const odd = [
    '-0',
    '0',
    '0.0',
    '-0.0',
    '00',
    '01',
    '1.',
    '.5',
    '-',
    '1e2',
    '1E-2',
    '2.5e0',
    '+1',
    '0.30000000000000004',
    '123456789012345',
    '1234567890123456',
    '9007199254740993',
    '0.1000000000000000055511151231257827',
    '1.50',
    '45.5',
    '45.50001',
    '-5',
    '-5.0000001',
    '250',
    '251',
    '19.999999',
    '20.0',
    '1-2',
    '1.2.3',
    'NaN',
    'Infinity',
    '-Infinity',
  ];
  return odd[Math.floor(random() * odd.length)] as string;
}

function stringText(random: () => number, f: Feature | undefined): string {
  const pick = random();
  if (f?.type === 'enum' && pick < 0.6) return JSON.stringify(f.values[Math.floor(random() * f.values.length)]);
  const odd = [
    '""',
    '"a"',
    '"alert "',
    '"Alert"',
    '"al\\u0065rt"',
    '"\\"q\\""',
    '"é—💡"',
    '"tab\there"',
    '"x',
    '"\\ud800"',
    `"${'x'.repeat(256)}"`,
    `"${'x'.repeat(257)}"`,
    '"voice"',
    '"pain"',
    '"12"',
  ];
  return odd[Math.floor(random() * odd.length)] as string;
}

function valueText(random: () => number, f: Feature | undefined): string {
  const pick = random();
  if (f?.type === 'boolean' ? pick < 0.6 : pick < 0.05) return random() < 0.5 ? 'true' : 'false';
  if (pick < 0.65) return f?.type === 'enum' ? stringText(random, f) : numberText(random, f);
  if (pick < 0.8) return stringText(random, f);
  if (pick < 0.88) return 'null';
  const odd = ['{}', '[]', '{"x":1}', '[1]', 'nul', 'tru', 'falsey', 'undefined', ''];
  return odd[Math.floor(random() * odd.length)] as string;
}

/** A valid value for a feature, as a file would hold it. */
function validText(random: () => number, f: Feature): string {
  switch (f.type) {
    case 'boolean':
      return random() < 0.5 ? 'true' : 'false';
    case 'enum':
      return JSON.stringify(f.values[Math.floor(random() * f.values.length)]);
    case 'integer':
      return String(Math.ceil(f.min) + Math.floor(random() * (Math.floor(f.max) - Math.ceil(f.min) + 1)));
    case 'number': {
      const places = Math.floor(random() * 6);
      const v = Math.round((f.min + random() * (f.max - f.min)) * 10 ** places) / 10 ** places;
      return String(Math.min(f.max, Math.max(f.min, v)));
    }
  }
}

/** A random line: mostly rows the encoder should take, with every way of being odd or wrong mixed in. */
function randomLine(random: () => number, features: readonly Feature[]): string {
  if (random() < 0.6) {
    // an ordinary row: an id, the required features and some of the others, valid values
    const parts = [`"id":"row-${Math.floor(random() * 1e6)}"`];
    for (const f of features)
      if (f.required || random() < 0.5) parts.push(`${JSON.stringify(f.name)}:${validText(random, f)}`);
    return `{${parts.join(',')}}`;
  }
  const keys: Array<[string, Feature | undefined]> = [];
  if (random() < 0.9) keys.push(['id', undefined]);
  for (const f of features) if (random() < (f.required ? 0.97 : 0.6)) keys.push([f.name, f]);
  if (random() < 0.05) keys.push(['unknown', undefined]);
  if (random() < 0.03) keys.push(['__proto__', undefined]);
  if (random() < 0.05 && keys.length > 0) keys.push(keys[Math.floor(random() * keys.length)] as [string, Feature]);
  if (random() < 0.2) keys.sort(() => random() - 0.5);
  const parts = keys.map(([k, f]) => {
    const key = random() < 0.02 ? JSON.stringify(k).replace('i', '\\u0069') : JSON.stringify(k);
    let value: string;
    if (k === 'id' && !f) {
      const ids = [
        `"row-${Math.floor(random() * 1e6)}"`,
        String(Math.floor(random() * 1000)),
        '12.5',
        '-0',
        'null',
        'true',
        '""',
        '{"a":1}',
      ];
      value = random() < 0.8 ? (ids[0] as string) : (ids[Math.floor(random() * ids.length)] as string);
    } else value = valueText(random, f);
    return `${space(random)}${key}${space(random)}:${space(random)}${value}${space(random)}`;
  });
  let text = `${space(random)}{${parts.join(',')}}${space(random)}`;
  const damage = random();
  if (damage < 0.02) text = text.slice(0, Math.floor(random() * text.length));
  else if (damage < 0.03) text += ' x';
  else if (damage < 0.04) text = text.replace(',', ',,');
  else if (damage < 0.05) text = `[${text}]`;
  return text;
}

describe('NDJSON lines encoded in place', () => {
  for (const [name, features] of featureSets) {
    test(`${name}: every line it takes reads as JSON.parse + encodeRow read it; the ordinary rows are taken`, () => {
      const random = mulberry32(name.length * 7919);
      let taken = 0;
      const cases = 20_000;
      for (let i = 0; i < cases; i++) if (agrees(features, randomLine(random, features))) taken++;
      // most generated lines are plain valid rows: the fast path must actually take them
      assert.ok(taken > cases * 0.2, `${name}: only ${taken} of ${cases} lines taken`);
    });
  }

  test('plain rows are taken, and rows the general path reports as bad are not', () => {
    const out = new Float32Array(mixed.length);
    const assumed = { rows: 0 };
    const take = (text: string) => encodeLine(mixed, { text, line: 3 }, out, 0, assumed);
    assert.equal(take('{"id":"a","pulse":80,"temperature":37.5}'), 'a');
    assert.deepEqual([...out], [80, 37.5, 0, 0, 0.25, 3]);
    assert.equal(assumed.rows, 1);
    // `id` twice: JSON.parse's last one wins
    assert.equal(
      take(' { "temperature" : -0.5 , "pulse":21,"onOxygen":true,"consciousness":"pain","ratio":-1,"id":"x","id":1 } '),
      '1',
    );
    // the feature named `id` is never read from the row: its default is assumed
    assert.equal(
      take('{"temperature":-0.5,"pulse":21,"onOxygen":true,"consciousness":"pain","ratio":-1,"id":17}'),
      '17',
    );
    assert.equal(out[5], 3);
    assert.equal(assumed.rows, 3);
    assert.equal(take('{"pulse":21,"temperature":40}'), 'line-3');
    for (const bad of [
      '{"id":"a","temperature":37.5}', // pulse required
      '{"id":"a","pulse":19,"temperature":37.5}', // out of range
      '{"id":"a","pulse":80.5,"temperature":37.5}', // not an integer
      '{"id":"a","pulse":"80","temperature":37.5}', // a string
      '{"id":"a","pulse":80,"temperature":37.5,"extra":1}', // unknown feature
      '{"id":"a","pulse":80,"temperature":37.5,"consciousness":"asleep"}', // not one of the values
      '{"id":"a","pulse":80,"temperature":37.5', // not JSON
      '{"id":"a","pulse":80,"temperature":37.5}}',
      '{"id":"a","pulse":80,"temperature":null}', // required
    ]) {
      assert.equal(take(bad), undefined, bad);
      assert.equal(general(mixed, bad, 1), undefined, bad);
    }
  });
});

describe('prediction templates', () => {
  /** random output tensors for a spec, with the values a model can give: NaN, infinities, -0, huge, tiny */
  function tensorsFor(output: OutputSpec, rows: number, random: () => number) {
    const value = () => {
      const pick = random();
      if (pick < 0.35) return random() * 20 - 2;
      if (pick < 0.7) return Math.floor(random() * 2000) - 1000;
      const odd = [
        Number.NaN,
        Number.POSITIVE_INFINITY,
        Number.NEGATIVE_INFINITY,
        -0,
        0,
        1e-7,
        3.4e38,
        -3.4e38,
        0.5,
        1,
        2,
        99,
      ];
      return odd[Math.floor(random() * odd.length)] as number;
    };
    const tensor = (width: number) => {
      const data = new Float32Array(rows * width);
      for (let i = 0; i < data.length; i++) data[i] = value();
      return { data, dims: [rows, width] };
    };
    const tensors: Record<string, { data: Float32Array; dims: number[] }> = {};
    if (output.kind === 'score') {
      tensors[output.scoreTensor] = tensor(1);
      for (const e of output.extras) tensors[e.tensor] = tensor(e.kind === 'vector' ? e.names.length : 1);
    }
    return tensors;
  }

  const specs: Array<[string, OutputSpec]> = [
    ...models.map((m): [string, OutputSpec] => [m.manifest.name, m.manifest.output]),
    [
      'odd names',
      outputSchema.parse({
        scoreTensor: 's',
        scoreName: 'risk "q" \u2028',
        threshold: 0.5,
        labels: { positive: 'hi\n"there"', negative: 'lo\\' },
        extras: [
          { tensor: 'v', as: 'sub\tscores', kind: 'vector', names: ['a"b', 'é', '💡', '-1'] },
          { tensor: 'l', as: 'band', kind: 'label', labels: ['x', 'y\u0000', '\ud800'] },
        ],
      }),
    ],
    [
      'index-like keys (stringified, in the order an object keeps)',
      outputSchema.parse({
        scoreTensor: 's',
        scoreName: 'score',
        threshold: 1,
        labels: { positive: 'p', negative: 'n' },
        extras: [{ tensor: 'v', as: 'sub', kind: 'vector', names: ['b', '1', '0'] }],
      }),
    ],
    [
      'a key used twice',
      outputSchema.parse({
        scoreTensor: 's',
        scoreName: 'verdict',
        threshold: 1,
        labels: { positive: 'p', negative: 'n' },
      }),
    ],
  ];
  for (const [name, output] of specs) {
    test(`${name}: the same bytes as JSON.stringify`, () => {
      const random = mulberry32(name.length * 104729);
      const rows = 2000;
      const tensors = tensorsFor(output, rows, random);
      const write = predictionWriter(output);
      const bytesOf = (p: Prediction) => {
        const out = new ByteLines(0);
        write(out, p);
        return out.bytes();
      };
      if (output.kind !== 'score') {
        // classification and retrieval are stringified: still the same function, checked on a made-up prediction
        const p = { category: 'a"b\ud800é', confidence: 0.5, probabilities: { a: 0.5 } };
        assert.deepEqual(bytesOf(p), Buffer.from(JSON.stringify(p)));
        return;
      }
      // one prediction at a time, and all of them in one growing buffer (as a chunk writes them)
      const all = new ByteLines(16);
      const expected: Buffer[] = [];
      for (const p of shapePredictions(output, tensors, rows)) {
        const json = Buffer.from(JSON.stringify(p));
        assert.deepEqual(bytesOf(p), json, JSON.stringify(p));
        write(all, p);
        expected.push(json);
      }
      assert.deepEqual(all.bytes(), Buffer.concat(expected));
    });
  }
});

describe('output lines as bytes', () => {
  test('a JSON string or number is written as Buffer.from(JSON.stringify(v)) writes it, whatever it holds', () => {
    const ids = [
      'row-1',
      '',
      'a"b',
      'back\\slash',
      'tab\t',
      '\u0000\u001f',
      '\u007f',
      'é',
      '—',
      '💡',
      '\ud800',
      'x\udc00y',
      `${'x'.repeat(300)}é`,
      '\u2028',
      '</script>',
    ];
    const numbers = [
      0,
      -0,
      1,
      9,
      10,
      11,
      99,
      100,
      101,
      -1,
      -9,
      -10,
      123456789,
      999999999999999,
      -999999999999999,
      1e15,
      -1e15,
      1e21,
      0.1,
      -0.5,
      1e-7,
      2 ** 53,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      Number.MAX_VALUE,
    ];
    for (const n of numbers) {
      const one = new ByteLines(0);
      one.number(n);
      assert.equal(one.bytes().toString(), JSON.stringify(n), String(n));
    }
    const out = new ByteLines(4);
    for (const id of ids) {
      const one = new ByteLines(0);
      one.jsonString(id);
      assert.deepEqual(one.bytes(), Buffer.from(JSON.stringify(id)), id);
      out.jsonString(id);
      out.ascii(',');
      out.text(id);
      out.raw(Buffer.from('\n'));
    }
    assert.deepEqual(out.bytes(), Buffer.from(ids.map((id) => `${JSON.stringify(id)},${id}\n`).join('')));
  });
});
