/**
 * Bedside first for shadows: an in-process ONNX shadow version scores in a low-priority worker thread, not on the
 * event loop bedside answers wait on. Through a real gateway (real Redis, real onnxruntime sessions in the thread):
 * the pairs carry exactly the scores the ONNX files give, the sync tier's runner of the shadow version never runs, and
 * the thread runs at TRIAGE_SHADOW_NICE. The thread's queue is bounded per model: past it a mirror is shed, counted in
 * /metrics and in the comparison report per version; a version the thread cannot load fails as a shadow error while
 * the thread goes on scoring the others.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../src/platform/config.ts';
import { createLogger } from '../src/platform/logger.ts';
import type { CatalogModel } from '../src/serving/catalog.ts';
import { encodeInstances } from '../src/serving/features.ts';
import { type OffloadOutcome, ShadowThread } from '../src/serving/shadow-offload.ts';
import { ShadowMirror } from '../src/serving/shadow-runner.ts';
import {
  buildGateway,
  deletePrefix,
  HANG_GUARD_MS,
  MODEL,
  makeKeys,
  makePrefix,
  metricValue,
  pool,
  removeDir,
  round6,
  SICK_VITALS,
  scoreOnnx,
  type TestGateway,
  tempDir,
  type Vitals,
  waitFor,
} from './support/index.ts';

const keys = makeKeys();
const SHADOW_NICE = 7;

/** `n` distinct valid rows (deterministic) */
function rows(n: number): Vitals[] {
  return Array.from({ length: n }, (_, i) => ({ ...SICK_VITALS, age: 30 + i, pulse: 60 + ((i * 7) % 90) }));
}

/** nice value of every thread of this process, by thread id (field 19 of /proc/self/task/<tid>/stat) */
function threadNices(): Map<string, number> {
  return new Map(
    readdirSync('/proc/self/task').map((tid) => {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      return [tid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])];
    }),
  );
}

function encoded(model: CatalogModel, instances: Vitals[]) {
  return { data: encodeInstances(model.manifest.features, instances), rows: instances.length };
}

test('TRIAGE_SHADOW_NICE: 10 by default, 0-19, anything else refused', () => {
  assert.equal(loadConfig({}).shadowNice, 10);
  assert.equal(loadConfig({ TRIAGE_SHADOW_NICE: '0' }).shadowNice, 0);
  assert.equal(loadConfig({ TRIAGE_SHADOW_NICE: '19' }).shadowNice, 19);
  assert.throws(() => loadConfig({ TRIAGE_SHADOW_NICE: '-1' }));
  assert.throws(() => loadConfig({ TRIAGE_SHADOW_NICE: '20' }));
});

describe('in-process ONNX shadows score in the shadow thread', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('shadow-thread');
  let gw: TestGateway;

  before(async () => {
    gw = await buildGateway({ prefix, keys, config: { shadowNice: SHADOW_NICE } });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
  });

  test('pairs hold the ONNX scores of both versions; the sync runner of v2 never ran; the thread is niced', async () => {
    const instances = rows(40);
    const [v1, v2] = [await scoreOnnx('1', instances), await scoreOnnx('2', instances)];
    const replies = await pool(instances.length, 8, (i) => gw.predict(MODEL, keys.client, [instances[i]]));
    for (const [i, res] of replies.entries()) {
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.predictions[0].deteriorationRisk, v1[i]);
    }
    const pairs = async () =>
      (metricValue(await gw.metrics(), 'triage_shadow_pairs_total', {
        model: MODEL,
        version: '2',
        agreement: 'agree',
      }) ?? 0) +
      (metricValue(await gw.metrics(), 'triage_shadow_pairs_total', {
        model: MODEL,
        version: '2',
        agreement: 'disagree',
      }) ?? 0);
    await waitFor(async () => (await pairs()) >= instances.length, 'every request mirrored');
    await gw.gateway.deps.shadow.flush();
    // the comparison's score sample (capped at SCORE_PAIR_SAMPLES, far above 40): primary and shadow score a pair
    const sample = (await gw.gateway.deps.shadow.scorePairs(MODEL)).find((s) => s.version === '2');
    const recorded = new Map(sample?.pairs ?? []);
    for (const [i, score] of v1.entries()) assert.equal(recorded.get(score), v2[i], `row ${i}`);

    const text = await gw.metrics();
    // the primary scored on the sync tier's runner; the shadow did not (it would be counted there if it had)
    assert.ok(
      (metricValue(text, 'triage_inference_duration_seconds_count', { model: MODEL, version: '1', tier: 'sync' }) ??
        0) > 0,
    );
    assert.equal(
      metricValue(text, 'triage_inference_duration_seconds_count', { model: MODEL, version: '2', tier: 'sync' }),
      undefined,
      'v2 scored through the sync runner on the event loop',
    );
    const nices = threadNices();
    assert.ok(
      [...nices.values()].includes(SHADOW_NICE),
      `a thread at nice ${SHADOW_NICE}: ${JSON.stringify([...nices])}`,
    );
    assert.notEqual(nices.get(String(process.pid)), SHADOW_NICE, 'the main thread keeps its priority');
  });

  test('past the bound a mirror is shed: counted in /metrics and, per version, in the report', async () => {
    const model = gw.gateway.deps.catalog.get(MODEL) as CatalogModel;
    const shadow = { versions: ['2'], sampleRate: 1 };
    const thread = new ShadowThread({ nice: 0, onnxThreads: 1, maxInFlight: 2, logger: createLogger('silent') });
    const mirror = new ShadowMirror({
      recorder: gw.gateway.deps.shadow,
      catalog: gw.gateway.deps.catalog,
      thread,
      inline: () => assert.fail('an ONNX shadow scored inline'),
    });
    try {
      const before =
        metricValue(await gw.metrics(), 'triage_shadow_dropped_total', { model: MODEL, reason: 'saturated' }) ?? 0;
      const instances = rows(5);
      const v1 = await scoreOnnx('1', instances);
      // one tick: nothing can finish before the bound is reached
      instances.forEach((row, i) => {
        const answer = { version: '1', predictions: [{ deteriorationRisk: v1[i] }], ms: 1 };
        mirror.mirror(model, shadow, encoded(model, [row]), answer, 1000);
      });
      await gw.gateway.deps.shadow.flush();
      assert.equal(
        metricValue(await gw.metrics(), 'triage_shadow_dropped_total', { model: MODEL, reason: 'saturated' }),
        before + 3,
      );
      const res = await gw.call('GET', `/v1/models/${MODEL}/shadow`, keys.client);
      assert.equal(res.status, 200, res.text);
      const v2 = res.body.shadows.find((s: { version: string }) => s.version === '2');
      assert.deepEqual(v2.shed, { saturated: 3 });
      // the bound frees as the thread answers: a later mirror is scored
      await waitFor(async () => {
        await gw.gateway.deps.shadow.flush();
        return (await gw.call('GET', `/v1/models/${MODEL}/shadow`, keys.client)).body.shadows[0].pairs >= 42;
      }, 'the two queued mirrors to be recorded');
      mirror.mirror(model, shadow, encoded(model, [SICK_VITALS]), { version: '1', predictions: [], ms: 1 }, 1000);
      await gw.gateway.deps.shadow.flush();
      assert.equal(
        metricValue(await gw.metrics(), 'triage_shadow_dropped_total', { model: MODEL, reason: 'saturated' }),
        before + 3,
      );
    } finally {
      await thread.close();
    }
  });
});

describe('the shadow thread on its own', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('shadow-thread-unit');
  let gw: TestGateway;
  let dir: string;

  before(async () => {
    gw = await buildGateway({ prefix, keys });
    dir = await tempDir('shadow-thread');
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(dir);
  });

  const score = (thread: ShadowThread, model: CatalogModel, version: string, instances: Vitals[]) =>
    new Promise<OffloadOutcome>((resolve, reject) => {
      if (!thread.submit(model, version, encoded(model, instances), resolve)) reject(new Error('refused'));
    });

  test('scores what the ONNX file scores, several rows a job; refuses past maxInFlight until jobs finish', async () => {
    const model = gw.gateway.deps.catalog.get(MODEL) as CatalogModel;
    const thread = new ShadowThread({ nice: 0, onnxThreads: 1, maxInFlight: 3, logger: createLogger('silent') });
    try {
      assert.ok(thread.serves(model, '2'));
      assert.ok(!thread.serves(model, '9'), 'a version the manifest does not have');
      const jobs = [rows(3), rows(1), rows(7)];
      const outcomes = jobs.map((instances) => score(thread, model, '2', instances));
      assert.equal(
        thread.submit(model, '2', encoded(model, rows(1)), () => {}),
        false,
        'the fourth is refused',
      );
      for (const [i, outcome] of (await Promise.all(outcomes)).entries()) {
        assert.equal(outcome.error, undefined);
        const probability = outcome.outputs?.probability;
        assert.deepEqual(probability?.dims, [jobs[i]?.length]);
        assert.deepEqual([...(probability?.data ?? [])].map(round6), await scoreOnnx('2', jobs[i] as Vitals[]));
        assert.ok(outcome.ms >= 0);
      }
      const again = await score(thread, model, '1', rows(2));
      assert.deepEqual([...(again.outputs?.probability?.data ?? [])].map(round6), await scoreOnnx('1', rows(2)));
    } finally {
      await thread.close();
    }
  });

  test('closing while runs are in flight: the thread finishes its run and exits by itself (never terminated)', async () => {
    // a thread terminated while onnxruntime scores for it aborts the whole process; asked to stop, it exits with 0
    // (terminate() ends it with 1)
    const model = gw.gateway.deps.catalog.get(MODEL) as CatalogModel;
    const thread = new ShadowThread({ nice: 0, onnxThreads: 1, maxInFlight: 64, logger: createLogger('silent') });
    await score(thread, model, '2', rows(1)); // the thread is up, its session loaded
    let answered = 0;
    for (let i = 0; i < 32; i++) thread.submit(model, '2', encoded(model, rows(8)), () => answered++);
    await new Promise((resolve) => setImmediate(resolve)); // posted to the thread
    assert.equal(await thread.close(), 0);
    assert.equal(answered, 0, 'what was in flight is forgotten, not recorded');
    assert.equal(
      thread.submit(model, '2', encoded(model, rows(1)), () => {}),
      false,
      'closed: nothing more is taken',
    );
  });

  test('a version the thread cannot load is an error for its jobs; the thread goes on scoring', async () => {
    const model = gw.gateway.deps.catalog.get(MODEL) as CatalogModel;
    const broken = path.join(dir, 'not-a-model.onnx');
    await writeFile(broken, 'not an onnx graph');
    const brokenModel = {
      ...model,
      loaded: { ...model.loaded, artifacts: new Map([...model.loaded.artifacts, ['2', broken]]) },
    } as CatalogModel;
    const thread = new ShadowThread({ nice: 0, onnxThreads: 1, maxInFlight: 8, logger: createLogger('silent') });
    try {
      const [bad, good] = await Promise.all([
        score(thread, brokenModel, '2', rows(1)),
        score(thread, model, '1', rows(1)),
      ]);
      assert.equal(bad.outputs, undefined);
      assert.match(bad.error ?? '', /./);
      assert.deepEqual([...(good.outputs?.probability?.data ?? [])].map(round6), await scoreOnnx('1', rows(1)));
    } finally {
      await thread.close();
    }
  });
});
