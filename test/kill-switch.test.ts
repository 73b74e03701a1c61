/**
 * The kill switch, on real Redis, BullMQ and onnxruntime: a suspended version (or whole model) answers 503
 * `model_suspended` with the no-score action on two gateway replicas sharing a Redis prefix (replica B applies it
 * on its next routing poll, at most a second later: shown with mocked interval timers); a suspended canary sends its
 * share to the primary; async jobs wait while suspended and are scored once resumed; a scheduled batch slot that
 * falls while suspended is skipped and recorded, and a run in progress pauses at its checkpoint; everything audited.
 */
import assert from 'node:assert/strict';
import { after, before, describe, mock, test } from 'node:test';
import { QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { NO_SCORE_ACTION } from '../src/serving/scorer.ts';
import { startWorkers } from '../workers/index.ts';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  fireSlot,
  HANG_GUARD_MS,
  MODEL,
  makeKeys,
  makePrefix,
  placeDischarges,
  REDIS_URL,
  removeDir,
  SICK_VITALS,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForRun,
} from './support/index.ts';

const VITALS = SICK_VITALS;

describe('kill switch on the sync tier, two replicas', { timeout: HANG_GUARD_MS }, () => {
  const keys = makeKeys();
  const prefix = makePrefix('kill-switch');
  let modelsDir: string;
  let a: TestGateway;
  let b: TestGateway;
  let draw = Math.random;

  before(async () => {
    modelsDir = await tempModels({
      [MODEL]: (m) => {
        delete m.routing.shadow;
      },
    });
    a = await buildGateway({ prefix, keys, modelsDir, random: () => draw() });
    // replica B follows at the default interval (one second)
    b = await buildGateway({ prefix, keys, modelsDir });
  });

  after(async () => {
    mock.timers.reset();
    await a?.close();
    await b?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  const url = `/v1/models/${MODEL}`;

  test('suspending needs a reviewer or admin, a reason and a known version; resuming needs an admin', async () => {
    const cases: Array<[string, string, unknown, number, string]> = [
      ['suspend', keys.client, { reason: 'x' }, 403, 'forbidden'],
      ['suspend', keys.reviewer, {}, 400, 'invalid_request'],
      ['suspend', keys.reviewer, { reason: '  ' }, 400, 'invalid_request'],
      ['suspend', keys.reviewer, { reason: 'x', version: '9' }, 400, 'invalid_request'],
      ['suspend', keys.reviewer, { reason: 'x', extra: 1 }, 400, 'invalid_request'],
      ['resume', keys.reviewer, { reason: 'x' }, 403, 'forbidden'],
      ['resume', keys.admin, { reason: 'nothing to resume' }, 409, 'invalid_state'],
    ];
    for (const [action, key, body, status, code] of cases) {
      const res = await a.call('POST', `${url}/${action}`, key, body);
      assert.equal(res.status, status, `${action} ${JSON.stringify(body)}: ${res.text}`);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      assert.equal(res.body.code, code);
    }
    assert.equal((await a.predict(MODEL, keys.client, [VITALS])).status, 200);
  });

  test('a suspended version answers 503 model_suspended at once here, and on replica B within a second', async () => {
    // replica B's follow timer is mocked: only its one-second tick can bring the change there
    mock.timers.enable({ apis: ['setInterval'] });
    b.gateway.services.catalog.follow(1000);

    const res = await a.call('POST', `${url}/suspend`, keys.reviewer, {
      version: '1',
      reason: 'INC-77: scores drifting high on ward 4',
    });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.body.suspension.version, '1');
    assert.equal(res.body.suspension.by, 'reviewer');

    const refused = await a.predict(MODEL, keys.client, [VITALS]);
    assert.equal(refused.status, 503, refused.text);
    assert.equal(refused.headers.get('content-type'), 'application/problem+json');
    assert.equal(refused.body.code, 'model_suspended');
    assert.equal(refused.body.action, NO_SCORE_ACTION);
    assert.equal(refused.body.version, '1');
    assert.match(refused.body.detail, /INC-77/);

    mock.timers.tick(999);
    assert.equal((await b.predict(MODEL, keys.client, [VITALS])).status, 200, 'B has not polled yet');
    mock.timers.tick(1);
    await waitFor(() => b.gateway.services.catalog.suspension(MODEL, '1') !== undefined, 'B to apply the tick');
    const onB = await b.predict(MODEL, keys.client, [VITALS]);
    assert.equal(onB.status, 503, onB.text);
    assert.equal(onB.body.code, 'model_suspended');
    mock.timers.reset();
    b.gateway.services.catalog.follow(25);

    const status = await b.call('GET', `${url}/suspension`, keys.client);
    assert.equal(status.status, 200);
    assert.deepEqual(
      status.body.suspensions.map((s: { version?: string; reason: string }) => [s.version, s.reason]),
      [['1', 'INC-77: scores drifting high on ward 4']],
    );
    const metrics = await b.metrics();
    assert.match(metrics, /triage_model_suspended\{model="deterioration",version="1"\} 1/);

    const again = await b.call('POST', `${url}/suspend`, keys.admin, { version: '1', reason: 'twice' });
    assert.equal(again.status, 409, again.text);
  });

  test('a suspended canary sends its share to the primary; a suspended primary refuses', async () => {
    const canary = await a.call('PUT', `${url}/routing/canary`, keys.admin, {
      version: '2',
      weight: 50,
      reason: 'CR-9: v2 canary',
    });
    assert.equal(canary.status, 200, canary.text);
    draw = () => 0.1; // below the weight: the canary's share
    const v2 = await a.predict(MODEL, keys.client, [VITALS]);
    assert.equal(v2.status, 200, v2.text);
    assert.equal(v2.body.version, '2');
    draw = () => 0.9;
    assert.equal((await a.predict(MODEL, keys.client, [VITALS])).status, 503, 'the primary (1) is suspended');

    assert.equal(
      (await a.call('POST', `${url}/resume`, keys.admin, { version: '1', reason: 'INC-77 closed' })).status,
      200,
    );
    assert.equal(
      (await a.call('POST', `${url}/suspend`, keys.reviewer, { version: '2', reason: 'INC-78: canary' })).status,
      201,
    );
    draw = () => 0.1;
    const back = await a.predict(MODEL, keys.client, [VITALS]);
    assert.equal(back.status, 200, back.text);
    assert.equal(back.body.version, '1', 'the canary share went to the primary');
    draw = Math.random;
    await a.call('POST', `${url}/resume`, keys.admin, { version: '2', reason: 'INC-78 closed' });
    await a.call('PUT', `${url}/routing/canary`, keys.admin, { weight: 0, reason: 'CR-9 done' });
  });

  test('a whole model is suspended and resumed on both replicas; each change audited with who and why', async () => {
    const res = await b.call('POST', `${url}/suspend`, keys.admin, { reason: 'INC-80: lab feed outage' });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.body.suspension.version, undefined);
    await waitFor(() => a.gateway.services.catalog.suspension(MODEL, '2') !== undefined, 'A to follow');
    for (const gw of [a, b]) {
      const r = await gw.predict(MODEL, keys.client, [VITALS]);
      assert.equal(r.status, 503, r.text);
      assert.match(r.body.detail, /model "deterioration" is suspended: INC-80/);
    }
    const resumed = await a.call('POST', `${url}/resume`, keys.admin, { reason: 'INC-80: feed restored' });
    assert.equal(resumed.status, 200, resumed.text);
    assert.equal(resumed.body.resumed.reason, 'INC-80: lab feed outage');
    await waitFor(() => b.gateway.services.catalog.suspension(MODEL, '1') === undefined, 'B to follow the resume');
    for (const gw of [a, b]) assert.equal((await gw.predict(MODEL, keys.client, [VITALS])).status, 200);

    const audit = (await allAudit(a, keys.admin)).filter((e) => e.action?.startsWith('model.'));
    assert.deepEqual(
      audit.map((e) => [e.action, e.actor, e.target, e.reason]),
      [
        ['model.suspend', 'reviewer', 'deterioration@1', 'INC-77: scores drifting high on ward 4'],
        ['model.resume', keys.adminId, 'deterioration@1', 'INC-77 closed'],
        ['model.suspend', 'reviewer', 'deterioration@2', 'INC-78: canary'],
        ['model.resume', keys.adminId, 'deterioration@2', 'INC-78 closed'],
        ['model.suspend', keys.adminId, 'deterioration', 'INC-80: lab feed outage'],
        ['model.resume', keys.adminId, 'deterioration', 'INC-80: feed restored'],
      ],
    );
  });

  test('a manifest reload does not lift a suspension', async () => {
    await a.call('POST', `${url}/suspend`, keys.admin, { version: '1', reason: 'INC-81' });
    await a.gateway.services.catalog.replace(a.gateway.services.catalog.list().map((m) => m.loaded));
    assert.equal((await a.predict(MODEL, keys.client, [VITALS])).status, 503);
    await a.call('POST', `${url}/resume`, keys.admin, { version: '1', reason: 'INC-81 closed' });
  });
});

describe('kill switch on the job tiers: async jobs wait, batch slots are skipped, runs pause', {
  timeout: 120_000,
}, () => {
  const keys = makeKeys();
  const prefix = makePrefix('kill-switch-jobs');
  let dataDir: string;
  let gw: TestGateway;
  let workers: { close(): Promise<void> };
  const queueEvents: QueueEvents[] = [];
  const deferred = new Set<string>();
  const connections: Redis[] = [];

  before(async () => {
    dataDir = await tempDir('kill-switch');
    await placeDischarges(dataDir);
    gw = await buildGateway({ prefix, keys, dataDir });
    const s = gw.gateway.services;
    // every job a worker deferred (moved to delayed), seen as BullMQ's own events: no polling for a short state
    // (the inference queue of note-triage's shard, the batch queue of readmission's: each model's jobs queue in its
    // own shard)
    for (const [queue, queuePrefix] of [
      ['inference', s.keyspace.shard('note-triage')],
      ['batch', s.keyspace.shard('readmission')],
    ] as const) {
      const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
      connections.push(connection);
      const events = new QueueEvents(queue, { connection, prefix: queuePrefix });
      events.on('delayed', ({ jobId }) => void deferred.add(jobId));
      await events.waitUntilReady();
      queueEvents.push(events);
    }
    // a waiting job looks again every 50 ms, so the resume is seen quickly
    workers = startWorkers(['inference', 'batch'], { ...s, config: { ...s.config, suspendedRecheckMs: 50 } });
  });

  after(async () => {
    await workers?.close();
    await Promise.all(queueEvents.map((e) => e.close()));
    for (const c of connections) c.disconnect(); // BullMQ leaves a connection it was given open
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(dataDir);
  });

  const suspend = async (model: string, reason: string) => {
    const res = await gw.call('POST', `/v1/models/${model}/suspend`, keys.reviewer, { reason });
    assert.equal(res.status, 201, res.text);
  };
  const resume = async (model: string) => {
    const res = await gw.call('POST', `/v1/models/${model}/resume`, keys.admin, { reason: 'resolved' });
    assert.equal(res.status, 200, res.text);
  };

  test('an async job waits (queued, not scored) while suspended, and is scored once resumed', async () => {
    await suspend('note-triage', 'INC-90: wrong urgency labels');
    const submitted = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, {
      input: { text: 'Crushing central chest pain, troponin raised.' },
    });
    assert.equal(submitted.status, 202, submitted.text);
    const id = submitted.body.id as string;
    const job = await gw.gateway.services.queues.inference.getJob(id);
    assert.ok(job);
    // the worker has taken it and put it back (delayed), spending no attempt
    await waitFor(() => deferred.has(id), 'the worker to defer the job');
    const waiting = await gw.call('GET', `/v1/jobs/${id}`, keys.client);
    assert.equal(waiting.body.state, 'queued');
    assert.equal((await gw.gateway.services.queues.inference.getJob(id))?.attemptsMade, 0);

    await resume('note-triage');
    await waitFor(
      async () => (await gw.call('GET', `/v1/jobs/${id}`, keys.client)).body.state === 'awaiting_review',
      'the job to be scored once resumed',
      30_000,
    );
  });

  test('a scheduled slot that falls while suspended is skipped, and its run says why', async () => {
    const put = await gw.call('PUT', '/v1/schedules/ks-slot', keys.admin, {
      model: 'readmission',
      cron: '0 0 1 1 *',
      timezone: 'UTC',
      input: { path: 'inputs/discharges.ndjson', format: 'ndjson' },
      missed: 'catch-up',
    });
    assert.equal(put.status, 201, put.text);
    await suspend('readmission', 'INC-91: discharge feed duplicated');
    const slot = Math.floor(Date.now() / 1000) * 1000;
    const { job, runId } = await fireSlot(gw, 'readmission', 'ks-slot', slot);
    await waitFor(async () => (await job.getState()) === 'completed', 'the slot to be handled', 30_000);
    const run = await gw.gateway.services.runs.get(runId);
    assert.equal(run?.state, 'skipped');
    assert.match(run?.error ?? '', /model suspended at the slot .*INC-91/);
    assert.equal(run?.rowsDone, 0);
    await resume('readmission');
  });

  test('an on-demand run submitted while suspended waits queued, then completes once resumed', async () => {
    await suspend('readmission', 'INC-92');
    const submitted = await gw.call('POST', '/v1/models/readmission/batches', keys.client, {
      input: { path: 'inputs/discharges.ndjson', format: 'ndjson' },
    });
    assert.equal(submitted.status, 202, submitted.text);
    const runId = String(submitted.headers.get('content-location')).split('/').pop() as string;
    const job = await gw.gateway.services.queues.batch.getJob(`run-${runId}`);
    assert.ok(job);
    await waitFor(() => deferred.has(`run-${runId}`), 'the run to be deferred', 30_000);
    const paused = await gw.gateway.services.runs.get(runId);
    assert.equal(paused?.state, 'queued');
    assert.equal(paused?.scored, 0);
    await resume('readmission');
    const { final } = await waitForRun(gw, keys.client, runId);
    assert.equal(final.status, 200, final.text);
  });
});
