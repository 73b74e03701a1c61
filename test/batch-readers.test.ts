/**
 * The batch input readers on small inline inputs: NDJSON rows, CSV (typed by the model's features), and FHIR NDJSON
 * Observations grouped per patient (latest value in the look-back window, components, units, rounding, order).
 * A bad line is always a bad row, never an exception that would fail the run.
 */
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { type InputRow, readCsv, readFhir, readNdjson, readNdjsonBatches } from '../src/batch/readers.ts';
import { type Feature, featureSchema } from '../src/registry/schema.ts';

/** A stream of `text` cut into pieces of `size` characters (so lines straddle chunk boundaries). */
function streamOf(text: string, size = 7): Readable {
  const parts: string[] = [];
  for (let i = 0; i < text.length; i += size) parts.push(text.slice(i, i + size));
  return Readable.from(parts.map((p) => Buffer.from(p)));
}

async function collect(rows: AsyncGenerator<InputRow>): Promise<InputRow[]> {
  const out: InputRow[] = [];
  for await (const r of rows) out.push(r);
  return out;
}

const features: Feature[] = [
  { name: 'pulse', type: 'integer', unit: 'beats/min', loinc: '8867-4', min: 20, max: 250 },
  { name: 'systolicBP', type: 'integer', unit: 'mmHg', loinc: '8480-6', min: 40, max: 300 },
  { name: 'temperature', type: 'number', unit: 'Cel', loinc: '8310-5', min: 25, max: 45 },
  { name: 'spo2', type: 'integer', unit: '%', loinc: '59408-5', min: 50, max: 100 },
  { name: 'onOxygen', type: 'boolean', required: false, default: false },
  { name: 'consciousness', type: 'enum', values: ['alert', 'voice'], required: false, default: 'alert' },
].map((f) => featureSchema.parse(f));

describe('readNdjson', () => {
  test('rows keep their id apart from their values, in file order; blank lines are skipped but counted', async () => {
    const text = [
      '{"id":"a","pulse":80,"onOxygen":false}',
      '',
      '{"id":17,"pulse":81}\r',
      '   ',
      '{"pulse":82}',
      '{"id":"b","nested":{"x":1}}',
    ].join('\n');
    const rows = await collect(readNdjson(streamOf(text)));
    assert.deepEqual(rows, [
      { id: 'a', values: { pulse: 80, onOxygen: false } },
      { id: '17', values: { pulse: 81 } },
      { id: 'line-5', values: { pulse: 82 } },
      { id: 'b', values: { nested: { x: 1 } } },
    ]);
  });

  test('a bad line is a bad row named by its line number, and reading goes on', async () => {
    const text = [
      '{"id":"ok-1","pulse":80}',
      '{"id":"broken",',
      '[1,2,3]',
      'null',
      '42',
      '{"id":"","pulse":1}',
      `{"id":"${'x'.repeat(300)}","pulse":2}`,
      '{"id":{"nested":true},"pulse":3}',
      '{"id":"ok-2","pulse":81}',
    ].join('\n');
    const rows = await collect(readNdjson(streamOf(text, 5)));
    assert.deepEqual(
      rows.map((r) => [r.id, r.error ?? 'ok']),
      [
        ['ok-1', 'ok'],
        ['line-2', 'not valid JSON'],
        ['line-3', 'not a JSON object'],
        ['line-4', 'not a JSON object'],
        ['line-5', 'not a JSON object'],
        ['line-6', 'ok'], // an empty id is no id
        ['line-7', 'ok'], // an id over 256 characters is not used
        ['line-8', 'ok'], // nor an object
        ['ok-2', 'ok'],
      ],
    );
  });

  test('a line over 1 MiB is a bad row, not a failed read', async () => {
    const big = `{"id":"big","pad":"${'y'.repeat(1024 * 1024 + 10)}"}`;
    const rows = await collect(readNdjson(Readable.from([`${big}\n{"id":"after"}\n`])));
    assert.deepEqual(rows, [
      { id: 'line-1', error: 'line longer than 1 MiB' },
      { id: 'after', values: {} },
    ]);
  });
});

describe('readNdjsonBatches', () => {
  /** the rows readline's lines make (what readNdjson read before it split lines itself), numbered as it numbers them */
  async function byReadline(pieces: Buffer[]): Promise<InputRow[]> {
    const rows: InputRow[] = [];
    let line = 0;
    for await (const text of createInterface({ input: Readable.from(pieces), crlfDelay: Number.POSITIVE_INFINITY })) {
      line++;
      if (text.trim() === '') continue;
      try {
        const { id, ...values } = JSON.parse(text);
        rows.push({
          id: typeof id === 'string' && id ? id : typeof id === 'number' ? String(id) : `line-${line}`,
          values,
        });
      } catch {
        rows.push({ id: `line-${line}`, error: 'not valid JSON' });
      }
    }
    return rows;
  }

  test('lines end where readline ends them, however the bytes are cut (CR, CRLF across pieces, UTF-8 across pieces)', async () => {
    const text = Buffer.from(
      [
        '{"id":"a","v":1}\r\n',
        '{"id":"b","v":"é—💡"}\r',
        '{"id":"c","v":3}\n\n',
        '\r\n',
        '{"v":5}\r\r',
        '{"id":"d","v":6}\n',
        '{"id":"crlf then a blank line"}\r\n\n',
        'not json\n',
        '   \n',
        '{"id":"e","v":"last, no line end"}',
      ].join(''),
    );
    // every cut of the bytes into pieces of 1 to 9 (a CRLF and a 4-byte character land on both sides of a cut)
    for (let size = 1; size <= 9; size++) {
      const pieces: Buffer[] = [];
      for (let i = 0; i < text.length; i += size) pieces.push(text.subarray(i, i + size));
      const rows: InputRow[] = [];
      for await (const batch of readNdjsonBatches(Readable.from(pieces))) rows.push(...batch);
      assert.deepEqual(rows, await byReadline(pieces), `pieces of ${size} bytes`);
    }
  });

  test('the rows of a piece come together, not one by one', async () => {
    const lines = Array.from({ length: 50 }, (_, i) => `{"id":"r${i}","pulse":${60 + i}}\n`).join('');
    const batches: InputRow[][] = [];
    for await (const batch of readNdjsonBatches(Readable.from([Buffer.from(lines)]))) batches.push(batch);
    assert.equal(batches.length, 1);
    assert.equal(batches[0]?.length, 50);
  });
});

describe('readCsv', () => {
  test('a header names the columns; cells are typed by the features; booleans true/false (and yes/no, 1/0)', async () => {
    const text = [
      '\uFEFFid,pulse,temperature,onOxygen,consciousness',
      'p1,80,37.25,true,alert',
      'p2, 91 ,36.1e0,FALSE,voice',
      '"p,3",70,38,yes,alert',
      'p4,75,37,0,alert',
      'p5,,37,no,',
      '"p""6",fast,warm,maybe,alert',
    ].join('\r\n');
    const rows = await collect(readCsv(streamOf(text), features));
    assert.deepEqual(rows, [
      { id: 'p1', values: { pulse: 80, temperature: 37.25, onOxygen: true, consciousness: 'alert' } },
      { id: 'p2', values: { pulse: 91, temperature: 36.1, onOxygen: false, consciousness: 'voice' } },
      { id: 'p,3', values: { pulse: 70, temperature: 38, onOxygen: true, consciousness: 'alert' } },
      { id: 'p4', values: { pulse: 75, temperature: 37, onOxygen: false, consciousness: 'alert' } },
      // an empty cell is an absent value (its default applies, or it is reported missing)
      { id: 'p5', values: { temperature: 37, onOxygen: false } },
      // cells that are not of the feature's type stay strings, for validation to refuse by name
      { id: 'p"6', values: { pulse: 'fast', temperature: 'warm', onOxygen: 'maybe', consciousness: 'alert' } },
    ]);
  });

  test('a row with the wrong number of cells is a bad row named by its line; an unknown column is kept', async () => {
    const text = 'id,pulse,extra\na,80,x\n\nb,81\nc,82,y,z\nd,83,w\n';
    const rows = await collect(readCsv(streamOf(text), features));
    assert.deepEqual(rows, [
      { id: 'a', values: { pulse: 80, extra: 'x' } },
      { id: 'line-4', error: 'expected 3 cells, got 2' },
      { id: 'line-5', error: 'expected 3 cells, got 4' },
      { id: 'd', values: { pulse: 83, extra: 'w' } },
    ]);
  });

  test('without an id column, rows are named by their line', async () => {
    const rows = await collect(readCsv(streamOf('pulse,onOxygen\n80,true\n81,false\n'), features));
    assert.deepEqual(rows, [
      { id: 'line-2', values: { pulse: 80, onOxygen: true } },
      { id: 'line-3', values: { pulse: 81, onOxygen: false } },
    ]);
  });

  test('malformed quoting in one row is a bad row: the rows after it are still read', async () => {
    const text = [
      'id,pulse,onOxygen',
      'q1,80,true',
      'q2,81,"tr"ue',
      'q3,82,false',
      'q4,8"3,false',
      'q5,84,"false',
      'q6,85,true',
    ].join('\n');
    const rows = await collect(readCsv(streamOf(text), features));
    assert.deepEqual(
      rows.map((r) => [r.id, r.error === undefined ? 'ok' : 'bad']),
      [
        ['q1', 'ok'],
        ['line-3', 'bad'],
        ['q3', 'ok'],
        ['line-5', 'bad'],
        ['line-6', 'bad'],
        ['q6', 'ok'],
      ],
    );
  });
});

/** Rows of a FHIR input read with `names` of the features above (each one's legacy `loinc` mapping). */
async function fhirRows(text: string, names: string[], window: { asOf: number; lookbackHours: number }, size = 7) {
  const picked = features.filter((f) => names.includes(f.name));
  const rows = await collect(readFhir([{ name: 'in.ndjson', stream: streamOf(text, size) }], picked, window));
  return rows.map((r) => (r.error ? { id: r.id, error: r.error } : { id: r.id, values: r.values }));
}

describe('readFhir', () => {
  const asOf = Date.parse('2020-03-04T00:00:00Z');
  const window = { asOf, lookbackHours: 24 };
  const hoursBefore = (h: number) => new Date(asOf - h * 3600_000).toISOString();

  function obs(
    patient: string,
    code: string | string[],
    value: number,
    at: string,
    unit = '/min',
    extra: Record<string, unknown> = {},
  ): string {
    const codes = Array.isArray(code) ? code : [code];
    return JSON.stringify({
      resourceType: 'Observation',
      status: 'final',
      code: { coding: codes.map((c) => ({ system: 'http://loinc.org', code: c })) },
      subject: { reference: patient },
      effectiveDateTime: at,
      valueQuantity: { value, unit, system: 'http://unitsofmeasure.org', code: unit },
      ...extra,
    });
  }

  function bp(patient: string, systolic: number, diastolic: number, at: string): string {
    const component = (code: string, value: number) => ({
      code: { coding: [{ system: 'http://loinc.org', code }] },
      valueQuantity: { value, unit: 'mm[Hg]', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
    });
    return JSON.stringify({
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '85354-9' }] },
      subject: { reference: patient },
      effectiveDateTime: at,
      component: [component('8480-6', systolic), component('8462-4', diastolic)],
    });
  }

  test('per patient, each feature is its latest value inside (asOf - lookback, asOf]', async () => {
    const lines = [
      obs('Patient/a', '8867-4', 70, hoursBefore(24)), // exactly at the window start: outside
      obs('Patient/a', '8867-4', 91, hoursBefore(1)), // latest inside: used
      obs('Patient/a', '8867-4', 80, hoursBefore(5)), // older, later in the file: not used
      obs('Patient/a', '8867-4', 150, hoursBefore(-1)), // after asOf: outside
      obs('Patient/a', '8867-4', 160, hoursBefore(30)), // before the window: outside
      obs('Patient/b', '8867-4', 66, hoursBefore(0)), // exactly at asOf: inside
    ];
    const rows = await fhirRows(lines.join('\n'), ['pulse'], window, 64);
    assert.deepEqual(rows, [
      { id: 'Patient/a', values: { pulse: 91 } },
      { id: 'Patient/b', values: { pulse: 66 } },
    ]);
  });

  test('components (blood-pressure panel), several codes of one feature, units converted, rounding', async () => {
    const lines = [
      JSON.stringify({ resourceType: 'Patient', id: 'z' }),
      bp('Patient/c', 131.6, 80, hoursBefore(2)),
      bp('Patient/c', 150, 90, hoursBefore(10)),
      obs('Patient/c', '2708-6', 93.4, hoursBefore(6), '%'), // arterial SaO2 alone: not SpO2
      obs('Patient/c', ['59408-5', '2708-6'], 95.5, hoursBefore(3), '%'), // the latest of either code
      obs('Patient/c', '8310-5', 37.26, hoursBefore(4), 'Cel'),
      obs('Patient/c', '8310-5', 99.1, hoursBefore(1), '[degF]'), // the latest, converted: 37.2777… Cel
      obs('Patient/c', '8867-4', 87.5, hoursBefore(3)), // integer feature: rounded
      JSON.stringify({
        resourceType: 'Observation',
        code: { coding: [{ system: 'http://snomed.info/sct', code: '8867-4' }] }, // not LOINC
        subject: { reference: 'Patient/c' },
        effectiveDateTime: hoursBefore(0),
        valueQuantity: { value: 200, code: '/min' },
      }),
      obs('Patient/d', '29463-7', 70, hoursBefore(1), 'kg'), // a code no feature uses: d has no data
    ];
    const rows = await fhirRows(lines.join('\n'), ['systolicBP', 'spo2', 'temperature', 'pulse'], window, 50);
    const noData = /^no data: no usable Observation of this model's features in the 24 h look-back window/;
    assert.deepEqual(rows[0], {
      id: 'Patient/c',
      values: { systolicBP: 132, spo2: 96, temperature: 37.2777777778, pulse: 88 },
    });
    assert.deepEqual(
      rows.slice(1).map((r) => [r.id, noData.test(r.error ?? '')]),
      [
        ['Patient/d', true],
        ['Patient/z', true],
      ],
    );
  });

  test('effectivePeriod.end, then issued, stand in for effectiveDateTime', async () => {
    const base = (value: number, extra: Record<string, unknown>) =>
      JSON.stringify({
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
        subject: { reference: 'Patient/e' },
        valueQuantity: { value, code: '/min' },
        ...extra,
      });
    const lines = [
      base(71, { effectivePeriod: { start: hoursBefore(9), end: hoursBefore(2) } }),
      base(72, { issued: hoursBefore(3) }),
      base(73, { effectivePeriod: { start: hoursBefore(2), end: hoursBefore(-2) } }), // ends after asOf
    ];
    const rows = await fhirRows(lines.join('\n'), ['pulse'], window);
    assert.deepEqual(rows, [{ id: 'Patient/e', values: { pulse: 71 } }]);
  });

  test('bad lines are bad rows (before the patients), patients come out sorted', async () => {
    const lines = [
      obs('Patient/z', '8867-4', 70, hoursBefore(1)),
      '{"resourceType":"Observation",',
      JSON.stringify({ resourceType: 'Observation', code: { coding: [] }, effectiveDateTime: hoursBefore(1) }),
      JSON.stringify({ resourceType: 'Observation', subject: { reference: 'Patient/y' }, effectiveDateTime: 'soon' }),
      '',
      obs('Patient/m', '8867-4', 71, hoursBefore(1)),
      obs('Patient/a', '8867-4', 72, hoursBefore(1)),
    ];
    const rows = await fhirRows(lines.join('\n'), ['pulse'], window);
    assert.deepEqual(
      rows.map((r) => [r.id, r.error === undefined ? r.values : 'bad']),
      [
        ['line-2', 'bad'],
        ['line-3', 'bad'],
        ['line-4', 'bad'],
        ['Patient/a', { pulse: 72 }],
        ['Patient/m', { pulse: 71 }],
        ['Patient/z', { pulse: 70 }],
      ],
    );
  });
});
