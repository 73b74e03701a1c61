import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { outcomeCode } from '../src/fhir/operation-outcome.ts';
import {
  ALERT,
  answer,
  bundle,
  HIGH_RISK_INSTANCE,
  highRiskVitals,
  lowRiskVitals,
  minutesAgo,
  obs,
  qty,
} from './bedside-fhir.ts';
import { fhirErrors } from './fhir-schema.ts';
import { buildGateway, captureLogs, httpCall, type TestGateway } from './support/index.ts';

const FHIR = { 'content-type': 'application/fhir+json' };

describe('the synchronous FHIR door', () => {
  let t: TestGateway;
  const logs = captureLogs('debug');
  before(async () => {
    t = await buildGateway({ logger: logs.logger });
  });
  after(() => t.close());

  const post = (model: string, body: unknown, key: string | null = t.keys.client) =>
    httpCall(t.app, 'POST', `/fhir/RiskAssessment/$predict?model=${model}`, key ?? undefined, body, FHIR);

  function assertOutcome(reply: { status: number; headers: Headers; body: unknown }, status: number, code: string) {
    assert.equal(reply.status, status, JSON.stringify(reply.body));
    assert.match(reply.headers.get('content-type') ?? '', /^application\/fhir\+json/);
    assert.deepEqual(fhirErrors(reply.body), []);
    assert.equal(outcomeCode(reply.body), code);
  }

  it('scores one patient’s Bundle through the FHIR mapping: a RiskAssessment with NEWS2 worked by hand', async () => {
    const r = await post('news2', bundle(highRiskVitals('p-high')));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.match(r.headers.get('content-type') ?? '', /^application\/fhir\+json/);
    assert.deepEqual(fhirErrors(r.body), []);
    const ra = r.body;
    assert.equal(ra.resourceType, 'RiskAssessment');
    assert.deepEqual(ra.subject, { reference: 'Patient/p-high' });
    assert.equal(ra.method.coding[0].code, 'news2');
    assert.equal(ra.method.coding[0].version, r.headers.get('x-model-version'));
    assert.match(ra.performer.display, /Deteriorating Patient Programme/);
    const score = ra.extension.find((e: { url: string }) => e.url.endsWith('/score'));
    assert.equal(score.valueDecimal, 10); // RR 2, SpO2 2, O2 2, SBP 1, HR 2, alert 0, 38.5 °C 1
    assert.equal(ra.prediction[0].qualitativeRisk.coding[0].code, 'high');
    assert.equal(ra.prediction[0].outcome.text, 'urgent-response');
    const basis = ra.basis.map((b: { reference: string }) => b.reference).sort();
    // not the entered-in-error ACVPU, not the arterial SaO2
    assert.ok(basis.includes('Observation/p-high-acvpu'));
    assert.ok(!basis.includes('Observation/p-high-acvpu-err'));
    assert.ok(!basis.includes('Observation/p-high-sao2'));
    assert.ok(basis.includes('Observation/p-high-temp'));
  });

  it('logs the prediction for outcomes under the request id it answered (X-Request-Id), as /v1 predict does', async () => {
    const r = await post('news2', bundle(highRiskVitals('p-outcome')));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const requestId = r.headers.get('x-request-id');
    assert.ok(requestId);
    const outcome = await httpCall(t.app, 'POST', '/v1/outcomes', t.keys.client, {
      requestId,
      outcome: true,
      observedAt: new Date().toISOString(),
    });
    assert.equal(outcome.status, 201, JSON.stringify(outcome.body));
    assert.equal(outcome.body.model, 'news2');
    assert.equal(outcome.body.version, r.headers.get('x-model-version'));
    assert.equal(outcome.body.score, 10);
  });

  it('reads the official R4 vital-sign examples (a panel’s component, SpO2 coded three ways), re-timed to now', async () => {
    const official = [
      'blood-pressure',
      'body-temperature',
      'heart-rate',
      'respiratory-rate',
      'satO2',
      'vitals-panel',
    ].map((name) => {
      const r = JSON.parse(
        readFileSync(new URL(`../../shared/data/fhir/Observation-${name}.json`, import.meta.url), 'utf8'),
      );
      const { effectivePeriod: _, ...rest } = r;
      return { ...rest, effectiveDateTime: minutesAgo(20) };
    });
    // what the examples lack, made here: ACVPU alert, and breathing air
    const added = [
      obs('acvpu', 'Patient/example', 20, '67775-7', answer(ALERT)),
      obs('fio2', 'Patient/example', 20, '3150-0', qty(21, '%')),
    ];
    const r = await post('news2', bundle([...official, ...added]));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(fhirErrors(r.body), []);
    // RR 26 → 3, SpO2 95 → 1, air 0, SBP 107 (the panel's 8480-6 component) → 1, HR 44 → 1, alert 0, 36.5 °C 0
    const score = r.body.extension.find((e: { url: string }) => e.url.endsWith('/score'));
    assert.equal(score.valueDecimal, 6);
    assert.equal(r.body.prediction[0].qualitativeRisk.coding[0].code, 'moderate');
    assert.ok(r.body.basis.some((b: { reference: string }) => b.reference === 'Observation/blood-pressure'));
  });

  it('gives the same score as /v1 predict for the same values', async () => {
    const v1 = await httpCall(t.app, 'POST', '/v1/models/news2/predict', t.keys.client, {
      instances: [HIGH_RISK_INSTANCE],
    });
    const fhir = await post('news2', bundle(highRiskVitals('p-same')));
    const score = fhir.body.extension.find((e: { url: string }) => e.url.endsWith('/score')).valueDecimal;
    assert.equal(score, v1.body.predictions[0].news2Total);
  });

  it('reads age from Patient.birthDate for deterioration, as /v1 predict scores it', async () => {
    const resources = lowRiskVitals('p-age');
    const r = await post('deterioration', bundle(resources));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(fhirErrors(r.body), []);
    const born = new Date('1980-06-30T00:00:00Z');
    const now = new Date();
    const age =
      now.getUTCFullYear() -
      born.getUTCFullYear() -
      (now.getUTCMonth() < 5 || (now.getUTCMonth() === 5 && now.getUTCDate() < 30) ? 1 : 0);
    const v1 = await httpCall(t.app, 'POST', '/v1/models/deterioration/predict', t.keys.client, {
      instances: [
        { age, respirationRate: 16, spo2: 97, onOxygen: false, systolicBP: 125, pulse: 72, temperature: 36.8 },
      ],
    });
    assert.equal(v1.status, 200, JSON.stringify(v1.body));
    assert.equal(r.body.prediction[0].probabilityDecimal, v1.body.predictions[0].deteriorationRisk);
    assert.ok(r.body.basis.some((b: { reference: string }) => b.reference === 'Patient/p-age'));
  });

  it('answers 422 naming what is missing, never a score built on a guess', async () => {
    const resources = highRiskVitals('p-gap').filter((r) => r.id !== 'p-gap-o2');
    const r = await post('news2', bundle(resources));
    assertOutcome(r, 422, 'insufficient_data');
    assert.equal(r.body.issue[0].code, 'incomplete');
    assert.match(r.body.issue[0].diagnostics, /onOxygen \(looked for .*3151-8/);
  });

  it('does not use readings older than the bedside window', async () => {
    const resources = highRiskVitals('p-old').map((r) =>
      r.id === 'p-old-rr' ? obs('p-old-rr', 'Patient/p-old', 13 * 60, '9279-1', qty(22, '/min')) : r,
    );
    const r = await post('news2', bundle(resources));
    assertOutcome(r, 422, 'insufficient_data');
    assert.match(r.body.issue[0].diagnostics, /respirationRate/);
  });

  it('names the reading out of the model’s range', async () => {
    const resources = highRiskVitals('p-range').map((r) =>
      r.id === 'p-range-hr' ? obs('p-range-hr', 'Patient/p-range', 30, '8867-4', qty(400, '/min')) : r,
    );
    const r = await post('news2', bundle(resources));
    assertOutcome(r, 400, 'invalid_input');
    assert.match(r.body.issue[0].diagnostics, /pulse: /);
  });

  it('refuses a Bundle about two patients, and resources it cannot place', async () => {
    const two = await post('news2', bundle([...highRiskVitals('p-a'), ...lowRiskVitals('p-b')]));
    assertOutcome(two, 400, 'invalid_input');
    const noTime = highRiskVitals('p-c').map((r) => (r.id === 'p-c-rr' ? { ...r, effectiveDateTime: undefined } : r));
    const unplaced = await post('news2', bundle(noTime));
    assertOutcome(unplaced, 400, 'invalid_input');
    assert.match(unplaced.body.issue[0].diagnostics, /without an effective time/);
  });

  it('answers every error as an OperationOutcome with the right status', async () => {
    assertOutcome(await post('news2', bundle(highRiskVitals('p-x')), null), 401, 'unauthenticated');
    assertOutcome(await post('news2', bundle(highRiskVitals('p-x')), t.keys.reviewer), 403, 'forbidden');
    assertOutcome(await post('deterioration', bundle(lowRiskVitals('p-x')), t.keys.news2Only), 403, 'forbidden');
    assertOutcome(await post('nope', bundle([])), 404, 'model_not_found');
    assertOutcome(await post('note-triage', bundle([])), 409, 'wrong_tier');
    assertOutcome(await post('news2', { resourceType: 'Patient', id: 'x' }), 400, 'invalid_request');
    assertOutcome(await post('news2', '{not json'), 400, 'malformed_json');
    assertOutcome(await httpCall(t.app, 'GET', '/fhir/Patient/x', t.keys.client), 404, 'not_found');
  });

  it('logs nothing of the patient', async () => {
    const resources = highRiskVitals('p-logged-7731').map((r) =>
      r.resourceType === 'Patient'
        ? { ...r, name: [{ text: 'Ada Lovelace-Quill' }], identifier: [{ value: 'MRN-99812' }] }
        : r,
    );
    logs.lines.length = 0;
    assert.equal((await post('news2', bundle(resources))).status, 200);
    assert.ok(logs.lines.length > 0, 'the request was logged');
    for (const line of logs.lines) assert.doesNotMatch(line, /p-logged-7731|Lovelace|MRN-99812|38\.5/);
  });

  it('serves a CapabilityStatement at /fhir/metadata without a key', async () => {
    const r = await httpCall(t.app, 'GET', '/fhir/metadata', undefined);
    assert.equal(r.status, 200);
    // R4 is 4.0.1; the schema the package ships was built at 4.0.0 and lists only that in its version enum
    assert.equal(r.body.fhirVersion, '4.0.1');
    assert.deepEqual(fhirErrors({ ...r.body, fhirVersion: '4.0.0' }), []);
    const op = r.body.rest[0].resource[0].operation[0];
    assert.equal(op.name, 'predict');
    assert.match(op.documentation, /news2/);
    assert.doesNotMatch(op.documentation, /note-triage/);
  });
});
