/**
 * The FHIR mapping of manifests, unit by unit: what a manifest may declare, how a subject reference and a birth date
 * are read, and how Observations become one patient's features (codes, units, coded answers, status, assumptions).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FhirAggregator, type PatientRow } from '../src/fhir/observations.ts';
import { ageAt, patientId } from '../src/fhir/references.ts';
import { loadModels } from '../src/registry/load.ts';
import { type Feature, featureSchema } from '../src/registry/schema.ts';
import { MODELS_DIR } from './support/index.ts';

const L = 'http://loinc.org|';
const SCT = 'http://snomed.info/sct|';

describe('the fhir section of a feature', () => {
  const base = { name: 'x', min: 0, max: 300 };
  const refused: Array<[string, unknown, RegExp]> = [
    [
      'a unit UCUM does not know',
      { ...base, type: 'number', fhir: { observations: [{ codes: [`${L}1-1`], unit: 'mmHG' }] } },
      /not a UCUM unit/,
    ],
    [
      'a code without a system',
      { ...base, type: 'number', fhir: { observations: [{ codes: ['8310-5'], unit: 'Cel' }] } },
      /system\|code/,
    ],
    [
      'neither unit nor answers',
      { ...base, type: 'number', fhir: { observations: [{ codes: [`${L}1-1`] }] } },
      /needs a unit/,
    ],
    [
      'a quantity as a boolean without above',
      { name: 'b', type: 'boolean', fhir: { observations: [{ codes: [`${L}1-1`], unit: 'L/min' }] } },
      /needs above/,
    ],
    [
      'an answer that is not a value',
      {
        name: 'e',
        type: 'enum',
        values: ['alert', 'voice'],
        fhir: { observations: [{ codes: [`${L}1-1`], answers: { [`${SCT}1`]: 'confused' } }] },
      },
      /not a value of this feature/,
    ],
    ['age of a boolean', { name: 'b', type: 'boolean', fhir: { patient: 'age' } }, /age is a number/],
    [
      'an assumption outside the range',
      { ...base, type: 'integer', fhir: { assume: { value: 400, reason: 'a clinical reason' } } },
      /assumed value/,
    ],
    ['an assumption without a reason', { ...base, type: 'integer', fhir: { assume: { value: 4 } } }, /reason/],
  ];
  for (const [name, feature, message] of refused) {
    test(`refuses ${name}`, () => {
      const r = featureSchema.safeParse(feature);
      assert.equal(r.success, false);
      assert.match(JSON.stringify(r.error?.issues), message);
    });
  }

  test('the bundled manifests load, news2 reading ACVPU and oxygen from FHIR', async () => {
    const models = await loadModels(MODELS_DIR, 5000);
    const news2 = models.find((m) => m.manifest.name === 'news2')?.manifest;
    const consciousness = news2?.features.find((f) => f.name === 'consciousness');
    assert.equal(consciousness?.fhir?.observations?.[0]?.answers?.[`${SCT}130987000`], 'confusion');
    const oxygen = news2?.features.find((f) => f.name === 'onOxygen')?.fhir?.observations;
    assert.deepEqual(
      oxygen?.map((o) => [o.codes, o.unit, o.above]),
      [
        [[`${L}3151-8`], 'L/min', 0],
        [[`${L}3150-0`], '%', 21],
      ],
    );
  });
});

describe('references and birth dates', () => {
  test('one patient however the subject is written; other subjects refused with the reason', () => {
    const uuid = '2fcbe29d-94f0-ec20-dcf3-740c45bc08ba';
    for (const ref of [
      `Patient/${uuid}`,
      `urn:uuid:${uuid}`,
      `https://ehr.example.org/fhir/Patient/${uuid}`,
      `Patient/${uuid.toUpperCase()}/_history/2`,
    ])
      assert.equal(patientId({ reference: ref }), uuid, ref);
    assert.equal(patientId({ reference: 'Patient/p3' }), 'p3');
    assert.deepEqual(patientId({ reference: 'Group/g1' }), { error: 'subject is a Group, not a Patient' });
    assert.match((patientId({ reference: '#contained' }) as { error: string }).error, /neither/);
    assert.match((patientId({ identifier: { value: 'x' } }) as { error: string }).error, /missing/);
  });

  test('age in whole years at asOf; a partial or later birth date is not guessed at', () => {
    const asOf = Date.parse('2020-03-11T00:00:00Z');
    assert.equal(ageAt('1979-01-20', asOf), 41);
    assert.equal(ageAt('1979-03-11', asOf), 41, 'the birthday itself');
    assert.equal(ageAt('1979-03-12', asOf), 40, 'the day before the birthday');
    assert.match((ageAt('1979', asOf) as { error: string }).error, /not a full date/);
    assert.match((ageAt('2021-01-01', asOf) as { error: string }).error, /after asOf/);
    assert.match((ageAt(undefined, asOf) as { error: string }).error, /no birthDate/);
  });
});

describe('FhirAggregator', () => {
  const asOf = Date.parse('2020-03-11T00:00:00Z');
  const at = (hoursBefore: number) => new Date(asOf - hoursBefore * 3600_000).toISOString();
  const features: Feature[] = [
    { name: 'age', type: 'integer', min: 16, max: 120, fhir: { patient: 'age' } },
    {
      name: 'temperature',
      type: 'number',
      min: 25,
      max: 45,
      fhir: { observations: [{ codes: [`${L}8310-5`, `${L}8331-1`], unit: 'Cel' }] },
    },
    {
      name: 'onOxygen',
      type: 'boolean',
      fhir: {
        observations: [
          { codes: [`${L}3151-8`], unit: 'L/min', above: 0 },
          { codes: [`${L}3150-0`], unit: '%', above: 21 },
        ],
      },
    },
    {
      name: 'scale',
      type: 'integer',
      min: 1,
      max: 2,
      required: false,
      default: 1,
      fhir: { assume: { value: 1, reason: 'no prescription of a target range' } },
    },
  ].map((f) => featureSchema.parse(f));

  function rows(resources: Array<Record<string, unknown>>): PatientRow[] {
    const agg = new FhirAggregator(features, { asOf, lookbackHours: 24 });
    for (const r of resources) assert.equal(agg.add(r), undefined, JSON.stringify(r));
    return [...agg.rows()];
  }
  const obs = (id: string, code: string, hours: number, value: Record<string, unknown>, status = 'final') => ({
    resourceType: 'Observation',
    id,
    status,
    code: { coding: [{ system: 'http://loinc.org', code }] },
    subject: { reference: 'Patient/p1' },
    effectiveDateTime: at(hours),
    ...value,
  });
  const q = (value: number, code: string) => ({ valueQuantity: { value, system: 'http://unitsofmeasure.org', code } });
  const patient = { resourceType: 'Patient', id: 'p1', birthDate: '1950-06-01' };

  test('latest usable value per feature; units converted; oxygen by either code; age; assumptions listed', () => {
    const [row] = rows([
      patient,
      obs('t-old', '8310-5', 5, q(36.5, 'Cel')),
      obs('t-f', '8331-1', 2, q(102.2, '[degF]')), // 39 Cel, later: used
      obs('t-err', '8310-5', 1, q(35, 'Cel'), 'entered-in-error'),
      obs('t-pre', '8310-5', 1, q(35, 'Cel'), 'preliminary'),
      obs('o2-flow', '3151-8', 3, q(0, 'L/min')), // on air then
      obs('fio2', '3150-0', 2, q(0.35, '1')), // a fraction: 35% (converted), later: on oxygen
    ]);
    assert.deepEqual(row, {
      id: 'Patient/p1',
      values: { age: 69, temperature: 39, onOxygen: true, scale: 1 },
      basis: ['Patient/p1', 'Observation/t-f', 'Observation/fio2'],
      assumed: [{ feature: 'scale', value: 1, reason: 'no prescription of a target range' }],
    });
  });

  test('a missing feature names the codes looked for and why readings were not used', () => {
    const [row] = rows([
      obs('t-err', '8310-5', 1, q(37, 'Cel'), 'entered-in-error'),
      obs('o2', '3151-8', 1, q(2, 'kg')),
    ]);
    assert.equal(row?.insufficient, true);
    assert.match(row?.error ?? '', /^missing age \(looked for Patient\.birthDate; no Patient resource in the input\)/);
    assert.match(
      row?.error ?? '',
      /temperature \(looked for .*LOINC 8310-5, 8331-1; a reading entered-in-error was not used\)/,
    );
    assert.match(
      row?.error ?? '',
      /onOxygen \(looked for .*LOINC 3151-8, 3150-0; unit "kg" cannot be converted to L\/min\)/,
    );
    assert.ok(!/scale/.test(row?.error ?? ''), 'an assumed feature is not missing');
  });

  test('a patient with nothing in the window still gets a row', () => {
    const [row] = rows([patient, obs('t', '8310-5', 30, q(37, 'Cel'))]);
    assert.equal(row?.insufficient, true);
    assert.match(row?.error ?? '', /^no data: /);
  });
});
