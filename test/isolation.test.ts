/**
 * Isolation between callers: a client never reads or changes another client's data, and a reviewer scoped to some
 * models (`models` on its key) sees and decides the held results of those models only, on the API and the desk.
 * Whatever is out of reach answers as an unknown id does (404), so its existence does not leak. Real Redis, BullMQ,
 * onnxruntime, batch files in a temp data directory.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import { FormClient } from './desk-support.ts';
import {
  ASYNC_WORKERS,
  buildGateway,
  HANG_GUARD_MS,
  makeKeys,
  NEWS2_INSTANCE,
  NOTES,
  placeDischarges,
  placeNews2Rows,
  REVIEW_HOLDS,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForState,
} from './support/index.ts';

const keys = makeKeys();
/** a reviewer and an approver whose keys name news2 only */
const NEWS2_REVIEWER = `trg_rn_${hashKey(String(Math.random())).slice(0, 32)}`;
const NEWS2_APPROVER = `trg_an_${hashKey(String(Math.random())).slice(0, 32)}`;
let gw: TestGateway;
let dataDir: string;
let modelsDir: string;

before(async () => {
  dataDir = await tempDir('isolation-data');
  modelsDir = await tempModels({
    news2: REVIEW_HOLDS.news2 ?? null,
    readmission: REVIEW_HOLDS.readmission ?? null,
    'note-triage': null,
  });
  const doc = YAML.parse(keys.yaml);
  doc.keys.push({ id: 'news2-reviewer', role: 'reviewer', sha256: hashKey(NEWS2_REVIEWER), models: ['news2'] });
  doc.keys.push({ id: 'news2-approver', role: 'approver', sha256: hashKey(NEWS2_APPROVER), models: ['news2'] });
  gw = await buildGateway({
    keys,
    keyStore: ApiKeyStore.parse(YAML.stringify(doc)),
    dataDir,
    modelsDir,
    workers: [...ASYNC_WORKERS, 'batch'],
    listen: true,
  });
  await placeNews2Rows(dataDir, 40);
  await placeDischarges(dataDir);
});
after(async () => {
  await gw?.close();
  await removeDir(dataDir);
  await removeDir(modelsDir);
});

/** A run of the client's whose output (or part of it) is held for review, once it has finished scoring. */
async function heldRun(model: string, file: string): Promise<string> {
  const res = await gw.call('POST', `/v1/models/${model}/batches`, keys.client, {
    input: { path: `inputs/${file}`, format: 'ndjson' },
  });
  assert.equal(res.status, 202, res.text);
  await waitFor(
    async () => (await gw.call('GET', `/v1/batch-reviews/${res.body.id}`, keys.reviewer)).status === 200,
    `run ${res.body.id} held for review`,
    60_000,
  );
  return res.body.id;
}

describe('a reviewer scoped to some models', { timeout: HANG_GUARD_MS }, () => {
  let job: string;
  let news2Run: string;
  let readmissionRun: string;

  before(async () => {
    const res = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, { input: { text: NOTES.urgent } });
    assert.equal(res.status, 202, res.text);
    job = res.body.id;
    await waitForState(gw, keys.client, job, 'awaiting_review');
    news2Run = await heldRun('news2', 'news2.ndjson');
    readmissionRun = await heldRun('readmission', 'discharges.ndjson');
  });

  test('sees held results of its models only: other models are 404s, a filter by one is a 403', async () => {
    // an unscoped reviewer sees all three
    const all = await gw.call('GET', '/v1/reviews', keys.reviewer);
    assert.deepEqual(
      all.body.items.map((i: { id: string }) => i.id),
      [job],
    );
    const scoped = await gw.call('GET', '/v1/reviews', NEWS2_REVIEWER);
    assert.equal(scoped.status, 200, scoped.text);
    assert.deepEqual(scoped.body, { items: [], total: 0 });
    assert.equal((await gw.call('GET', `/v1/reviews/${job}`, NEWS2_REVIEWER)).status, 404);
    const decided = await gw.call('POST', `/v1/reviews/${job}/decision`, NEWS2_REVIEWER, {
      decision: 'approve',
      reason: 'not mine to decide',
    });
    assert.equal(decided.status, 404, decided.text);
    assert.equal((await gw.call('GET', '/v1/reviews?model=note-triage', NEWS2_REVIEWER)).status, 403);
    assert.equal((await gw.call('GET', `/v1/jobs/${job}`, keys.client)).body.state, 'awaiting_review');

    const runs = await gw.call('GET', '/v1/batch-reviews', NEWS2_REVIEWER);
    assert.equal(runs.status, 200, runs.text);
    assert.deepEqual(
      runs.body.items.map((h: { runId: string }) => h.runId),
      [news2Run],
    );
    assert.equal(runs.body.total, 1);
    assert.equal((await gw.call('GET', `/v1/batch-reviews/${news2Run}`, NEWS2_REVIEWER)).status, 200);
    assert.equal((await gw.call('GET', `/v1/batch-reviews/${readmissionRun}`, NEWS2_REVIEWER)).status, 404);
    const runDecided = await gw.call('POST', `/v1/batch-reviews/${readmissionRun}/decision`, NEWS2_REVIEWER, {
      decision: 'approve',
      reason: 'not mine to decide',
    });
    assert.equal(runDecided.status, 404, runDecided.text);
    assert.equal((await gw.call('GET', '/v1/batch-reviews?model=readmission', NEWS2_REVIEWER)).status, 403);
    const unscoped = await gw.call('GET', '/v1/batch-reviews', keys.reviewer);
    assert.equal(unscoped.body.total, 2);
  });

  test('the desk shows it the same: no other model in its queue, their holds 404', async () => {
    const desk = new FormClient(gw.url);
    assert.equal((await desk.request('POST', '/desk/sign-in', { credential: NEWS2_REVIEWER })).status, 303);
    const queue = await desk.request('GET', '/desk/reviews');
    assert.equal(queue.status, 200);
    assert.ok(queue.text.includes(news2Run), 'its own model’s held run is listed');
    assert.ok(!queue.text.includes(job), 'another model’s hold is not listed');
    assert.ok(!queue.text.includes(readmissionRun), 'another model’s held run is not listed');
    assert.equal((await desk.request('GET', `/desk/reviews/${job}`)).status, 404);
    assert.equal((await desk.request('GET', `/desk/batch-reviews/${readmissionRun}`)).status, 404);
    const csrf = FormClient.csrfOf(queue.text);
    const post = await desk.request('POST', `/desk/reviews/${job}`, { csrf, decision: 'approve', reason: 'no' });
    assert.equal(post.status, 404);
    assert.equal((await gw.call('GET', `/v1/jobs/${job}`, keys.client)).body.state, 'awaiting_review');
  });
});

describe('threshold changes', () => {
  test('an approver scoped to some models neither sees nor decides a change to another model: 404', async () => {
    const proposed = await gw.call('POST', '/v1/models/readmission/threshold-changes', keys.reviewer, {
      threshold: 0.3,
      reason: 'recalibrated on the 2025 cohort',
      evidenceUrl: 'https://evidence.example.org/readmission/2025',
    });
    assert.equal(proposed.status, 201, proposed.text);
    const id = proposed.body.id;
    // the model's own list already refuses it (403), as every model route does
    assert.equal((await gw.call('GET', '/v1/models/readmission/threshold-changes', NEWS2_APPROVER)).status, 403);
    assert.equal((await gw.call('GET', `/v1/threshold-changes/${id}`, NEWS2_APPROVER)).status, 404);
    for (const decision of ['approve', 'reject']) {
      const res = await gw.call('POST', `/v1/threshold-changes/${id}/${decision}`, NEWS2_APPROVER, { reason: 'x' });
      assert.equal(res.status, 404, res.text);
    }
    const after = await gw.call('GET', `/v1/threshold-changes/${id}`, keys.admin);
    assert.equal(after.body.state, 'proposed');
    assert.equal((await gw.call('GET', '/v1/models/readmission/threshold-changes', keys.client)).body.threshold, 0.25);
  });
});

describe('outcomes', { timeout: HANG_GUARD_MS }, () => {
  const report = (key: string, ref: Record<string, unknown>, outcome = true) =>
    gw.call('POST', '/v1/outcomes', key, { ...ref, outcome, observedAt: new Date().toISOString() });

  test("a client cannot report on (nor read the score of) another client's prediction: 404, as if unknown", async () => {
    const sync = await gw.predict('news2', keys.client, [NEWS2_INSTANCE]);
    assert.equal(sync.status, 200, sync.text);
    const job = await gw.call('POST', '/v1/models/news2/jobs', keys.client, { input: { instances: [NEWS2_INSTANCE] } });
    assert.equal(job.status, 202, job.text);
    await waitForState(gw, keys.client, job.body.id, 'released');
    const run = await gw.call('POST', '/v1/models/readmission/batches', keys.client, {
      input: { path: 'inputs/discharges.ndjson', format: 'ndjson' },
    });
    assert.equal(run.status, 202, run.text);
    await waitFor(
      async () => (await gw.call('GET', `/v1/batch-reviews/${run.body.id}`, keys.reviewer)).status === 200,
      'the run scored',
      60_000,
    );
    const refs = [
      { requestId: sync.body.requestId },
      { jobId: job.body.id },
      { batch: { runId: run.body.id, rowId: 'enc-0001' } },
    ];
    for (const ref of refs) {
      const other = await report(keys.other, ref);
      assert.equal(other.status, 404, `${JSON.stringify(ref)}: ${other.text}`);
      assert.equal(other.body.score, undefined);
      // it changed nothing: the owner's own report is the first, and a different outcome is no conflict
      const own = await report(keys.client, ref, false);
      assert.equal(own.status, 201, `${JSON.stringify(ref)}: ${own.text}`);
    }
    // a reviewer (the clinician who saw what happened) reports on any prediction of its models
    const second = await gw.predict('news2', keys.client, [NEWS2_INSTANCE]);
    assert.equal((await report(keys.reviewer, { requestId: second.body.requestId })).status, 201);
  });
});
