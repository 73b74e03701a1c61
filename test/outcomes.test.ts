/**
 * Outcomes joined to what was predicted: the figures equal a hand-computed table; POST /v1/outcomes joins by request
 * id (and instance index), job id and batch row on real Redis, BullMQ and onnxruntime, is idempotent, validated and
 * audited, and the monitoring report shows the figures per version at the threshold approved when predicting.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { outcomeMetrics } from '../src/outcomes/metrics.ts';
import { PREDICTION_RETENTION_DAYS } from '../src/outcomes/prediction-log.ts';
import { KeySpace } from '../src/platform/keyspace.ts';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  download,
  HANG_GUARD_MS,
  MODEL,
  makeKeys,
  makePrefix,
  metricValue,
  news2Row,
  placeDischarges,
  REDIS_URL,
  type Reply,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  type Vitals,
  waitFor,
  waitForRun,
  waitForState,
} from './support/index.ts';

const HOUR = 3_600_000;

describe('outcome figures', () => {
  test('sensitivity, specificity, PPV, Brier, calibration and AUROC equal the hand-computed table', () => {
    // score, outcome; threshold 0.5 → TP 0.9 0.8 0.6 | FP 0.7 0.55 | FN 0.35 | TN 0.4 0.2 0.1 0.05
    const table: Array<[number, boolean]> = [
      [0.9, true],
      [0.8, true],
      [0.7, false],
      [0.6, true],
      [0.55, false],
      [0.4, false],
      [0.35, true],
      [0.2, false],
      [0.1, false],
      [0.05, false],
    ];
    const rows = table.map(([score, outcome], i) => ({ score, outcome, threshold: 0.5, delayMs: (i + 1) * HOUR }));
    const m = outcomeMetrics(rows, { probability: true, minPerClass: 4 });
    assert.deepEqual(m.confusion, { tp: 3, fp: 2, tn: 4, fn: 1 });
    assert.equal(m.sensitivity, 0.75); // 3 / 4
    assert.equal(m.specificity, 0.666667); // 4 / 6
    assert.equal(m.ppv, 0.6); // 3 / 5
    // Σ (s − y)² = .01 + .04 + .49 + .16 + .3025 + .16 + .4225 + .04 + .01 + .0025 = 1.6375
    assert.equal(m.brier, 0.16375);
    // positives outscore negatives in 6 + 6 + 5 + 3 = 20 of 4 × 6 = 24 pairs
    assert.equal(m.auroc, 0.833333);
    assert.equal(m.calibration?.length, 10);
    assert.deepEqual(m.calibration?.[3], { from: 0.3, to: 0.4, count: 1, meanPredicted: 0.35, observedRate: 1 });
    assert.deepEqual(m.labelDelayHours, { median: 6, p90: 10 });
    // not enough labels of each class: no AUROC; a points score: no Brier or calibration
    assert.equal(outcomeMetrics(rows, { probability: true, minPerClass: 5 }).auroc, null);
    const points = outcomeMetrics(rows, { probability: false, minPerClass: 4 });
    assert.deepEqual([points.brier, points.calibration, points.sensitivity], [null, null, 0.75]);
    // ties share their rank: all equal scores give 0.5
    assert.equal(
      outcomeMetrics(
        rows.map((r) => ({ ...r, score: 0.5 })),
        { probability: true, minPerClass: 4 },
      ).auroc,
      0.5,
    );
  });
});

describe('POST /v1/outcomes on the sync tier', { timeout: HANG_GUARD_MS }, () => {
  const keys = makeKeys();
  const prefix = makePrefix('outcomes');
  let modelsDir: string;
  let gw: TestGateway;

  before(async () => {
    modelsDir = await tempModels({
      [MODEL]: (m) => {
        delete m.routing.shadow;
      },
    });
    gw = await buildGateway({ prefix, keys, modelsDir });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  const vitals = (i: number): Vitals => ({
    age: 40 + (i % 5) * 10,
    respirationRate: 14 + (i % 7) * 2,
    spo2: 98 - (i % 6),
    systolicBP: 130 - (i % 4) * 10,
    pulse: 70 + (i % 8) * 6,
    temperature: 36.8 + (i % 3) * 0.5,
    onOxygen: i % 9 === 0,
  });
  const scored: Array<{ requestId: string; score: number }> = [];
  const observedAt = () => new Date(Date.now() + 1000).toISOString();

  test('outcomes by request id join to the version and score answered; the figures follow', async () => {
    for (let i = 0; i < 30; i++) {
      const requestId = randomUUID();
      const res = await gw.predict(MODEL, keys.client, [vitals(i)], { 'x-request-id': requestId });
      assert.equal(res.status, 200, res.text);
      scored.push({ requestId, score: res.body.predictions[0].deteriorationRisk });
    }
    // the outcome: observed deterioration for the higher half of the scores, and for two of the lower half
    const sorted = [...scored].sort((a, b) => a.score - b.score);
    const positive = new Set([...sorted.slice(15), sorted[3], sorted[8]].map((s) => s?.requestId));
    for (const s of scored) {
      const res = await gw.call('POST', '/v1/outcomes', keys.client, {
        requestId: s.requestId,
        outcome: positive.has(s.requestId),
        observedAt: observedAt(),
      });
      assert.equal(res.status, 201, res.text);
      assert.deepEqual(
        [res.body.model, res.body.version, res.body.score, res.body.threshold],
        [MODEL, '1', s.score, 0.3],
      );
    }
    const report = await gw.call('GET', `/v1/models/${MODEL}/monitoring`, keys.client);
    assert.equal(report.status, 200, report.text);
    const figures = report.body.versions.find((v: { version: string }) => v.version === '1').outcomes;
    let tp = 0;
    let fp = 0;
    let fn = 0;
    for (const s of scored) {
      const y = positive.has(s.requestId);
      if (s.score >= 0.3 && y) tp++;
      else if (s.score >= 0.3) fp++;
      else if (y) fn++;
    }
    assert.equal(figures.labelled, 30);
    assert.equal(figures.positives, 17);
    assert.deepEqual(figures.confusion, { tp, fp, fn, tn: 30 - tp - fp - fn });
    assert.equal(figures.sensitivity, Math.round((tp / (tp + fn)) * 1e6) / 1e6);
    assert.equal(figures.ppv, tp + fp > 0 ? Math.round((tp / (tp + fp)) * 1e6) / 1e6 : null);
    const brier = scored.reduce((sum, s) => sum + (s.score - (positive.has(s.requestId) ? 1 : 0)) ** 2, 0) / 30;
    assert.equal(figures.brier, Math.round(brier * 1e6) / 1e6);
    assert.ok(figures.auroc > 0.5, 'the positives were chosen mostly among the high scores');
    const v2 = report.body.versions.find((v: { version: string }) => v.version === '2').outcomes;
    assert.equal(v2.labelled, 0);
    const metrics = await gw.metrics();
    const labels = { model: MODEL, version: '1' };
    assert.equal(metricValue(metrics, 'triage_outcome_labelled', labels), 30);
    assert.equal(metricValue(metrics, 'triage_outcome_sensitivity', labels), figures.sensitivity);
    assert.equal(metricValue(metrics, 'triage_outcome_brier', labels), figures.brier);
    assert.equal(metricValue(metrics, 'triage_outcome_labelled', { model: MODEL, version: '2' }), undefined);
  });

  test('an outcome observed in the future is refused; each outcome audited once, naming its prediction', async () => {
    const first = scored[0] as { requestId: string };
    const again = await gw.call('POST', '/v1/outcomes', keys.client, {
      requestId: first.requestId,
      outcome: false,
      observedAt: '2099-01-01T00:00:00Z',
    });
    assert.equal(again.status, 400, 'in the future');
    const audit = (await allAudit(gw, keys.admin)).filter((e) => e.action === 'outcome.record');
    assert.equal(audit.length, 30);
    assert.ok(audit.every((e) => e.actor === 'client' && e.model === MODEL));
    assert.deepEqual(audit.map((e) => e.target).sort(), scored.map((s) => `outcome:request:${s.requestId}#0`).sort());
  });

  test('a multi-instance request joins by index; replays are idempotent; conflicts and bad bodies are refused', async () => {
    const requestId = randomUUID();
    const res = await gw.predict(MODEL, keys.client, [vitals(1), vitals(2)], { 'x-request-id': requestId });
    assert.equal(res.status, 200, res.text);
    const at = observedAt();
    const body = { requestId, index: 1, outcome: true, observedAt: at };
    const created = await gw.call('POST', '/v1/outcomes', keys.client, body);
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.score, res.body.predictions[1].deteriorationRisk);
    assert.equal((await gw.call('POST', '/v1/outcomes', keys.client, body)).status, 200);
    const conflict = await gw.call('POST', '/v1/outcomes', keys.client, { ...body, outcome: false });
    assert.equal(conflict.status, 409, conflict.text);
    assert.equal(conflict.body.code, 'outcome_conflict');
    const bad: Array<[unknown, number]> = [
      [{ requestId: randomUUID(), outcome: true, observedAt: at }, 404],
      [{ requestId, jobId: 'x', outcome: true, observedAt: at }, 400],
      [{ requestId, outcome: 'yes', observedAt: at }, 400],
      [{ requestId, outcome: true, observedAt: 'yesterday' }, 400],
      [{ requestId, outcome: true, observedAt: '2000-01-01T00:00:00Z' }, 400],
      [{ requestId, index: -1, outcome: true, observedAt: at }, 400],
      [{ requestId, outcome: true, observedAt: at, patientId: 'x' }, 400],
    ];
    for (const [b, status] of bad) {
      const r = await gw.call('POST', '/v1/outcomes', keys.client, b);
      assert.equal(r.status, status, `${JSON.stringify(b)}: ${r.text}`);
      assert.equal(r.headers.get('content-type'), 'application/problem+json');
    }
  });

  test('an outcome record is kept only while its prediction can be joined; records kept for good before are bounded', async () => {
    const redis = new Redis(REDIS_URL);
    try {
      const shard = new KeySpace(prefix, [MODEL]).shard(MODEL);
      // a record in the unbounded hash of the release before, with no expiry
      const model = gw.deps.catalog.get(MODEL);
      assert.ok(model);
      const threshold = model.manifest.output.threshold;
      const at = Date.now() - HOUR;
      const [oldRef, requestId] = [randomUUID(), randomUUID()];
      await redis.hset(
        `${shard}:predictions:${Math.floor(Date.now() / 86_400_000)}`,
        `request:${oldRef}#0`,
        `1|0.9|${threshold}|${at}|${MODEL}`,
      );
      const old = {
        model: MODEL,
        version: '1',
        score: 0.9,
        threshold,
        at,
        outcome: true,
        observedAt: at + 1,
        recordedBy: 'x',
      };
      await redis.hset(`${shard}:outcomes`, `request:${oldRef}#0`, JSON.stringify(old));
      assert.equal(await redis.ttl(`${shard}:outcomes`), -1);

      const res = await gw.predict(MODEL, keys.client, [vitals(3)], { 'x-request-id': requestId });
      assert.equal(res.status, 200, res.text);
      const body = { requestId, outcome: true, observedAt: observedAt() };
      assert.equal((await gw.call('POST', '/v1/outcomes', keys.client, body)).status, 201);
      // the record sits in its prediction day's hash, which expires after the prediction log's retention
      const day = Math.floor(Date.now() / 86_400_000);
      const dated = `${shard}:outcome-records:${day}`;
      assert.ok(await redis.hget(dated, `request:${requestId}#0`), 'recorded under the prediction day');
      const ttl = await redis.ttl(dated);
      const retention = (PREDICTION_RETENTION_DAYS + 2) * 86_400;
      assert.ok(ttl > (PREDICTION_RETENTION_DAYS + 1) * 86_400 - 60 && ttl <= retention, `ttl ${ttl}`);
      assert.equal(
        await redis.hget(`${shard}:outcomes`, `request:${requestId}#0`),
        null,
        'the old hash is not written',
      );
      // replays are still answered from the record, and the old hash still guards the outcomes it holds
      assert.equal((await gw.call('POST', '/v1/outcomes', keys.client, body)).status, 200);
      assert.equal((await gw.call('POST', '/v1/outcomes', keys.client, { ...body, outcome: false })).status, 409);
      const oldBody = { requestId: oldRef, outcome: false, observedAt: new Date(at + 1).toISOString() };
      assert.equal((await gw.call('POST', '/v1/outcomes', keys.client, oldBody)).status, 409);
      // and the old hash now expires too: nothing it can match outlives the retention
      const oldTtl = await redis.ttl(`${shard}:outcomes`);
      assert.ok(oldTtl > 0 && oldTtl <= (PREDICTION_RETENTION_DAYS + 1) * 86_400, `old ttl ${oldTtl}`);
    } finally {
      redis.disconnect();
    }
  });

  test('upgrading: predictions and outcomes kept under the global tag before model shards are still joined and counted', async () => {
    const redis = new Redis(REDIS_URL);
    try {
      const model = gw.deps.catalog.get(MODEL);
      assert.ok(model);
      const threshold = model.manifest.output.threshold;
      const at = Date.now() - HOUR;
      const [logged, recorded] = [randomUUID(), randomUUID()];
      // what a release before model shards wrote: the day's prediction log, an outcome list and the outcome records
      await redis.hset(
        `${prefix}:predictions:${Math.floor(Date.now() / 86_400_000)}`,
        `request:${logged}#0`,
        `1|0.42|${threshold}|${at}|${MODEL}`,
        `request:${recorded}#0`,
        `1|0.9|${threshold}|${at}|${MODEL}`,
      );
      const before = (await gw.deps.outcomes.figures(model, '1')).labelled;
      const observedAt = at + 60_000;
      await redis.rpush(`${prefix}:outcomes:${MODEL}:1`, `0.9,${threshold},1,${at},${observedAt}`);
      const old = { model: MODEL, version: '1', score: 0.9, threshold, at, outcome: true, observedAt, recordedBy: 'x' };
      await redis.hset(`${prefix}:outcomes`, `request:${recorded}#0`, JSON.stringify(old));

      const joined = await gw.call('POST', '/v1/outcomes', keys.client, {
        requestId: logged,
        outcome: false,
        observedAt: new Date(observedAt).toISOString(),
      });
      assert.equal(joined.status, 201, joined.text);
      assert.equal(joined.body.score, 0.42);
      const body = { requestId: recorded, outcome: true, observedAt: new Date(observedAt).toISOString() };
      assert.equal((await gw.call('POST', '/v1/outcomes', keys.client, body)).status, 200, 'recorded before: kept');
      assert.equal((await gw.call('POST', '/v1/outcomes', keys.client, { ...body, outcome: false })).status, 409);
      // the figures count the old list's row and the new outcome
      const after = await gw.deps.outcomes.figures(model, '1');
      assert.equal(after.labelled, before + 2);
    } finally {
      redis.disconnect();
    }
  });
});

describe('outcomes of jobs and batch rows', { timeout: HANG_GUARD_MS }, () => {
  const keys = makeKeys();
  const prefix = makePrefix('outcomes-jobs');
  let dataDir: string;
  let gw: TestGateway;

  before(async () => {
    dataDir = await tempDir('outcomes');
    await placeDischarges(dataDir);
    gw = await buildGateway({ prefix, keys, dataDir, workers: ['inference', 'batch'] });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(dataDir);
  });

  test('by job id and by batch row, joined to the score the job and the output file hold', async () => {
    const job = await gw.call('POST', '/v1/models/news2/jobs', keys.client, {
      input: { instances: [news2Row(3)] },
    });
    assert.equal(job.status, 202, job.text);
    const id = job.body.id as string;
    let view: Reply | undefined;
    await waitFor(async () => {
      view = await gw.call('GET', `/v1/jobs/${id}`, keys.client);
      return view.body.state === 'released';
    }, 'the job to be released');
    const jobOutcome = await gw.call('POST', '/v1/outcomes', keys.client, {
      jobId: id,
      outcome: true,
      observedAt: new Date().toISOString(),
    });
    assert.equal(jobOutcome.status, 201, jobOutcome.text);
    assert.equal(jobOutcome.body.score, view?.body.result.output.predictions[0].news2Total);

    const submitted = await gw.call('POST', '/v1/models/readmission/batches', keys.client, {
      input: { path: 'inputs/discharges.ndjson', format: 'ndjson' },
    });
    const runId = String(submitted.headers.get('content-location')).split('/').pop() as string;
    const { final } = await waitForRun(gw, keys.client, runId);
    assert.equal(final.status, 200, final.text);
    const rows = await download(gw, keys.client, final.body.output[0].url);
    const row = rows[0] as { id: string; prediction: Record<string, number> };
    const res = await gw.call('POST', '/v1/outcomes', keys.reviewer, {
      batch: { runId, rowId: row.id },
      outcome: false,
      observedAt: new Date().toISOString(),
    });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.body.model, 'readmission');
    const audited = (await gw.call('GET', '/v1/audit?limit=1000', keys.admin)).body.entries.at(-1);
    assert.equal(audited.action, 'outcome.record');
    assert.ok(!audited.target.includes(row.id), 'a batch row id (an encounter id, maybe) is stored only as a hash');
    assert.equal(res.body.score, Object.values(row.prediction)[0]);
  });
});

describe("another client's predictions", { timeout: HANG_GUARD_MS }, () => {
  const keys = makeKeys();
  const prefix = makePrefix('outcomes-owner');
  let dataDir: string;
  let gw: TestGateway;
  const observed = () => new Date().toISOString();

  before(async () => {
    dataDir = await tempDir('outcomes-owner');
    await placeDischarges(dataDir);
    gw = await buildGateway({
      prefix,
      keys,
      dataDir,
      workers: ['inference', 'batch'],
      only: ['news2', 'note-triage', 'readmission'],
    });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(dataDir);
  });

  test('a client may not name them: 404 as on GET /v1/jobs/:id, and no score in the answer; nor a held job of its own', async () => {
    const job = await gw.call('POST', '/v1/models/news2/jobs', keys.client, { input: { instances: [news2Row(3)] } });
    assert.equal(job.status, 202, job.text);
    const jobId = job.body.id as string;
    await waitForState(gw, keys.client, jobId, 'released');
    const submitted = await gw.call('POST', '/v1/models/readmission/batches', keys.client, {
      input: { path: 'inputs/discharges.ndjson', format: 'ndjson' },
    });
    const runId = String(submitted.headers.get('content-location')).split('/').pop() as string;
    const { final } = await waitForRun(gw, keys.client, runId);
    assert.equal(final.status, 200, final.text);
    const rowId = ((await download(gw, keys.client, final.body.output[0].url))[0] as { id: string }).id;

    for (const named of [{ jobId }, { batch: { runId, rowId } }]) {
      const res = await gw.call('POST', '/v1/outcomes', keys.other, {
        ...named,
        outcome: true,
        observedAt: observed(),
      });
      assert.equal(res.status, 404, res.text);
      assert.equal(res.body.code, 'not_found');
      assert.ok(!('score' in res.body), res.text);
    }

    // held for clinician review: its score was never served to the client, so it is not served here either
    const held = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, {
      input: { text: 'Crushing chest pain, troponin raised.' },
    });
    assert.equal(held.status, 202, held.text);
    const heldId = held.body.id as string;
    await waitForState(gw, keys.client, heldId, 'awaiting_review');
    const early = await gw.call('POST', '/v1/outcomes', keys.client, {
      jobId: heldId,
      outcome: true,
      observedAt: observed(),
    });
    assert.equal(early.status, 409, early.text);
    assert.equal(early.body.code, 'awaiting_review');
    assert.ok(!('score' in early.body), early.text);

    // their own client, and a reviewer, still record them
    for (const [key, named] of [
      [keys.client, { jobId }],
      [keys.client, { batch: { runId, rowId } }],
      [keys.reviewer, { jobId: heldId }],
    ] as const) {
      const res = await gw.call('POST', '/v1/outcomes', key, { ...named, outcome: true, observedAt: observed() });
      assert.equal(res.status, 201, res.text);
    }
  });
});
