/**
 * A FHIR batch run end to end over the real Synthea export (vital-sign Observations + the sibling Patient.ndjson),
 * with the ACVPU and oxygen Observations Synthea lacks made here: every patient with complete data is scored with
 * the hand-worked NEWS2, every other patient gets a row naming what is missing, and what comes out is valid FHIR R4.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { RETENTION_MS } from '../src/batch/manifest.ts';
import { outcomeCode } from '../src/fhir/operation-outcome.ts';
import { BATCH_QUEUE } from '../workers/batch.ts';
import {
  buildGateway,
  deletePrefix,
  download,
  makeKeys,
  makePrefix,
  REDIS_URL,
  removeDir,
  SYNTHEA_OBSERVATIONS,
  type TestGateway,
  tempDir,
  tempModels,
  waitForRun,
} from './batch-support.ts';
import { fhirErrors } from './fhir-schema.ts';

const keys = makeKeys();
const prefix = makePrefix('fhir-batch');
const idlePrefix = makePrefix('fhir-batch-idle');
const SYNTHEA_PATIENTS = fileURLToPath(new URL('../../shared/data/synthea/Patient.ndjson', import.meta.url));
const AS_OF = '2020-03-11T00:00:00.000Z'; // news2's default 72 h look-back: 8-11 March 2020

// two Synthea COVID-19 admissions with every charted vital sign in the window (ids as the export spells them)
const P_FEVER = '2fcbe29d-94f0-ec20-dcf3-740c45bc08ba'; // 9 March: RR 27.669, SpO2 78.98, SBP 118, HR 79.026, T 40.725
const P_SEPSIS = 'a8376487-72d8-ac29-a654-91f3622cc7a4'; // 10 March: RR 26.562, SpO2 86.23, SBP 102, HR 148.25, T 41.132
const P_TEMP_ONLY = 'a8327210-6158-2be1-fb72-553a78a0ff37'; // only a temperature in the window
const P_NO_VITALS = 'made-here-no-vitals'; // a Patient of the export with no Observation at all

const LOINC = 'http://loinc.org';
const SCT = 'http://snomed.info/sct';
function obs(id: string, subject: string, at: string, code: string, value: Record<string, unknown>, status = 'final') {
  return JSON.stringify({
    resourceType: 'Observation',
    id,
    status,
    code: { coding: [{ system: LOINC, code }] },
    subject: { reference: subject },
    effectiveDateTime: at,
    ...value,
  });
}
const qty = (value: number, code: string) => ({
  valueQuantity: { value, unit: code, system: 'http://unitsofmeasure.org', code },
});
const answer = (code: string) => ({ valueCodeableConcept: { coding: [{ system: SCT, code }] } });

// written the way real feeds write them: three spellings of the subject reference, a unit to convert, an
// entered-in-error reading, and an arterial blood gas SaO2 that is not SpO2
const ADDED = [
  obs('acvpu-fever', `Patient/${P_FEVER}`, '2020-03-09T10:39:34+01:00', '67775-7', answer('248234008')), // alert
  obs('o2-fever', `urn:uuid:${P_FEVER}`, '2020-03-09T10:40:00+01:00', '3151-8', qty(2, 'L/min')), // on oxygen
  obs(
    'acvpu-sepsis',
    `https://ehr.example.org/fhir/Patient/${P_SEPSIS}`,
    '2020-03-10T19:10:02+01:00',
    '67775-7',
    answer('130987000'),
  ), // new confusion
  obs(
    'acvpu-error',
    `Patient/${P_SEPSIS}`,
    '2020-03-10T20:00:00+01:00',
    '67775-7',
    answer('422768004'),
    'entered-in-error',
  ),
  obs('fio2-sepsis', `Patient/${P_SEPSIS}/_history/3`, '2020-03-10T19:10:02+01:00', '3150-0', qty(21, '%')), // air
  obs('temp-degf', `Patient/${P_SEPSIS}`, '2020-03-10T20:00:00+01:00', '8310-5', qty(101.3, '[degF]')), // 38.5 Cel
  obs('sao2-abg', `Patient/${P_SEPSIS}`, '2020-03-10T21:00:00+01:00', '2708-6', qty(99, '%')), // arterial: not SpO2
  obs('acvpu-temp-only', `Patient/${P_TEMP_ONLY}`, '2020-03-09T08:15:54+01:00', '67775-7', answer('248234008')),
];

let dataDir: string;
let modelsDir: string;
let gw: TestGateway;
let idle: TestGateway; // no worker: its runs stay queued

before(async () => {
  modelsDir = await tempModels({ news2: null, deterioration: null });
  dataDir = await tempDir('fhir-data');
  const exportDir = path.join(dataDir, 'export');
  await mkdir(exportDir, { recursive: true });
  const observations = await readFile(SYNTHEA_OBSERVATIONS, 'utf8');
  await writeFile(path.join(exportDir, 'Observation.ndjson'), `${observations.trimEnd()}\n${ADDED.join('\n')}\n`);
  await copyFile(SYNTHEA_PATIENTS, path.join(exportDir, 'Patient.ndjson'));
  const extra = { resourceType: 'Patient', id: P_NO_VITALS, birthDate: '1950-02-03' };
  await writeFile(path.join(exportDir, 'Patient.ndjson'), `${JSON.stringify(extra)}\n`, { flag: 'a' });
  await writeFile(path.join(dataDir, 'bad-header.csv'), 'id,"pulse\n1,70\n');
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: ['batch'] });
  idle = await buildGateway({ prefix: idlePrefix, keys, modelsDir, dataDir, workers: [] });
});

after(async () => {
  await gw?.close();
  await idle?.close();
  await deletePrefix(prefix);
  await deletePrefix(idlePrefix);
  await removeDir(dataDir);
  await removeDir(modelsDir);
});

describe('a FHIR batch run of news2 over the Synthea export', () => {
  let final: Awaited<ReturnType<typeof waitForRun>>['final'];
  let output: Array<Record<string, unknown>>;
  let errors: Array<Record<string, unknown>>;

  before(async () => {
    const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'export/Observation.ndjson', format: 'fhir-ndjson' },
      asOf: AS_OF,
    });
    assert.equal(res.status, 202, res.text);
    assert.match(res.headers.get('content-location') ?? '', /^http:\/\/[^/]+\/v1\/batches\/[0-9a-f-]{36}$/);
    ({ final } = await waitForRun(gw, keys.client, res.body.id));
    assert.equal(final.status, 200, final.text);
    const byType = (t: string) => final.body.output.find((o: { type: string }) => o.type === t)?.url;
    output = await download(gw, keys.client, byType('RiskAssessment'));
    errors = await download(gw, keys.client, final.body.error[0].url);
  });

  test('the two patients with complete data get the hand-worked NEWS2', () => {
    // fever: RR 28 → 3, SpO2 79 (scale 1) → 3, oxygen → 2, SBP 118 → 0, HR 79 → 0, alert → 0, T 40.7 → 2 = 10
    // sepsis: RR 27 → 3, SpO2 86 → 3, air (FiO2 21%) → 0, SBP 102 → 1, HR 148 → 3, new confusion → 3,
    //         T 101.3 [degF] = 38.5 Cel (later than Synthea's 41.1) → 1 = 14; the entered-in-error
    //         "unresponsive" and the arterial SaO2 of 99% are not used
    const scores = new Map(
      output.map((r) => [
        (r.subject as { reference: string }).reference,
        (r.extension as Array<{ url: string; valueDecimal?: number }>).find((e) => e.url.endsWith('/score'))
          ?.valueDecimal,
      ]),
    );
    assert.deepEqual(Object.fromEntries(scores), { [`Patient/${P_FEVER}`]: 10, [`Patient/${P_SEPSIS}`]: 14 });
    for (const r of output) {
      const prediction = (r.prediction as Array<Record<string, unknown>>)[0] as Record<string, unknown>;
      assert.deepEqual(prediction.qualitativeRisk, {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/risk-probability', code: 'high' }],
        text: 'high',
      });
      assert.deepEqual(prediction.outcome, { text: 'urgent-response' });
    }
  });

  test('each RiskAssessment is valid FHIR R4, names the model, owner, cut-off, basis and what was assumed', () => {
    for (const r of output) assert.deepEqual(fhirErrors(r), [], JSON.stringify(r));
    const sepsis = output.find((r) => (r.subject as { reference: string }).reference === `Patient/${P_SEPSIS}`);
    assert.ok(sepsis);
    assert.equal(sepsis.occurrenceDateTime, AS_OF);
    assert.deepEqual((sepsis.method as { coding: unknown[] }).coding[0], {
      system: 'https://triage.dev/fhir/models',
      code: 'news2',
      version: '1',
      display: 'National Early Warning Score 2 (NEWS2)',
    });
    assert.match((sepsis.performer as { display: string }).display, /^Deteriorating Patient Programme/);
    const basis = (sepsis.basis as Array<{ reference: string }>).map((b) => b.reference);
    for (const used of ['Observation/acvpu-sepsis', 'Observation/fio2-sepsis', 'Observation/temp-degf'])
      assert.ok(basis.includes(used), `${used} in ${basis}`);
    for (const unused of ['Observation/acvpu-error', 'Observation/sao2-abg'])
      assert.ok(!basis.includes(unused), `${unused} not in the basis`);
    assert.match(JSON.stringify(sepsis.note), /spo2Scale = 1 \(Scale 2 is only for a clinician-prescribed/);
  });

  test('every other patient has a row saying what is missing, or that nothing was in the window', () => {
    for (const e of errors) assert.deepEqual(fhirErrors(e), [], JSON.stringify(e));
    const byPatient = new Map(
      errors.map((e) => {
        const issue = (e.issue as Array<{ code: string; diagnostics: string }>)[0] as {
          code: string;
          diagnostics: string;
        };
        return [/^row Patient\/(\S+): /.exec(issue.diagnostics)?.[1], issue] as const;
      }),
    );
    assert.deepEqual(
      [...byPatient.keys()].sort(),
      [
        '085e81c0-7a95-ef02-16ef-aa1b4344deed',
        '6c8f3e83-c351-ed33-c38d-6be101c275d2',
        '76f217df-3176-7627-8fef-e60a9b3574c2',
        P_TEMP_ONLY,
        P_NO_VITALS,
      ].sort(),
    );
    for (const issue of byPatient.values()) assert.equal(issue.code, 'incomplete');
    const tempOnly = byPatient.get(P_TEMP_ONLY)?.diagnostics ?? '';
    for (const named of [
      'respirationRate',
      'spo2',
      'onOxygen',
      'systolicBP',
      'pulse',
      'LOINC 3151-8, 3150-0',
      'LOINC 59408-5',
    ])
      assert.ok(tempOnly.includes(named), `${named} named in: ${tempOnly}`);
    assert.ok(!/temperature|consciousness/.test(tempOnly), 'what was found is not reported missing');
    assert.match(byPatient.get(P_NO_VITALS)?.diagnostics ?? '', /no data: no usable Observation .* 72 h look-back/);
  });

  test('the manifest: RiskAssessment output, patient outcomes counted, transactionTime is the cut-off, Expires', () => {
    assert.equal(final.body.transactionTime, AS_OF);
    assert.deepEqual(
      final.body.output.map((o: { type: string; count: number }) => [o.type, o.count]),
      [['RiskAssessment', 2]],
    );
    assert.deepEqual(
      final.body.error.map((o: { type: string; count: number }) => [o.type, o.count]),
      [['OperationOutcome', 5]],
    );
    assert.deepEqual(final.body.extension.outcomes, { scored: 2, insufficient: 5, failed: 0 });
    for (const f of [...final.body.output, ...final.body.error]) assert.match(f.url, /^http:\/\//);
    const expires = Date.parse(final.headers.get('expires') ?? '');
    assert.ok(expires > Date.now() + 6 * 24 * 3600_000, `Expires ${final.headers.get('expires')}`);
  });
});

describe('a FHIR batch run of deterioration: age from the sibling Patient.ndjson, a probability out', () => {
  test("the two complete patients get /predict's risk on the same values, as probabilityDecimal", async () => {
    const res = await gw.call('POST', '/v1/models/deterioration/batches', keys.client, {
      input: { path: 'export/Observation.ndjson', format: 'fhir-ndjson' },
      asOf: AS_OF,
    });
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 200, final.text);
    assert.deepEqual(final.body.extension.outcomes, { scored: 2, insufficient: 5, failed: 0 });
    const output = await download(gw, keys.client, final.body.output[0].url);
    for (const r of output) assert.deepEqual(fhirErrors(r), [], JSON.stringify(r));
    // ages at 11 March 2020 from birthDate 1979-01-20 and 1969-05-21; the rest as worked out for news2 above
    const instances = [
      { age: 41, respirationRate: 28, spo2: 79, systolicBP: 118, pulse: 79, temperature: 40.725, onOxygen: true },
      { age: 50, respirationRate: 27, spo2: 86, systolicBP: 102, pulse: 148, temperature: 38.5, onOxygen: false },
    ];
    const predicted = await gw.call('POST', '/v1/models/deterioration/predict', keys.client, { instances });
    assert.equal(predicted.status, 200, predicted.text);
    const risks = output.map((r) => [
      (r.subject as { reference: string }).reference,
      (r.prediction as Array<{ probabilityDecimal: number }>)[0]?.probabilityDecimal,
    ]);
    assert.deepEqual(risks, [
      [`Patient/${P_FEVER}`, predicted.body.predictions[0].deteriorationRisk],
      [`Patient/${P_SEPSIS}`, predicted.body.predictions[1].deteriorationRisk],
    ]);
    for (const r of output)
      assert.ok(
        (r.basis as Array<{ reference: string }>).some(
          (b) => b.reference === (r.subject as { reference: string }).reference,
        ),
      );
  });
});

describe('Bulk Data manifests', () => {
  test('a run that scored nobody lists no output file; every patient is in the error file', async () => {
    const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'export/Observation.ndjson', format: 'fhir-ndjson' },
      asOf: '2010-01-01T00:00:00.000Z',
    });
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 200, final.text);
    assert.deepEqual(final.body.output, []);
    assert.deepEqual(final.body.extension.outcomes, { scored: 0, insufficient: 7, failed: 0 });
    assert.equal(final.body.error[0].count, 7);
  });

  test('past its Expires, a run and its files are gone (404)', async () => {
    const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'export/Observation.ndjson', format: 'fhir-ndjson' },
      asOf: AS_OF,
    });
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 200, final.text);
    const file = final.body.output[0].url;
    assert.equal((await gw.call('GET', file, keys.client)).status, 200);
    // as if finished just over the retention ago
    await gw.gateway.services.runs.update(res.body.id, { finishedAt: Date.now() - RETENTION_MS - 1000 });
    const gone = await gw.call('GET', `/v1/batches/${res.body.id}`, keys.client);
    assert.equal(gone.status, 404);
    assert.equal(outcomeCode(gone.body), 'not_found');
    assert.equal((await gw.call('GET', file, keys.client)).status, 404);
  });
});

describe('Bulk Data errors', () => {
  test('a kick-off error is an OperationOutcome', async () => {
    const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'nope.ndjson', format: 'fhir-ndjson' },
    });
    assert.equal(res.status, 400);
    assert.equal(res.body.resourceType, 'OperationOutcome');
    assert.equal(outcomeCode(res.body), 'invalid_input_file');
    assert.deepEqual(fhirErrors(res.body), []);
  });

  test('a malformed CSV header fails the run at once (one attempt), with an OperationOutcome', async () => {
    const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'bad-header.csv', format: 'csv' },
    });
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 500);
    assert.equal(outcomeCode(final.body), 'run_failed');
    assert.match(final.body.issue[0].diagnostics, /CSV header/);
    assert.deepEqual(fhirErrors(final.body), []);
    const queue = new Queue(BATCH_QUEUE, { connection: { url: REDIS_URL }, prefix });
    try {
      const job = await queue.getJob(`run-${res.body.id}`);
      assert.equal(job?.attemptsMade, 1, 'not retried');
      assert.equal(await job?.getState(), 'failed');
    } finally {
      await queue.close();
    }
  });

  test('a deleted run is 404 with an OperationOutcome, not 410', async () => {
    const res = await idle.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'export/Observation.ndjson', format: 'fhir-ndjson' },
      asOf: AS_OF,
    });
    assert.equal(res.status, 202, res.text);
    assert.equal((await idle.call('DELETE', `/v1/batches/${res.body.id}`, keys.client)).status, 202);
    const gone = await idle.call('GET', `/v1/batches/${res.body.id}`, keys.client);
    assert.equal(gone.status, 404);
    assert.equal(gone.headers.get('content-type'), 'application/fhir+json');
    assert.equal(outcomeCode(gone.body), 'not_found');
    assert.deepEqual(fhirErrors(gone.body), []);
  });
});
