/**
 * Monitoring per model version on every tier, on real Redis, BullMQ and onnxruntime: input drift (PSI against the
 * reference profile built with the version) stays low for traffic like the reference and rises on the shifted
 * feature only; the output histogram and the share above the threshold match what callers were answered; rows with
 * assumed defaults are counted; review overrides per version; batch rows counted by the batch thread; two replicas
 * add to the same windows; the buckets hold counts only; and with monitoring off nothing is recorded.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { wardVitals } from '../models/profiles.ts';
import { binOf, psi, quantileEdges } from '../src/monitoring/psi.ts';
import { MonitoringRecorder } from '../src/monitoring/recorder.ts';
import { KeySpace } from '../src/platform/keyspace.ts';
import { loadModels, ManifestError } from '../src/registry/load.ts';
import { ModelCatalog } from '../src/serving/catalog.ts';
import {
  buildGateway,
  deletePrefix,
  HANG_GUARD_MS,
  MODEL,
  MODELS_DIR,
  makeKeys,
  makePrefix,
  metricValue,
  placeDischarges,
  REDIS_URL,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForRun,
} from './support/index.ts';

const DETERIORATION = ['age', 'respirationRate', 'spo2', 'systolicBP', 'pulse', 'temperature', 'onOxygen'];
const vitals = (rows: number, seed: number) =>
  wardVitals(rows, seed).map((r) => Object.fromEntries(DETERIORATION.map((k) => [k, r[k]])));

describe('PSI', () => {
  test('equals a hand-computed value; identical distributions give 0; bins by edges', () => {
    // expected 0.5/0.5, actual 0.8/0.2: (0.8-0.5)ln(0.8/0.5) + (0.2-0.5)ln(0.2/0.5) = 0.141002 + 0.274887
    assert.equal(Math.round((psi([0.5, 0.5], [80, 20]) as number) * 1e6) / 1e6, 0.415888);
    assert.equal(psi([0.25, 0.75], [25, 75]), 0);
    assert.equal(psi([0.5, 0.5], [0, 0]), undefined);
    assert.deepEqual(
      [0, 1, 1.5, 2, 9].map((v) => binOf([1, 2], v)),
      [0, 1, 1, 2, 2],
    );
    assert.deepEqual(quantileEdges([1, 1, 1, 1, 2, 2, 3, 3, 4, 5]), [2, 3, 4, 5]);
  });

  test('a reference profile that does not fit its manifest stops the load, naming the file', async () => {
    const dir = await tempModels({ deterioration: null });
    try {
      await writeFile(
        path.join(dir, 'deterioration', '1', 'reference-profile.json'),
        JSON.stringify({
          model: 'deterioration',
          version: '1',
          source: 's',
          rows: 1,
          features: { heartRate: { edges: [], expected: [1] } },
        }),
      );
      await assert.rejects(loadModels(dir, 5000), (err: Error) => {
        assert.ok(err instanceof ManifestError);
        assert.match(err.message, /1\/reference-profile\.json: profiles feature "heartRate"/);
        return true;
      });
    } finally {
      await removeDir(dir);
    }
  });
});

test('a review decision counted before the first scoring of a flush does not lose the feature bins', async () => {
  const prefix = makePrefix('monitoring-unit');
  const redis = new Redis(REDIS_URL);
  const shard = new KeySpace(prefix).shard('deterioration');
  const recorder = new MonitoringRecorder({ redis, keys: new KeySpace(prefix), flushEveryMs: 0 });
  try {
    const catalog = ModelCatalog.fixed(await loadModels(MODELS_DIR, 5000));
    const model = catalog.get('deterioration');
    assert.ok(model);
    recorder.recordDecision('deterioration', '1', 'amend');
    const data = Float32Array.from([70, 18, 96, 120, 80, 37, 0]);
    const result = { version: '1', predictions: [{ deteriorationRisk: 0.1, aboveThreshold: false }] };
    recorder.onScore({ model, tier: 'sync', input: { data, rows: 1 }, result, ms: 0.4 });
    await recorder.flush();
    const [key] = await redis.keys(`${shard}:monitor:1:5m:*`);
    const fields = await redis.hgetall(key as string);
    assert.equal(fields['d:amend'], '1');
    assert.equal(Object.keys(fields).filter((f) => f.startsWith('f:')).length, 7);
  } finally {
    await recorder.close();
    redis.disconnect();
    await deletePrefix(prefix);
  }
});

describe('monitoring on the sync tier, two replicas', { timeout: HANG_GUARD_MS }, () => {
  const keys = makeKeys();
  const prefix = makePrefix('monitoring');
  let modelsDir: string;
  let a: TestGateway;
  let b: TestGateway;

  before(async () => {
    modelsDir = await tempModels({
      [MODEL]: (m) => {
        delete m.routing.shadow;
      },
    });
    a = await buildGateway({ prefix, keys, modelsDir });
    b = await buildGateway({ prefix, keys, modelsDir });
  });

  after(async () => {
    await a?.close();
    await b?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  const flush = () => Promise.all([a, b].map((gw) => gw.gateway.services.monitoring.recorder?.flush()));
  const hour = async () => {
    const res = await a.call('GET', '/v1/models/deterioration/monitoring', keys.client);
    assert.equal(res.status, 200, res.text);
    const v1 = res.body.versions.find((v: { version: string }) => v.version === '1');
    return { body: res.body, v1, w: v1.windows.hour };
  };
  let above = 0;
  let rows = 0;
  const send = async (gw: TestGateway, instances: Record<string, unknown>[]) => {
    for (let i = 0; i < instances.length; i += 50) {
      const res = await gw.predict(MODEL, keys.client, instances.slice(i, i + 50));
      assert.equal(res.status, 200, res.text);
      for (const p of res.body.predictions) if (p.aboveThreshold) above++;
      rows += res.body.predictions.length;
    }
  };

  test('traffic like the reference, split over two replicas: every feature stable (PSI < 0.1)', async () => {
    await send(a, vitals(1000, 7));
    await send(b, vitals(1000, 8));
    await flush();
    const { body, v1, w } = await hour();
    assert.equal(body.recording, true);
    assert.equal(v1.role, 'primary');
    assert.match(v1.referenceProfile.source, /synthetic adult ward vital signs/);
    assert.equal(w.rows, 2000, 'both replicas counted');
    assert.deepEqual(w.byTier, { sync: 2000 });
    for (const [name, f] of Object.entries(w.drift.features as Record<string, { psi: number; rows: number }>)) {
      assert.equal(f.rows, 2000, name);
      assert.ok(f.psi < 0.1, `${name}: PSI ${f.psi}`);
    }
  });

  test('the output histogram and share above the threshold match what callers were answered', async () => {
    const { w } = await hour();
    assert.equal(w.output.scored, rows);
    assert.equal(w.output.aboveThresholdShare, Math.round((above / rows) * 1e6) / 1e6);
    assert.equal(w.output.histogram.length, 10);
    assert.deepEqual([w.output.histogram[0].from, w.output.histogram[9].to], [0, 1]);
    assert.equal(
      w.output.histogram.reduce((n: number, b: { count: number }) => n + b.count, 0),
      rows,
    );
    assert.equal(w.latencyMs.p50 > 0, true);
    assert.equal(w.missingOrAssumed.knownRows, rows);
    assert.equal(w.missingOrAssumed.share, 0, 'deterioration has no defaults: nothing assumed');
  });

  test('shifted traffic (tachypnoeic patients) raises the respiration-rate PSI past 0.25, and the gauge', async () => {
    const shifted = vitals(4000, 9).map((r) => ({ ...r, respirationRate: (r.respirationRate as number) + 8 }));
    await send(a, shifted);
    await flush();
    const { w } = await hour();
    const features = w.drift.features as Record<string, { psi: number }>;
    assert.ok((features.respirationRate?.psi as number) > 0.25, `respirationRate PSI ${features.respirationRate?.psi}`);
    for (const name of DETERIORATION.filter((n) => n !== 'respirationRate')) {
      assert.ok((features[name]?.psi as number) < 0.1, `${name}: PSI ${features[name]?.psi}`);
    }
    assert.equal(w.drift.maxPsi, features.respirationRate?.psi);
    const metrics = await b.metrics();
    const labels = { model: 'deterioration', version: '1', feature: 'respirationRate', window: 'hour' };
    assert.equal(metricValue(metrics, 'triage_monitoring_feature_psi', labels), features.respirationRate?.psi);
    assert.equal(
      metricValue(metrics, 'triage_monitoring_rows', { model: 'deterioration', version: '1', window: 'day' }),
      rows,
    );
  });

  test('the buckets hold counters only: no input value, score or identifier', async () => {
    const redis = new Redis(REDIS_URL);
    try {
      // in the model's shard, nothing under the global tag
      assert.deepEqual(await redis.keys(`${prefix}:monitor:*`), []);
      const keysFound = await redis.keys(`${new KeySpace(prefix).shard('deterioration')}:monitor:*`);
      assert.ok(keysFound.length >= 2);
      for (const key of keysFound) {
        assert.match(key, /:deterioration\}:monitor:1:(5m|1h):\d+$/);
        assert.ok((await redis.ttl(key)) > 0, 'buckets expire');
        for (const [field, value] of Object.entries(await redis.hgetall(key))) {
          assert.match(
            field,
            /^(calls|rows|scored|above|known|assumed|lat_sum|tier:sync|lat:\d+|s:\d+|f:[A-Za-z0-9]+:\d+)$/,
          );
          assert.ok(Number.isFinite(Number(value)));
        }
      }
    } finally {
      redis.disconnect();
    }
  });
});

describe('monitoring on the job tiers: assumed data, overrides per version, batch rows', {
  timeout: HANG_GUARD_MS,
}, () => {
  const keys = makeKeys();
  const prefix = makePrefix('monitoring-jobs');
  let dataDir: string;
  let gw: TestGateway;

  before(async () => {
    dataDir = await tempDir('monitoring');
    await placeDischarges(dataDir);
    gw = await buildGateway({ prefix, keys, dataDir, workers: ['inference', 'batch'] });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(dataDir);
  });

  const report = async (model: string, version = '1') => {
    await gw.gateway.services.monitoring.recorder?.flush();
    const res = await gw.call('GET', `/v1/models/${model}/monitoring`, keys.client);
    assert.equal(res.status, 200, res.text);
    return res.body.versions.find((v: { version: string }) => v.version === version).windows;
  };

  test('rows scored with an assumed default are counted (news2: SpO2 scale left out in 3 of 8)', async () => {
    const rows = Array.from({ length: 8 }, (_, i) => ({
      respirationRate: 18,
      spo2: 96,
      ...(i < 3 ? {} : { spo2Scale: 1 }),
      onOxygen: false,
      systolicBP: 120,
      pulse: 80,
      consciousness: 'alert',
      temperature: 37,
    }));
    const res = await gw.call('POST', '/v1/models/news2/predict', keys.client, { instances: rows });
    assert.equal(res.status, 200, res.text);
    const { hour } = await report('news2');
    assert.deepEqual(hour.missingOrAssumed, { knownRows: 8, assumedRows: 3, share: 0.375 });
  });

  test('review decisions give the override rate of the version (amend and reject of three)', async () => {
    const ids: string[] = [];
    for (const text of ['Crushing chest pain.', 'Routine follow-up of a healed wound.', 'No concerns today.']) {
      const res = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, { input: { text } });
      assert.equal(res.status, 202, res.text);
      ids.push(res.body.id);
    }
    for (const id of ids) {
      await waitFor(
        async () => (await gw.call('GET', `/v1/jobs/${id}`, keys.client)).body.state === 'awaiting_review',
        'the job to be held',
        30_000,
      );
    }
    const decisions = [
      { decision: 'approve', reason: 'agree' },
      { decision: 'amend', reason: 'routine, not urgent', output: { category: 'routine-follow-up' } },
      { decision: 'reject', reason: 'wrong patient context' },
    ];
    for (const [i, d] of decisions.entries()) {
      const res = await gw.call('POST', `/v1/reviews/${ids[i]}/decision`, keys.reviewer, d);
      assert.equal(res.status, 200, res.text);
    }
    const { hour, week } = await report('note-triage');
    assert.deepEqual(hour.overrides, {
      reviews: 3,
      approved: 1,
      amended: 1,
      rejected: 1,
      cdsFeedback: { accepted: 0, overridden: 0, reasons: {} },
      judgements: 3,
      rate: 0.666667,
    });
    assert.deepEqual(week.overrides, hour.overrides);
    assert.deepEqual(hour.byTier, { async: 3 });
    assert.equal(hour.drift, null, 'a document model has no feature profile');
  });

  test('a batch run is monitored by its thread: rows, assumed labs, drift against the profile', async () => {
    const submitted = await gw.call('POST', '/v1/models/readmission/batches', keys.client, {
      input: { path: 'inputs/discharges.ndjson', format: 'ndjson' },
    });
    assert.equal(submitted.status, 202, submitted.text);
    const runId = String(submitted.headers.get('content-location')).split('/').pop() as string;
    const { final } = await waitForRun(gw, keys.client, runId);
    assert.equal(final.status, 200, final.text);
    const run = await gw.gateway.services.runs.get(runId);
    const { hour } = await report('readmission');
    assert.equal(hour.rows, run?.scored);
    assert.deepEqual(hour.byTier, { batch: run?.scored });
    // the sample leaves out about one lab in ten: the manifest's normal value is assumed
    assert.ok(
      hour.missingOrAssumed.share > 0.05 && hour.missingOrAssumed.share < 0.4,
      JSON.stringify(hour.missingOrAssumed),
    );
    assert.ok(hour.drift.maxPsi < 0.25, `the sample is drawn like the reference: ${hour.drift.maxPsi}`);
  });
});

describe('monitoring off', { timeout: HANG_GUARD_MS }, () => {
  test('TRIAGE_MONITORING=off: nothing recorded, the report says so', async () => {
    const keys = makeKeys();
    const prefix = makePrefix('monitoring-off');
    const modelsDir = await tempModels({ [MODEL]: null });
    const gw = await buildGateway({ prefix, keys, modelsDir, monitoring: false });
    try {
      assert.equal((await gw.predict(MODEL, keys.client, vitals(5, 1))).status, 200);
      const res = await gw.call('GET', '/v1/models/deterioration/monitoring', keys.client);
      assert.equal(res.body.recording, false);
      assert.equal(res.body.versions[0].windows.hour.rows, 0);
      const redis = new Redis(REDIS_URL);
      for (const pattern of new KeySpace(prefix).patterns()) {
        assert.deepEqual(
          (await redis.keys(pattern)).filter((k) => k.includes(':monitor:')),
          [],
        );
      }
      redis.disconnect();
    } finally {
      await gw.close();
      await deletePrefix(prefix);
      await removeDir(modelsDir);
    }
  });
});
