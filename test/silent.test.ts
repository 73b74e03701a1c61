/**
 * Silent deployment: a version set silent answers every request of its model and is monitored and logged for
 * outcomes, but no tier shows its score (sync: 200 with no predictions and the no-score action; async: released
 * with no predictions, no review; batch: rows marked silent), until it is promoted with evidence.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { SILENT_ACTION } from '../src/serving/scorer.ts';
import { highRiskVitals } from './bedside-fhir.ts';
import { fhirErrors } from './fhir-schema.ts';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  download,
  HANG_GUARD_MS,
  MODEL,
  makeKeys,
  makePrefix,
  placeDischarges,
  type Reply,
  removeDir,
  SICK_VITALS,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForRun,
} from './support/index.ts';

const VITALS = SICK_VITALS;

describe('silent deployment on the sync tier', { timeout: HANG_GUARD_MS }, () => {
  const keys = makeKeys();
  const prefix = makePrefix('silent');
  let modelsDir: string;
  let gw: TestGateway;

  before(async () => {
    modelsDir = await tempModels({
      [MODEL]: (m) => {
        delete m.routing.shadow;
        delete m.versions[1].evidence; // version 2 has no release evidence yet: it may run silent, never be shown
      },
    });
    gw = await buildGateway({ prefix, keys, modelsDir });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  const routing = `/v1/models/${MODEL}/routing`;

  test('a version without evidence runs silent: its scores are recorded, never returned', async () => {
    const set = await gw.call('PUT', `${routing}/silent`, keys.admin, { version: '2', reason: 'CR-7: silent trial' });
    assert.equal(set.status, 200, set.text);
    assert.deepEqual(set.body.routing, { primary: '2', silent: true });
    const requestId = randomUUID();
    const res = await gw.predict(MODEL, keys.client, [VITALS, VITALS], { 'x-request-id': requestId });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.version, '2');
    assert.equal(res.body.silent, true);
    assert.equal(res.body.action, SILENT_ACTION);
    assert.deepEqual(res.body.predictions, []);
    assert.ok(!/deteriorationRisk|aboveThreshold|verdict/.test(res.text), 'no score anywhere in the answer');

    await gw.gateway.services.monitoring.recorder?.flush();
    const report = await gw.call('GET', `/v1/models/${MODEL}/monitoring`, keys.client);
    const v2 = report.body.versions.find((v: { version: string }) => v.version === '2');
    assert.equal(v2.windows.hour.rows, 2, 'monitored');
    assert.equal(v2.windows.hour.output.scored, 2);
    const outcome = await gw.call('POST', '/v1/outcomes', keys.client, {
      requestId,
      index: 1,
      outcome: true,
      observedAt: new Date(Date.now() + 1000).toISOString(),
    });
    assert.equal(outcome.status, 201, outcome.text);
    assert.equal(outcome.body.version, '2');
    assert.equal(typeof outcome.body.score, 'number', 'the score was logged for the outcome join');
  });

  test('the other bedside doors show no score either: OIP v2 says silent, FHIR answers a RiskAssessment without one', async () => {
    assert.equal((await gw.predict(MODEL, keys.client, [VITALS])).body.silent, true, 'still silent');
    // Open Inference Protocol v2: no output tensors, the parameters say why and what to do
    const requestId = randomUUID();
    const inputs = Object.entries(VITALS).map(([name, value]) => ({
      name,
      shape: [1],
      datatype: typeof value === 'boolean' ? 'BOOL' : 'FP32',
      data: [value],
    }));
    const oip = await gw.call(
      'POST',
      `/v2/models/${MODEL}/infer`,
      keys.client,
      { inputs },
      { 'x-request-id': requestId },
    );
    assert.equal(oip.status, 200, oip.text);
    assert.deepEqual(oip.body.outputs, []);
    assert.equal(oip.body.model_version, '2');
    assert.equal(oip.body.parameters.silent, true);
    assert.equal(oip.body.parameters.action, SILENT_ACTION);
    assert.ok(!/deteriorationRisk|aboveThreshold/.test(oip.text), 'no score anywhere in the answer');
    // and, like every sync answer, it was logged for the outcome join under its request id
    const outcome = await gw.call('POST', '/v1/outcomes', keys.client, {
      requestId,
      outcome: false,
      observedAt: new Date(Date.now() + 1000).toISOString(),
    });
    assert.equal(outcome.status, 201, outcome.text);
    assert.equal(outcome.body.version, '2');

    // the FHIR door: a valid RiskAssessment naming the patient and method, with no prediction and the action as its note
    const bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: highRiskVitals('silent-1').map((resource) => ({ resource })),
    };
    const fhir = await gw.call('POST', `/fhir/RiskAssessment/$predict?model=${MODEL}`, keys.client, bundle, {
      'content-type': 'application/fhir+json',
    });
    assert.equal(fhir.status, 200, fhir.text);
    assert.equal(fhir.body.resourceType, 'RiskAssessment');
    assert.deepEqual(fhirErrors(fhir.body), []);
    assert.equal(fhir.body.prediction, undefined);
    assert.deepEqual(fhir.body.note, [{ text: SILENT_ACTION }]);
    assert.equal(fhir.body.subject.reference, 'Patient/silent-1');
    assert.equal(fhir.body.method.coding[0].version, '2');
    assert.ok(!/probabilityDecimal|StructureDefinition\/score/.test(fhir.text), 'no score anywhere in the resource');
  });

  test('no canary while silent; promotion needs evidence; promoting a version with evidence shows scores again', async () => {
    const canary = await gw.call('PUT', `${routing}/canary`, keys.admin, { version: '1', weight: 10, reason: 'x' });
    assert.equal(canary.status, 409, canary.text);
    const refused = await gw.call('POST', `${routing}/promote`, keys.admin, { version: '2', reason: 'CR-8' });
    assert.equal(refused.status, 409, refused.text);
    assert.equal(refused.body.code, 'evidence_required');
    assert.equal((await gw.predict(MODEL, keys.client, [VITALS])).body.silent, true, 'still silent');
    const promoted = await gw.call('POST', `${routing}/promote`, keys.admin, {
      version: '1',
      reason: 'CR-9: back to v1',
    });
    assert.equal(promoted.status, 200, promoted.text);
    assert.deepEqual(promoted.body.routing, { primary: '1' });
    const res = await gw.predict(MODEL, keys.client, [VITALS]);
    assert.equal(res.body.silent, undefined);
    assert.equal(typeof res.body.predictions[0].deteriorationRisk, 'number');
    const audit = (await allAudit(gw, keys.admin)).filter((e) => e.action === 'release.silent');
    assert.equal(audit.length, 1);
    assert.equal(audit[0]?.reason, 'CR-7: silent trial');
  });
});

describe('silent deployment on the job tiers', { timeout: HANG_GUARD_MS }, () => {
  const keys = makeKeys();
  const prefix = makePrefix('silent-jobs');
  let dataDir: string;
  let gw: TestGateway;

  before(async () => {
    dataDir = await tempDir('silent');
    await placeDischarges(dataDir);
    gw = await buildGateway({ prefix, keys, dataDir, workers: ['inference', 'batch'] });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(dataDir);
  });

  const silent = async (model: string) => {
    const res = await gw.call('PUT', `/v1/models/${model}/routing/silent`, keys.admin, {
      version: '1',
      reason: 'trial',
    });
    assert.equal(res.status, 200, res.text);
  };

  test('an async job (review always) is released at once with no score and nothing to review', async () => {
    await silent('note-triage');
    const res = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, { input: { text: 'Chest pain.' } });
    assert.equal(res.status, 202, res.text);
    let view: Reply | undefined;
    await waitFor(async () => {
      view = await gw.call('GET', `/v1/jobs/${res.body.id}`, keys.client);
      return view.body.state === 'released';
    }, 'the job to be released');
    assert.deepEqual(view?.body.result.output, { predictions: [], silent: true, action: SILENT_ACTION });
    assert.equal((await gw.call('GET', '/v1/reviews', keys.reviewer)).body.items.length, 0);
  });

  test('a batch run writes rows marked silent, with no prediction', async () => {
    await silent('readmission');
    const submitted = await gw.call('POST', '/v1/models/readmission/batches', keys.client, {
      input: { path: 'inputs/discharges.ndjson', format: 'ndjson' },
    });
    const runId = String(submitted.headers.get('content-location')).split('/').pop() as string;
    const { final } = await waitForRun(gw, keys.client, runId);
    assert.equal(final.status, 200, final.text);
    const rows = await download(gw, keys.client, final.body.output[0].url);
    assert.ok(rows.length > 100);
    assert.ok(rows.every((r) => r.silent === true && r.prediction === undefined));
    await gw.gateway.services.monitoring.recorder?.flush();
    const report = await gw.call('GET', '/v1/models/readmission/monitoring', keys.client);
    assert.equal(report.body.versions[0].windows.hour.rows, rows.length, 'scored and monitored');
  });
});
