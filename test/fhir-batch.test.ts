/**
 * A FHIR batch run end to end over the real Synthea export (vital-sign Observations + the sibling Patient.ndjson),
 * with the ACVPU and oxygen Observations Synthea lacks made here (test/fhir-support.ts): every patient with complete
 * data is scored with the hand-worked NEWS2, every other patient gets a row naming what is missing, and what comes
 * out is valid FHIR R4.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fhirErrors } from './fhir-schema.ts';
import { AS_OF, P_FEVER, P_NO_VITALS, P_SEPSIS, P_TEMP_ONLY, writeExport } from './fhir-support.ts';
import {
  buildGateway,
  deletePrefix,
  download,
  makeKeys,
  makePrefix,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitForRun,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('fhir-batch');
let dataDir: string;
let modelsDir: string;
let gw: TestGateway;

before(async () => {
  modelsDir = await tempModels({ news2: null, deterioration: null });
  dataDir = await tempDir('fhir-data');
  await writeExport(dataDir);
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: ['batch'] });
});

after(async () => {
  await gw?.close();
  await deletePrefix(prefix);
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
