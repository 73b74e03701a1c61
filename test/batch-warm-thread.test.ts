/**
 * Batch runs score in a warm thread (workers/batch-thread-run.ts), on real Redis, BullMQ, worker threads and
 * onnxruntime: the thread is started with the gateway and scores one run after another (a fresh thread per run cost
 * every run half a second before its first row); a thread that crashes mid-run fails only that run's attempt, which
 * resumes on a new thread with every row once; a new artifact between two runs is scored by a new session, never by
 * the one the thread kept.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadModels } from '../src/registry/load.ts';
import { routingFromManifest } from '../src/serving/routing.ts';
import { BatchThreads, IDLE_REPLACE_EVERY_MS } from '../workers/batch-thread-run.ts';
import {
  buildGateway,
  captureLogs,
  deletePrefix,
  editManifest,
  makeKeys,
  makePrefix,
  news2Row,
  REDIS_URL,
  removeDir,
  round6,
  SICK_VITALS,
  scoreOnnx,
  type TestGateway,
  tempDir,
  tempModels,
  type Vitals,
  waitFor,
  waitForRun,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('batch-warm');
/** enough chunks (120) that a crash after the first lands mid-run */
const LONG_ROWS = 60_000;
const CHUNK = 500;

let modelsDir: string;
let dataDir: string;
let gw: TestGateway;

/** vitals around a sick patient's, distinct enough that two versions' weights give different scores */
const VITALS: Vitals[] = Array.from({ length: 40 }, (_, i) => ({
  ...SICK_VITALS,
  age: 40 + i,
  respirationRate: 14 + (i % 15),
  pulse: 70 + 2 * i,
  onOxygen: i % 3 === 0,
}));

const area = () => path.join(dataDir, 'clients', 'client', 'inputs');

before(async () => {
  modelsDir = await tempModels({
    news2: (m) => {
      m.batch = { chunkSize: CHUNK };
    },
    // a batch of deterioration scores the primary only: the test reads which artifact scored
    deterioration: (m) => {
      delete m.routing.shadow;
    },
  });
  dataDir = await tempDir('warm-data');
  await mkdir(area(), { recursive: true });
  const rows = (n: number, tag: string) =>
    Array.from({ length: n }, (_, i) => `${JSON.stringify({ id: `${tag}-${i}`, ...news2Row(i) })}\n`).join('');
  await writeFile(path.join(area(), 'small.ndjson'), rows(200, 's'));
  await writeFile(path.join(area(), 'long.ndjson'), rows(LONG_ROWS, 'l'));
  await writeFile(
    path.join(area(), 'vitals.ndjson'),
    VITALS.map((v, i) => `${JSON.stringify({ id: `v-${i}`, ...v })}\n`).join(''),
  );
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: ['batch'], reload: true });
});

after(async () => {
  await gw?.close();
  await deletePrefix(prefix);
  await removeDir(modelsDir);
  await removeDir(dataDir);
});

function threads(): BatchThreads {
  const t = gw.gateway.workers?.batchThreads;
  assert.ok(t, 'the batch worker has warm threads');
  return t;
}

async function submit(model: string, file: string): Promise<string> {
  const res = await gw.call('POST', `/v1/models/${model}/batches`, keys.client, {
    input: { path: `inputs/${file}`, format: 'ndjson' },
  });
  assert.equal(res.status, 202, res.text);
  return res.body.id as string;
}

async function completed(id: string, rows: number): Promise<void> {
  const { final } = await waitForRun(gw, keys.client, id);
  assert.equal(final.status, 200, final.text);
  const run = await gw.gateway.services.runs.get(id);
  assert.equal(run?.state, 'completed');
  assert.equal(run?.scored, rows);
}

/** The run's output rows: id → the prediction line. */
async function output(id: string): Promise<Map<string, { version: string; prediction: Record<string, unknown> }>> {
  const run = await gw.gateway.services.runs.get(id);
  assert.ok(run);
  const lines = (await readFile(path.join(dataDir, run.dir, 'output.ndjson'), 'utf8')).split('\n').filter(Boolean);
  const out = new Map<string, { version: string; prediction: Record<string, unknown> }>();
  for (const line of lines) {
    const row = JSON.parse(line);
    assert.ok(!out.has(row.id), `row ${row.id} written once`);
    out.set(row.id, row);
  }
  assert.equal(out.size, lines.length);
  return out;
}

describe('a warm batch thread', () => {
  test('is started with the gateway, and a second run scores in the thread the first did', async () => {
    // one thread, loaded before any run was asked for
    assert.equal(threads().started, 1);
    const [first] = threads().idleThreadIds;
    assert.ok(first !== undefined);
    await completed(await submit('news2', 'small.ndjson'), 200);
    await completed(await submit('news2', 'small.ndjson'), 200);
    assert.equal(threads().started, 1, 'no thread started for either run');
    assert.deepEqual(threads().idleThreadIds, [first], 'the same thread waits for the next run');
  });

  test('a thread that crashes mid-run fails only that attempt: the run resumes on a new thread, every row once', {
    timeout: 120_000,
  }, async () => {
    const startedBefore = threads().started;
    const [crashing] = threads().idleThreadIds;
    const long = await submit('news2', 'long.ndjson');
    await waitFor(async () => ((await gw.gateway.services.runs.get(long))?.rowsDone ?? 0) > 0, 'a committed chunk');
    assert.deepEqual(threads().busyThreadIds, [crashing], 'the run scores in the warm thread');
    // an exception nothing catches, on the thread's event loop mid-run: the thread dies without an answer
    assert.equal(threads().crashBusyThread(), crashing);
    // another run, queued behind the crashed one's retry: untouched by it
    const other = await submit('news2', 'small.ndjson');
    await completed(other, 200);
    await completed(long, LONG_ROWS);
    const rows = await output(long);
    assert.equal(rows.size, LONG_ROWS, 'every row of the crashed run once: no gap, no duplicate');
    for (let i = 0; i < LONG_ROWS; i += 997) assert.ok(rows.has(`l-${i}`), `row l-${i}`);
    // the crashed thread was replaced once, and the replacement kept for both runs
    assert.equal(threads().started, startedBefore + 1);
    assert.equal(threads().idleThreadIds.length, 1);
    assert.notEqual(threads().idleThreadIds[0], crashing);
  });

  test('a new artifact between two runs is scored by a new session, not the one the thread kept', async () => {
    const v1 = await scoreOnnx('1', VITALS, modelsDir);
    const v2 = await scoreOnnx('2', VITALS, modelsDir);
    assert.notDeepEqual(v1, v2, 'the two artifacts score these rows differently');
    const before = await output(await completedRun('deterioration', 'vitals.ndjson', VITALS.length));
    VITALS.forEach((_, i) => {
      assert.equal(before.get(`v-${i}`)?.prediction.deteriorationRisk, v1[i]);
    });
    // version 1 now names version 2's weights: the same version id, a new file and sha256 (what runtimeKey holds)
    await copyFile(
      path.join(modelsDir, 'deterioration', '2', 'model.onnx'),
      path.join(modelsDir, 'deterioration', '1', 'model.onnx'),
    );
    await editManifest(modelsDir, 'deterioration', (m) => {
      m.versions[0].runtime.sha256 = m.versions[1].runtime.sha256;
    });
    const reloaded = await gw.call('POST', '/v1/admin/reload', keys.admin);
    assert.equal(reloaded.status, 200, reloaded.text);
    const started = threads().started;
    const afterSwap = await output(await completedRun('deterioration', 'vitals.ndjson', VITALS.length));
    VITALS.forEach((_, i) => {
      const row = afterSwap.get(`v-${i}`);
      assert.equal(row?.version, '1');
      assert.equal(row?.prediction.deteriorationRisk, round6(v2[i] as number), `row ${i} scored by the new artifact`);
    });
    assert.equal(threads().started, started, 'in the same warm thread');
  });
});

async function completedRun(model: string, file: string, rows: number): Promise<string> {
  const id = await submit(model, file);
  await completed(id, rows);
  return id;
}

describe('a batch thread that stops answering mid-run', () => {
  test('is let go after hangAfterMs: the run attempt fails (never waits for ever) and the next run gets a new thread', async () => {
    const logs = captureLogs('warn');
    const pool = new BatchThreads({
      config: { redisUrl: REDIS_URL, prefix, dataDir, onnxThreads: 1, nice: 0, monitoring: false },
      hangAfterMs: 400,
      logger: logs.logger,
    });
    try {
      const model = await deteriorationModel();
      pool.warm();
      const [stuck] = pool.idleThreadIds;
      // no such run: a thread that answers says so at once; this one is held in a busy loop first (an injected fault:
      // what a runaway computation, or a native call that never returns, looks like from the parent)
      const started = performance.now();
      const first = pool.run(
        { runId: 'no-such-run', model, routing: routingFromManifest(model.manifest), chunkTimeoutMs: 1000 },
        () => {},
      );
      assert.equal(pool.hangBusyThread(3_000), stuck);
      await assert.rejects(first, /batch thread unresponsive/);
      const waited = performance.now() - started;
      assert.ok(waited < 2_500, `let go after ${Math.round(waited)} ms, not when the thread came back`);
      assert.ok(logs.lines.some((l) => l.includes('batch thread unresponsive')));
      // the next run is answered by a new thread, while the stuck one is still stuck
      await assert.rejects(
        pool.run(
          { runId: 'no-such-run-either', model, routing: routingFromManifest(model.manifest), chunkTimeoutMs: 1000 },
          () => {},
        ),
        /run no-such-run-either not found/,
      );
      assert.equal(pool.started, 2);
    } finally {
      await pool.close();
    }
  });
});

describe('an idle batch thread that dies', () => {
  test('is replaced at once, so the next run starts warm; one that keeps dying, at most every IDLE_REPLACE_EVERY_MS', async () => {
    const logs = captureLogs('warn');
    const pool = new BatchThreads({
      config: { redisUrl: REDIS_URL, prefix, dataDir, onnxThreads: 1, nice: 0, monitoring: false },
      hangAfterMs: 60_000,
      logger: logs.logger,
    });
    try {
      const model = await deteriorationModel();
      pool.warm();
      const [first] = pool.idleThreadIds;
      // an exception nothing catches on the waiting thread's event loop: it exits with no run to fail
      assert.equal(pool.crashIdleThread(), first);
      await waitFor(async () => pool.idleThreadIds.length === 1 && pool.idleThreadIds[0] !== first, 'a replacement');
      assert.equal(pool.started, 2);
      assert.ok(logs.lines.some((l) => l.includes('an idle batch thread exited') && l.includes('"replaceInMs":0')));
      // the next run scores in the replacement: no thread started for it
      const [replacement] = pool.idleThreadIds;
      await assert.rejects(
        pool.run(
          { runId: 'no-such-run', model, routing: routingFromManifest(model.manifest), chunkTimeoutMs: 1000 },
          () => {},
        ),
        /run no-such-run not found/,
      );
      assert.equal(pool.started, 2, 'the run was answered by the replacement');
      // (a run's failure that may be the thread's lets it go: the next thread is started as the pool is warmed)
      assert.deepEqual(pool.idleThreadIds, []);
      pool.warm();
      const [third] = pool.idleThreadIds;
      assert.notEqual(third, replacement);
      // it dies too, soon after the last replacement: its own replacement waits for its turn (a fault that kills
      // every new thread is not a loop of loads)
      assert.equal(pool.crashIdleThread(), third);
      await waitFor(async () => pool.idleThreadIds.length === 0, 'the third thread gone');
      await waitFor(
        async () => logs.lines.filter((l) => l.includes('an idle batch thread exited')).length === 2,
        'logged',
      );
      const second = logs.lines.filter((l) => l.includes('an idle batch thread exited'))[1] as string;
      const waitMs = Number(/"replaceInMs":(\d+)/.exec(second)?.[1]);
      assert.ok(waitMs > IDLE_REPLACE_EVERY_MS / 2 && waitMs <= IDLE_REPLACE_EVERY_MS, `waits ${waitMs} ms`);
      assert.equal(pool.started, 3, 'not replaced yet');
    } finally {
      // close drops the waiting replacement: no thread is started after it
      await pool.close();
    }
    assert.equal(pool.started, 3);
    assert.deepEqual(pool.idleThreadIds, []);
  });
});

async function deteriorationModel() {
  const [model] = (await loadModels(modelsDir, 5_000)).filter((m) => m.manifest.name === 'deterioration');
  assert.ok(model);
  return model;
}
