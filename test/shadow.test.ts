/**
 * Shadow mode, through the real composition root (real Redis, real onnxruntime sessions for both deterioration
 * versions): pairs recorded and reported with the numbers computed here from the ONNX files directly; a shadow that
 * throws or hangs leaves the primary's answers, status and deadline alone and is counted (errors, drops at the
 * in-flight cap); the sample rate is honoured (injected random); nothing the shadow stores carries the input; async
 * jobs and batch runs mirror too.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { KeySpace } from '../src/platform/keyspace.ts';
import {
  buildGateway,
  deletePrefix,
  type Grid,
  HANG_GUARD_MS,
  MODEL,
  makeKeys,
  makePrefix,
  metricValue,
  pool,
  removeDir,
  round6,
  type Scored,
  scoreOnnx,
  searchGrid,
  shadowStorage,
  type TestGateway,
  tempModels,
  VersionFaults,
  type Vitals,
  waitFor,
  withoutRequestId,
} from './support/index.ts';

const keys = makeKeys();
const THRESHOLD = 0.3;
let grid: Grid;

before(async () => {
  grid = await searchGrid(THRESHOLD);
});

/** The bundled manifest must be what these tests assume: v1 primary, v2 shadowing every request. */
function assertBundledRouting(gw: TestGateway) {
  const m = gw.gateway.deps.catalog.get(MODEL);
  assert.ok(m);
  assert.deepEqual(m.routing, { primary: '1', shadow: { versions: ['2'], sampleRate: 1 } });
}

/** A score as the shadow's sample keeps it (six decimals). */
const asStored = (v: number | undefined) => Math.round((v as number) * 1e6) / 1e6;

/**
 * The primary scores of the kept sample of pairs, oldest first (each flush pushes its interval's pairs on the head of
 * the list; an interval of fewer than SCORE_PAIR_SAMPLES pairs is kept whole and in order).
 */
async function sampledPrimaryScores(prefix: string): Promise<number[]> {
  const list = (await shadowStorage(prefix)).find((s) => s.key.endsWith(':2:scores'));
  return (list?.values ?? []).map((v) => Number(v.value.split(',')[0])).reverse();
}

async function pairsMetric(gw: TestGateway): Promise<number> {
  const text = await gw.metrics();
  return (
    (metricValue(text, 'triage_shadow_pairs_total', { model: MODEL, version: '2', agreement: 'agree' }) ?? 0) +
    (metricValue(text, 'triage_shadow_pairs_total', { model: MODEL, version: '2', agreement: 'disagree' }) ?? 0)
  );
}

async function report(gw: TestGateway) {
  await gw.gateway.deps.shadow.flush();
  const res = await gw.call('GET', `/v1/models/${MODEL}/shadow`, keys.client);
  assert.equal(res.status, 200, res.text);
  return res.body;
}

/** `n` distinct valid rows (deterministic), all well away from the threshold. */
function rows(n: number): Vitals[] {
  const candidates = [...grid.agreeNegative, ...grid.agreePositive];
  return Array.from({ length: n }, (_, i) => (candidates[(i * 37) % candidates.length] as Scored).vitals);
}

function putShadow(gw: TestGateway, body: Record<string, unknown>) {
  return gw.call('PUT', `/v1/models/${MODEL}/routing/shadow`, keys.admin, body);
}

// -----------------------------------------------------------------------------------------------------------------

describe('pairs are recorded and reported', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('shadow-report');
  let modelsDir: string;
  let gw: TestGateway;
  /** the requests sent: single rows and one of several instances */
  let requests: Scored[][];

  before(async () => {
    modelsDir = await tempModels({ [MODEL]: null });
    gw = await buildGateway({ prefix, keys, modelsDir });
    assertBundledRouting(gw);
    const pick = (list: Scored[], n: number) => {
      assert.ok(list.length >= n, `the grid holds ${list.length} rows of a kind, ${n} needed`);
      return list.slice(0, n);
    };
    const agreePositive = pick(grid.agreePositive, 3);
    const agreeNegative = pick(grid.agreeNegative, 3);
    const v2Only = pick(grid.v2OnlyPositive, 4);
    const v1Only = pick(grid.v1OnlyPositive, 2);
    requests = [
      [agreePositive[0] as Scored],
      [agreeNegative[0] as Scored],
      [v2Only[0] as Scored],
      [v2Only[1] as Scored],
      [v1Only[0] as Scored],
      [agreePositive[1] as Scored],
      // one request of six instances: a pair per instance
      [
        agreePositive[2] as Scored,
        agreeNegative[1] as Scored,
        agreeNegative[2] as Scored,
        v2Only[2] as Scored,
        v2Only[3] as Scored,
        v1Only[1] as Scored,
      ],
    ];
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  test('the grid search found rows where the versions disagree at 0.3, in both directions', () => {
    assert.ok(grid.v2OnlyPositive.length > 0, 'no row where v2 escalates and v1 does not');
    assert.ok(grid.v1OnlyPositive.length > 0, 'no row where v1 escalates and v2 does not');
  });

  test('report: pairs, agreement rate, mean |Δscore|, disagreements by direction, errors, latency percentiles', async () => {
    for (const request of requests) {
      const res = await gw.predict(
        MODEL,
        keys.client,
        request.map((s) => s.vitals),
      );
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.version, '1');
      // the primary's answer is v1's score, as the ONNX file computes it
      assert.deepEqual(
        res.body.predictions.map((p: Record<string, number>) => p.deteriorationRisk),
        request.map((s) => s.v1),
      );
    }
    const all = requests.flat();
    await waitFor(async () => (await pairsMetric(gw)) >= all.length, 'every instance to be mirrored');

    const body = await report(gw);
    assert.equal(body.model, MODEL);
    assert.equal(body.threshold, THRESHOLD);
    assert.deepEqual(body.routing, { versions: ['2'], sampleRate: 1 });
    assert.equal(body.shadows.length, 1);
    const s = body.shadows[0];
    assert.equal(s.version, '2');
    assert.equal(s.pairs, 12);
    const agree = all.filter((x) => x.v1 >= THRESHOLD === x.v2 >= THRESHOLD).length;
    assert.equal(agree, 6);
    assert.equal(s.agreementRate, agree / all.length);
    const meanAbs = all.reduce((sum, x) => sum + Math.abs(x.v1 - x.v2), 0) / all.length;
    assert.ok(
      Math.abs(s.meanAbsoluteScoreDifference - meanAbs) < 1e-9,
      `${s.meanAbsoluteScoreDifference} ≠ ${meanAbs}`,
    );
    assert.ok(meanAbs > 0.01, 'the versions differ: the difference is measurable');
    assert.deepEqual(s.disagreements, { shadowPositivePrimaryNegative: 4, shadowNegativePrimaryPositive: 2 });
    assert.equal(s.shadowErrors, 0);
    // one latency sample per mirrored request (not per instance), for both sides
    for (const side of ['shadow', 'primary'] as const) {
      const l = s.latencyMs[side];
      assert.equal(l.samples, requests.length, side);
      assert.ok(l.p50 >= 0 && l.p50 <= l.p95 && l.p95 <= l.p99, `${side}: ${JSON.stringify(l)}`);
    }

    const text = await gw.metrics();
    assert.equal(metricValue(text, 'triage_shadow_pairs_total', { model: MODEL, version: '2', agreement: 'agree' }), 6);
    assert.equal(
      metricValue(text, 'triage_shadow_pairs_total', { model: MODEL, version: '2', agreement: 'disagree' }),
      6,
    );
    assert.equal(metricValue(text, 'triage_shadow_latency_seconds_count', { model: MODEL, version: '2' }), 7);
  });

  test('the primary answers identically with and without shadows, always as the primary version', async () => {
    const send = () =>
      pool(requests.length, 4, (i) =>
        gw.predict(
          MODEL,
          keys.client,
          (requests[i] as Scored[]).map((s) => s.vitals),
        ),
      );
    const withShadows = await send();
    const removed = await putShadow(gw, { versions: [], reason: 'compare the primary without shadows' });
    assert.equal(removed.status, 200, removed.text);
    assert.equal(removed.body.routing.shadow, undefined);
    const without = await send();
    for (const [i, res] of withShadows.entries()) {
      const other = without[i];
      assert.equal(res.status, 200, res.text);
      assert.equal(other?.status, 200, other?.text ?? '');
      assert.equal(res.body.version, '1');
      assert.equal(res.headers.get('x-model-version'), '1');
      assert.deepEqual(withoutRequestId(res.body), withoutRequestId(other?.body));
    }
    // the mirrored ones were mirrored (12 earlier + 12 now), the others not
    await waitFor(async () => (await pairsMetric(gw)) >= 24, 'the second round of pairs');
    assert.equal((await report(gw)).shadows[0].pairs, 24);
    const restored = await putShadow(gw, { versions: ['2'], sampleRate: 1, reason: 'shadow again' });
    assert.equal(restored.status, 200, restored.text);
  });

  test('no raw input in what the shadow stores: only the documented fields, scores and decisions', async () => {
    const distinctive: Vitals = {
      age: 97,
      respirationRate: 29,
      spo2: 91,
      systolicBP: 143,
      pulse: 137,
      temperature: 38.3,
      onOxygen: true,
    };
    const before = await pairsMetric(gw);
    const res = await gw.predict(MODEL, keys.client, [distinctive, { ...distinctive, pulse: 136 }], {
      'x-subject-key': 'patient-8675309',
    });
    assert.equal(res.status, 200, res.text);
    await waitFor(async () => (await pairsMetric(gw)) >= before + 2, 'the distinctive rows to be mirrored');
    await gw.gateway.deps.shadow.flush();

    const stored = await shadowStorage(prefix);
    // in the model's shard (on a Redis Cluster, the model's primary)
    const base = `${new KeySpace(prefix).shard(MODEL)}:shadow`;
    assert.deepEqual(
      stored.map((s) => [s.key, s.type]),
      [
        [`${base}:2:primaryMs`, 'list'],
        [`${base}:2:scores`, 'list'],
        [`${base}:2:shadowMs`, 'list'],
        [`${base}:2:stats`, 'hash'],
        [`${base}:versions`, 'set'],
      ],
    );
    const numeric = /^-?\d+(\.\d+)?(e-?\d+)?$/;
    const features = ['age', 'respirationRate', 'spo2', 'systolicBP', 'pulse', 'temperature', 'onOxygen', 'instances'];
    let sampled = 0;
    for (const { key, type, values } of stored) {
      for (const { field, value } of values) {
        assert.ok(!value.includes('8675309'), `${key} holds the subject key`);
        for (const f of features) assert.ok(!value.includes(f), `${key} holds "${f}"`);
        // the score sample: a primary and a shadow score a pair, nothing else
        if (type === 'list' && key.endsWith(':scores')) {
          for (const v of value.split(',', 2)) assert.match(v, numeric, key);
          assert.equal(value.split(',').length, 2, key);
          sampled++;
        } else if (type === 'list') assert.match(value, numeric, key);
        if (type === 'set') assert.equal(value, '2', key);
        if (type === 'hash') {
          assert.ok(
            ['pairs', 'agree', 'shadowPositive', 'shadowNegative', 'errors', 'sumAbsDiff'].includes(field ?? ''),
            `${key}: field ${field}`,
          );
          assert.match(value, numeric, `${key}.${field}`);
        }
      }
    }
    // the distinctive rows' pairs are there (scored, not stored): their scores, not their values
    const [d1] = await scoreOnnx('1', [distinctive]);
    assert.ok((await sampledPrimaryScores(prefix)).includes(asStored(d1)));
    assert.ok(sampled >= 26);
  });
});

// -----------------------------------------------------------------------------------------------------------------

describe('a shadow that throws', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('shadow-throws');
  const faults = new VersionFaults();
  let modelsDir: string;
  let gw: TestGateway;

  before(async () => {
    modelsDir = await tempModels({ [MODEL]: null });
    gw = await buildGateway({ prefix, keys, modelsDir, faults });
    assertBundledRouting(gw);
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  test('the primary answers 200, unchanged; the shadow errors are counted in the report and the metric', async () => {
    const instances = rows(20);
    const expected = await scoreOnnx('1', instances);
    faults.fail(MODEL, '2');
    const failing = await pool(20, 8, (i) => gw.predict(MODEL, keys.client, [instances[i]]));
    for (const [i, res] of failing.entries()) {
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.version, '1');
      assert.equal(res.body.predictions[0].deteriorationRisk, expected[i]);
    }
    await waitFor(
      async () => metricValue(await gw.metrics(), 'triage_shadow_errors_total', { model: MODEL, version: '2' }) === 20,
      'twenty shadow errors',
    );
    assert.ok(faults.faultedRuns(MODEL, '2') > 0, 'the real v2 session was handed the broken input');
    const body = await report(gw);
    assert.equal(body.shadows[0].version, '2');
    assert.equal(body.shadows[0].shadowErrors, 20);
    assert.equal(body.shadows[0].pairs, 0);
    assert.equal(body.shadows[0].agreementRate, null);

    // the same requests with the shadow removed: byte for byte the same answers (request ids aside)
    const removed = await putShadow(gw, { versions: [], reason: 'baseline without shadows' });
    assert.equal(removed.status, 200, removed.text);
    const baseline = await pool(20, 8, (i) => gw.predict(MODEL, keys.client, [instances[i]]));
    for (const [i, res] of baseline.entries()) {
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(withoutRequestId(failing[i]?.body), withoutRequestId(res.body));
    }
  });
});

// -----------------------------------------------------------------------------------------------------------------

describe('a shadow that hangs', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('shadow-hangs');
  const faults = new VersionFaults();
  /** the in-flight cap of shadow runs per model (MAX_SHADOW_IN_FLIGHT in src/serving/shadow-runner.ts) */
  const CAP = 256;
  const N = 300;
  let modelsDir: string;
  let gw: TestGateway;

  before(async () => {
    // the latency budget (GENEROUS_BUDGET_MS): a primary that waited on the hung shadow would get a 504 at it
    modelsDir = await tempModels({ [MODEL]: null });
    gw = await buildGateway({ prefix, keys, modelsDir, faults });
    assertBundledRouting(gw);
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  test('primaries never wait on the gate; past the in-flight cap mirrors are dropped and counted', async () => {
    const instances = rows(N);
    const expected = await scoreOnnx('1', instances);
    faults.hold(MODEL, '2'); // every v2 run waits until the end of the test
    const replies = await pool(N, 16, (i) => gw.predict(MODEL, keys.client, [instances[i]]));
    // every answer came back while the shadow was still held: none of them waited on it
    assert.ok(faults.faultedRuns(MODEL, '2') >= 1, 'the shadow reached the gate');
    for (const [i, res] of replies.entries()) {
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.version, '1');
      assert.equal(res.body.predictions[0].deteriorationRisk, expected[i]);
    }
    // the first CAP mirrors hold the shadow's slots; every later one is dropped, never queued
    await waitFor(
      async () => metricValue(await gw.metrics(), 'triage_shadow_dropped_total', { model: MODEL }) === N - CAP,
      `${N - CAP} dropped mirrors`,
    );
    assert.equal(gw.gateway.deps.sync.status(MODEL)?.inFlight, 0, 'no primary slot is held by the shadow');
    // still held: nothing recorded yet
    assert.equal(await pairsMetric(gw), 0);

    // released, the held mirrors complete and are recorded; the dropped ones never run
    faults.open(MODEL, '2');
    await waitFor(async () => (await pairsMetric(gw)) >= CAP, 'the held mirrors to be recorded');
    const body = await report(gw);
    assert.equal(body.shadows[0].pairs, CAP);
    assert.equal(body.shadows[0].shadowErrors, 0);
    assert.equal(metricValue(await gw.metrics(), 'triage_shadow_dropped_total', { model: MODEL }), N - CAP);
  });
});

// -----------------------------------------------------------------------------------------------------------------

describe('the sample rate', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('shadow-rate');
  let modelsDir: string;
  let gw: TestGateway;
  /** the next draws of the injected random; `draws` counts them */
  let draw: () => number = () => 0.5;
  let draws = 0;

  before(async () => {
    modelsDir = await tempModels({ [MODEL]: null });
    gw = await buildGateway({
      prefix,
      keys,
      modelsDir,
      random: () => {
        draws++;
        return draw();
      },
    });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  /** Sends a row whose v1 score is unique, sampled for sure, and waits for its pair: every earlier mirror is done. */
  async function barrier(marker: Vitals): Promise<void> {
    const [score] = await scoreOnnx('1', [marker]);
    await putShadow(gw, { versions: ['2'], sampleRate: 1, reason: 'barrier' });
    draw = () => 0.999999;
    const res = await gw.predict(MODEL, keys.client, [marker]);
    assert.equal(res.status, 200, res.text);
    // mirrors run in order through the shadow's batcher: once the marker's pair is in, every earlier one is too
    await waitFor(async () => {
      await gw.gateway.deps.shadow.flush();
      return (await sampledPrimaryScores(prefix)).includes(asStored(score));
    }, 'the barrier pair');
  }

  test('sampleRate 0.3: exactly the requests whose draw is below 0.3 are mirrored', async () => {
    const res = await putShadow(gw, { versions: ['2'], sampleRate: 0.3, reason: 'sample 30%' });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.routing.shadow, { versions: ['2'], sampleRate: 0.3 });
    const cycle = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95];
    let i = 0;
    draw = () => cycle[i++ % cycle.length] as number;
    draws = 0;
    const instances = rows(20);
    for (const row of instances) assert.equal((await gw.predict(MODEL, keys.client, [row])).status, 200);
    assert.equal(draws, 20, 'one draw per request');
    await barrier({
      age: 33,
      respirationRate: 13,
      spo2: 99,
      systolicBP: 131,
      pulse: 71,
      temperature: 36.6,
      onOxygen: false,
    });
    assert.equal((await report(gw)).shadows[0].pairs, 6 + 1);
    // which ones: requests 0, 1, 2, 10, 11, 12 (draws 0.05, 0.15, 0.25)
    const v1 = await scoreOnnx('1', instances);
    const mirrored = await sampledPrimaryScores(prefix);
    assert.deepEqual(
      mirrored.slice(0, 6),
      [0, 1, 2, 10, 11, 12].map((k) => asStored(v1[k])),
    );
  });

  test('sampleRate 0: nothing is mirrored, even on a draw of 0', async () => {
    const res = await putShadow(gw, { versions: ['2'], sampleRate: 0, reason: 'sample nothing' });
    assert.equal(res.status, 200, res.text);
    draw = () => 0;
    for (const row of rows(20)) assert.equal((await gw.predict(MODEL, keys.client, [row])).status, 200);
    await barrier({
      age: 34,
      respirationRate: 13,
      spo2: 99,
      systolicBP: 131,
      pulse: 71,
      temperature: 36.6,
      onOxygen: false,
    });
    assert.equal((await report(gw)).shadows[0].pairs, 7 + 1);
  });
});

// -----------------------------------------------------------------------------------------------------------------

describe('async jobs and batch runs mirror too', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('shadow-tiers');
  let modelsDir: string;
  let dataDir: string;
  let gw: TestGateway;

  before(async () => {
    modelsDir = await tempModels({ [MODEL]: null });
    dataDir = await mkdtemp(path.join(tmpdir(), 'triage-shadow-data-'));
    gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: ['inference', 'batch'] });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
    await removeDir(dataDir);
  });

  test('Prefer: respond-async → the job is released with the primary output; a pair per instance is recorded', async () => {
    const instances = rows(3);
    const [v1, v2] = [await scoreOnnx('1', instances), await scoreOnnx('2', instances)];
    const res = await gw.predict(MODEL, keys.client, instances, { prefer: 'respond-async' });
    assert.equal(res.status, 202, res.text);
    let job: Record<string, unknown> & { state?: string; result?: { output: { predictions: unknown[] } } } = {};
    await waitFor(async () => {
      job = (await gw.call('GET', `/v1/jobs/${res.body.id}`, keys.client)).body;
      return job.state === 'released' || job.state === 'failed';
    }, 'the job to finish');
    assert.equal(job.state, 'released', JSON.stringify(job));
    assert.deepEqual(
      job.result?.output.predictions.map((p) => (p as Record<string, number>).deteriorationRisk),
      v1,
    );
    // the worker mirrors after the release, without holding the job: the pairs arrive shortly after
    let body = await report(gw);
    await waitFor(async () => {
      body = await report(gw);
      return body.shadows.some((x: { version: string; pairs: number }) => x.version === '2' && x.pairs >= 3);
    }, 'the shadow pairs of the job');
    const s = body.shadows.find((x: { version: string }) => x.version === '2');
    assert.ok(s, JSON.stringify(body));
    assert.equal(s.pairs, 3);
    assert.equal(s.shadowErrors, 0);
    const meanAbs = v1.reduce((sum, a, i) => sum + Math.abs(a - (v2[i] as number)), 0) / 3;
    assert.ok(Math.abs(s.meanAbsoluteScoreDifference - meanAbs) < 1e-9);
  });

  test('an async job follows a shadow change made through the API (workers read the routing in force)', async () => {
    const pairsOf = async () =>
      ((await report(gw)).shadows.find((x: { version: string }) => x.version === '2')?.pairs as number | undefined) ??
      0;
    const runJob = async () => {
      const res = await gw.predict(MODEL, keys.client, rows(2), { prefer: 'respond-async' });
      assert.equal(res.status, 202, res.text);
      await waitFor(
        async () => (await gw.call('GET', `/v1/jobs/${res.body.id}`, keys.client)).body?.state === 'released',
        'the job to be released',
      );
    };
    // no waiting between a change and the next job: a worker reads the routing in force when it takes the job
    assert.equal((await putShadow(gw, { versions: [], reason: 'pause the v2 evaluation' })).status, 200);
    const before = await pairsOf();
    await runJob(); // shadow off: its rows must never be mirrored
    assert.equal((await putShadow(gw, { versions: ['2'], sampleRate: 1, reason: 'resume' })).status, 200);
    await runJob();
    // a mirror of the first job would have been started before the second job was even submitted, so once the
    // second job's pairs are recorded, the first job's would be too: exactly two pairs means none came from it
    await waitFor(async () => (await pairsOf()) >= before + 2, 'the pairs of the job once the shadow is back');
    await gw.deps.shadow.flush();
    assert.equal(await pairsOf(), before + 2, 'no pair while the shadow is off, two once it is back');
  });

  test('a batch run writes output.shadow-2.ndjson beside the output: one line per scored row, same ids', async () => {
    const instances = rows(12);
    const ids = instances.map((_, i) => `row-${i}`);
    const lines = instances.map((v, i) => JSON.stringify({ id: ids[i], ...v }));
    lines.splice(5, 0, JSON.stringify({ id: 'bad-row', ...instances[0], pulse: 999 })); // out of range: not scored
    // the client key's own data area
    const area = path.join(dataDir, 'clients', 'client', 'inputs');
    await mkdir(area, { recursive: true });
    await writeFile(path.join(area, 'rows.ndjson'), `${lines.join('\n')}\n`);
    const res = await gw.call('POST', `/v1/models/${MODEL}/batches`, keys.client, {
      input: { path: 'inputs/rows.ndjson', format: 'ndjson' },
    });
    assert.equal(res.status, 202, res.text);
    let final = res;
    await waitFor(
      async () => {
        final = await gw.call('GET', `/v1/batches/${res.body.id}`, keys.client);
        return final.status !== 202;
      },
      () => `the run to finish (${final.status})`,
      30_000,
    );
    assert.equal(final.status, 200, final.text);
    const outputs = final.body.output as Array<{ type: string; url: string; count: number; extension?: unknown }>;
    assert.equal(outputs.length, 2, JSON.stringify(outputs));
    const [primary, shadow] = outputs as [(typeof outputs)[0], (typeof outputs)[0]];
    assert.equal(primary.type, 'Prediction');
    assert.equal(primary.count, 12);
    assert.equal(shadow.type, 'ShadowPrediction');
    assert.ok(shadow.url.endsWith(`/v1/batches/${res.body.id}/files/output.shadow-2.ndjson`), shadow.url);
    assert.equal(shadow.count, 12);
    assert.deepEqual(shadow.extension, { shadowVersion: '2' });

    const download = async (url: string) => {
      const r = await gw.call('GET', new URL(url).pathname, keys.client);
      assert.equal(r.status, 200, r.text);
      return r.text
        .split('\n')
        .filter((l) => l.trim())
        .map(
          (l) => JSON.parse(l) as { id: string; version: string; shadow?: boolean; prediction: Record<string, number> },
        );
    };
    const [primaryRows, shadowRows] = [await download(primary.url), await download(shadow.url)];
    assert.deepEqual(
      primaryRows.map((r) => r.id),
      ids,
    );
    assert.deepEqual(
      shadowRows.map((r) => r.id),
      ids,
    );
    const [v1, v2] = [await scoreOnnx('1', instances), await scoreOnnx('2', instances)];
    assert.deepEqual(
      primaryRows.map((r) => [r.version, r.shadow, r.prediction.deteriorationRisk]),
      v1.map((s) => ['1', undefined, s]),
    );
    assert.deepEqual(
      shadowRows.map((r) => [r.version, r.shadow, r.prediction.deteriorationRisk]),
      v2.map((s) => ['2', true, round6(s)]),
    );
  });
});
