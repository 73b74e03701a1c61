/**
 * The async tier's runners share in-process ONNX runs between jobs (JobRunners' `coalesce`): the scorings that reach a
 * version's runner in one event-loop turn are one run of the REAL onnxruntime, and each job gets its own rows back,
 * the same scores as a run of its own; a shared run that fails runs each job again alone, so a job with input the
 * runtime refuses fails by itself and its neighbours are scored. Then end to end: concurrent jobs through the gateway
 * each release their own row's score, the one a bedside predict gives for that row.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loadModels } from '../src/registry/load.ts';
import type { ModelRuntime } from '../src/runtime/types.ts';
import { type CatalogModel, ModelCatalog } from '../src/serving/catalog.ts';
import { prepareInput } from '../src/serving/inputs.ts';
import { JobRunners, onnxRuntimeFactory, type RuntimeFactory } from '../src/serving/runners.ts';
import {
  buildGateway,
  deletePrefix,
  MODELS_DIR,
  makeKeys,
  makePrefix,
  news2Row,
  SYNC_CEILING_MS,
  type TestGateway,
  waitForState,
} from './support/index.ts';

let news2: CatalogModel;
before(async () => {
  const models = (await loadModels(MODELS_DIR, SYNC_CEILING_MS)).filter((m) => m.manifest.name === 'news2');
  news2 = ModelCatalog.fixed(models).get('news2') as CatalogModel;
});

/** The REAL onnx runtime, its runs counted (rows each); a run whose input holds `poison` is refused as a real one is. */
function counted(poison?: number): { factory: RuntimeFactory; runs: number[] } {
  const runs: number[] = [];
  const real = onnxRuntimeFactory(1);
  const factory: RuntimeFactory = async (model, version) => {
    const runtime = await real(model, version);
    const wrapped: ModelRuntime = {
      kind: runtime.kind,
      run: (input, rows, options) => {
        runs.push(rows);
        // a truncated input: onnxruntime itself throws (as for a tensor that does not fit the model)
        if (poison !== undefined && input.includes(poison)) return runtime.run(input.subarray(0, 1), rows, options);
        return runtime.run(input, rows, options);
      },
      close: () => runtime.close(),
    };
    return wrapped;
  };
  return { factory, runs };
}

const encoded = (i: number) => prepareInput(news2.manifest, { instances: [news2Row(i)] }).data;
const version = () => news2.manifest.routing.primary;

async function scoreAlone(i: number): Promise<number[]> {
  const runners = new JobRunners(onnxRuntimeFactory(1), 'async');
  const runner = await runners.get(news2, version());
  const out = await runner?.submit(encoded(i), 1, Date.now() + 10_000).result;
  await runners.close();
  return Object.values(out ?? {}).flatMap((t) => [...t.data]);
}

describe('coalesced job runners', () => {
  test('scorings of one turn share one run, each answered with its own rows', async () => {
    const { factory, runs } = counted();
    const runners = new JobRunners(factory, 'async', undefined, { coalesce: true });
    const runner = await runners.get(news2, version());
    assert.ok(runner);
    try {
      const rows = [3, 11, 17, 29];
      const outs = await Promise.all(rows.map((i) => runner.submit(encoded(i), 1, Date.now() + 10_000).result));
      assert.deepEqual(runs, [4], 'four jobs, one run of four rows');
      for (const [k, i] of rows.entries()) {
        const got = Object.values(outs[k] ?? {}).flatMap((t) => [...t.data]);
        assert.deepEqual(got, await scoreAlone(i), `row ${i}: the scores of a run of its own`);
      }
    } finally {
      await runners.close();
    }
  });

  test('a shared run that fails runs each job alone: only the job with the refused input fails', async () => {
    const poison = 12345.5;
    const { factory, runs } = counted(poison);
    const runners = new JobRunners(factory, 'async', undefined, { coalesce: true });
    const runner = await runners.get(news2, version());
    assert.ok(runner);
    try {
      const bad = encoded(5);
      bad[0] = poison;
      const results = await Promise.allSettled(
        [encoded(1), bad, encoded(2)].map((input) => runner.submit(input, 1, Date.now() + 10_000).result),
      );
      assert.deepEqual(runs, [3, 1, 1, 1], 'the shared run, then each alone');
      assert.equal(results[0]?.status, 'fulfilled');
      assert.equal(results[1]?.status, 'rejected');
      assert.equal(results[2]?.status, 'fulfilled');
      const first = results[0] as PromiseFulfilledResult<Record<string, { data: Float32Array }>>;
      assert.deepEqual(
        Object.values(first.value).flatMap((t) => [...t.data]),
        await scoreAlone(1),
      );
    } finally {
      await runners.close();
    }
  });

  test('without coalescing (the batch tier) every scoring is a run of its own', async () => {
    const { factory, runs } = counted();
    const runners = new JobRunners(factory, 'batch');
    const runner = await runners.get(news2, version());
    assert.ok(runner);
    try {
      await Promise.all([1, 2, 3].map((i) => runner.submit(encoded(i), 1, Date.now() + 10_000).result));
      assert.deepEqual(runs, [1, 1, 1]);
    } finally {
      await runners.close();
    }
  });
});

describe('concurrent jobs through the gateway', () => {
  const keys = makeKeys();
  const prefix = makePrefix('job-runners');
  let gw: TestGateway;
  before(async () => {
    gw = await buildGateway({ keys, prefix, workers: ['inference'], only: ['news2'], listen: true });
  });
  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
  });

  test("each job releases its own row's score: the bedside score of that row", async () => {
    const rows = Array.from({ length: 12 }, (_, i) => news2Row(i * 7));
    const accepted = await Promise.all(
      rows.map((row) => gw.predict('news2', keys.client, [row], { prefer: 'respond-async' })),
    );
    for (const [i, res] of accepted.entries()) {
      assert.equal(res.status, 202, res.text);
      const job = await waitForState(gw, keys.client, res.body.id, 'released');
      const bedside = await gw.predict('news2', keys.client, [rows[i]]);
      assert.equal(bedside.status, 200, bedside.text);
      assert.deepEqual(job.result.output.predictions, bedside.body.predictions, `row ${i}`);
    }
  });
});
