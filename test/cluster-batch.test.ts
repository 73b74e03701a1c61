/**
 * The batch tier on a real Redis Cluster (three primaries, three replicas, started from redis-server for this file),
 * with two gateways and two real worker processes (`node --import tsx workers/main.ts batch`):
 * - a batch run works per shard: its record, its BullMQ job and its review hold (with the hold's audit entries) live in
 *   its model's shard on that shard's primary, it is found from its id through either gateway, and a worker told to
 *   serve other shards (TRIAGE_WORKER_SHARDS) never takes it;
 * - a schedule every three seconds, upserted by both gateways at start, fires each slot once: one job and one run per
 *   fire time, scored once, however many gateways and worker processes there are.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { LocalCluster } from '../src/devtools/local-cluster.ts';
import { createLogger } from '../src/platform/logger.ts';
import { createQueue } from '../src/platform/queue.ts';
import { BATCH_QUEUE, scheduledRunId } from '../workers/batch-queue.ts';
import {
  buildGateway,
  jobSchedulers,
  makeKeys,
  news2Row,
  placeDischarges,
  REPO_DIR,
  removeDir,
  retryingOn503,
  sleep,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForRun,
} from './support/index.ts';

const keys = makeKeys();
/**
 * The cluster is this file's own. This prefix puts the global tag and the shards of news2 and readmission (the batch
 * models loaded here) on three different primaries (checked below); `{triage}` happens to put both models on one.
 */
const PREFIX = '{nightly}';
const NEWS2_SHARD = '{nightly:news2}';
const READMISSION_SHARD = '{nightly:readmission}';
const VITALS_ROWS = 30;
const SCHEDULE = {
  id: 'vitals-every-3s',
  cron: '*/3 * * * * *',
  timezone: 'UTC',
  input: { path: 'inputs/vitals.ndjson', format: 'ndjson' },
  readers: ['client'],
};
/** fire times to see before the schedule is stopped */
const SLOTS = 4;

let cluster: LocalCluster;
let modelsDir: string;
let dataDir: string;
let gateways: TestGateway[] = [];
const workers: WorkerProcess[] = [];

interface WorkerProcess {
  name: string;
  child: ChildProcess;
  output: string[];
  exited: Promise<void>;
}

/** A real worker process running the batch worker against the cluster; `shards` sets TRIAGE_WORKER_SHARDS. */
async function startWorker(name: string, shards?: string): Promise<WorkerProcess> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('TRIAGE_') && !k.startsWith('NODE_TEST')) env[k] = v;
  }
  Object.assign(env, {
    TRIAGE_ENV: 'production',
    TRIAGE_REDIS_URL: cluster.url,
    TRIAGE_REDIS_PREFIX: PREFIX,
    TRIAGE_MODELS_DIR: modelsDir,
    TRIAGE_DATA_DIR: dataDir,
    TRIAGE_API_KEYS: keys.yaml,
    TRIAGE_WORKERS: 'batch',
    TRIAGE_ONNX_THREADS: '1',
    TRIAGE_LOG_LEVEL: 'info',
    ...(shards ? { TRIAGE_WORKER_SHARDS: shards } : {}),
  });
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/main.ts', 'batch'], {
    cwd: REPO_DIR,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const w: WorkerProcess = {
    name,
    child,
    output: [],
    exited: new Promise((resolve) => child.once('exit', () => resolve())),
  };
  child.stdout?.on('data', (d: Buffer) => w.output.push(d.toString()));
  child.stderr?.on('data', (d: Buffer) => w.output.push(d.toString()));
  workers.push(w);
  await waitFor(
    () => w.output.join('').includes('workers started') || child.exitCode !== null,
    `worker ${name} to start`,
    60_000,
  );
  assert.equal(child.exitCode, null, `worker ${name} exited: ${w.output.join('')}`);
  return w;
}

async function stopWorker(w: WorkerProcess): Promise<void> {
  if (w.child.exitCode !== null || w.child.signalCode !== null) return;
  w.child.kill('SIGTERM');
  const timeout = setTimeout(() => w.child.kill('SIGKILL'), 15_000);
  await w.exited;
  clearTimeout(timeout);
}

/** The run ids a worker process logged as completed. */
function completedBy(w: WorkerProcess): string[] {
  return w.output
    .join('')
    .split('\n')
    .filter((l) => l.startsWith('{') && l.endsWith('}'))
    .map((l) => JSON.parse(l) as { msg?: string; runId?: string })
    .filter((l) => l.msg === 'batch run completed' && l.runId !== undefined)
    .map((l) => l.runId as string);
}

before(async () => {
  cluster = await LocalCluster.start();
  modelsDir = await tempModels({
    news2: (m) => {
      m.schedules = [SCHEDULE];
    },
    readmission: (m) => {
      m.batch = { ...m.batch, review: { hold: 'run' } };
    },
  });
  dataDir = await tempDir('cluster-batch');
  await placeDischarges(dataDir);
  const vitals = Array.from({ length: VITALS_ROWS }, (_, i) => JSON.stringify({ id: `v-${i}`, ...news2Row(i) }));
  for (const dir of ['inputs', 'clients/client/inputs']) {
    await mkdir(path.join(dataDir, dir), { recursive: true });
    await writeFile(path.join(dataDir, dir, 'vitals.ndjson'), `${vitals.join('\n')}\n`);
  }
  // two gateways starting together: each upserts the manifest's schedule at the same moment; no workers in them
  const gateway = () => buildGateway({ prefix: PREFIX, keys, modelsDir, dataDir, redisUrl: cluster.url, workers: [] });
  gateways = await Promise.all([gateway(), gateway()]);
  // one worker process serves every shard, the other only news2's
  await Promise.all([startWorker('all'), startWorker('news2-only', 'news2')]);
});

after(async () => {
  for (const w of workers) await stopWorker(w);
  // bounded: a gateway's close must not keep the cluster up (npm test's --test-force-exit ends the rest)
  await Promise.race([Promise.all(gateways.map((g) => g.close())), sleep(60_000)]);
  await cluster?.stop();
  await removeDir(modelsDir);
  await removeDir(dataDir);
});

/** Whether `key` is on the primary serving its slot; that primary's port. */
async function holder(key: string): Promise<{ port: number; exists: boolean }> {
  const { port } = await cluster.primaryOf(await cluster.keySlot(key));
  const node = new Redis({ port, host: '127.0.0.1' });
  try {
    return { port, exists: (await node.exists(key)) === 1 };
  } finally {
    node.disconnect();
  }
}

describe('the batch tier by model shard on a Redis Cluster', () => {
  test('the global tag and the two batch models’ shards are on three different primaries', async () => {
    const ports = await Promise.all(
      [PREFIX, NEWS2_SHARD, READMISSION_SHARD].map(async (tag) => (await holder(tag)).port),
    );
    assert.equal(new Set(ports).size, 3, `primaries: ${ports.join(', ')}`);
  });

  test('a batch run works per shard: record, job, hold and audit on its shard’s primary, found by id anywhere', async () => {
    const [a, b] = gateways as [TestGateway, TestGateway];
    const held = await retryingOn503(() =>
      a.call('POST', '/v1/models/readmission/batches', keys.client, {
        input: { path: 'inputs/discharges.ndjson', format: 'ndjson' },
      }),
    );
    assert.equal(held.status, 202, held.text);
    const open = await retryingOn503(() =>
      b.call('POST', '/v1/models/news2/batches', keys.client, {
        input: { path: 'inputs/vitals.ndjson', format: 'ndjson' },
      }),
    );
    assert.equal(open.status, 202, open.text);

    // found from its id alone, through the gateway that did not accept it
    const { final } = await waitForRun(a, keys.client, open.body.id, 120_000);
    assert.equal(final.status, 200, final.text);
    assert.equal(final.body.output[0].count, VITALS_ROWS);
    await waitFor(
      async () => (await b.call('GET', `/v1/batches/${held.body.id}`, keys.client)).body.state === 'awaiting_review',
      'the readmission run to be held for review',
      120_000,
    );

    for (const [shard, id] of [
      [NEWS2_SHARD, open.body.id],
      [READMISSION_SHARD, held.body.id],
    ] as const) {
      const record = await holder(`${shard}:batch:${id}`);
      assert.ok(record.exists, `${id}: its run record is on its shard's primary`);
      const job = await holder(`${shard}:${BATCH_QUEUE}:run-${id}`);
      assert.ok(job.exists, `${id}: its BullMQ job is in its shard's batch queue`);
      assert.equal(job.port, record.port);
    }
    const hold = await holder(`${READMISSION_SHARD}:batch-review:${held.body.id}`);
    assert.ok(hold.exists, 'the review hold is in the run’s shard');
    // nothing of the batch tier under the global tag
    const global = new Redis({ port: (await holder(PREFIX)).port, host: '127.0.0.1' });
    try {
      assert.deepEqual(await global.keys(`${PREFIX}:batch*`), []);
    } finally {
      global.disconnect();
    }

    // the review desk's list is assembled from the shards; a decision through the other gateway releases the run
    const list = await b.call('GET', '/v1/batch-reviews', keys.reviewer);
    assert.equal(list.status, 200, list.text);
    assert.deepEqual(
      list.body.items.map((i: { runId: string }) => i.runId),
      [held.body.id],
    );
    const decided = await retryingOn503(() =>
      a.call('POST', `/v1/batch-reviews/${held.body.id}/decision`, keys.reviewer, {
        decision: 'approve',
        reason: 'checked against the ward list',
      }),
    );
    assert.equal(decided.status, 200, decided.text);
    const released = await b.call('GET', `/v1/batches/${held.body.id}`, keys.client);
    assert.equal(released.status, 200, released.text);
    // the run's audit entries are in its shard's own stream (the hold and the decision written in the same step as
    // their change), none in the global one
    const actionsIn = async (stream: string) =>
      (await a.gateway.services.redis.xrange(stream, '-', '+'))
        .map(([, fields]) => JSON.parse(fields[1] as string) as { action: string; target: string })
        .filter((e) => e.target === held.body.id)
        .map((e) => e.action);
    assert.deepEqual(await actionsIn(`${READMISSION_SHARD}:audit`), [
      'batch.submit',
      'batch.hold',
      'batch.review.approve',
    ]);
    assert.deepEqual(await actionsIn(`${PREFIX}:audit`), []);

    // the worker told to serve news2 only never took the readmission run
    const [all, news2Only] = workers as [WorkerProcess, WorkerProcess];
    // logs are written in blocks, at least every 200 ms
    await waitFor(() => completedBy(all).includes(held.body.id), 'the worker serving every shard ran it', 5_000);
    assert.ok(!completedBy(news2Only).includes(held.body.id), 'TRIAGE_WORKER_SHARDS=news2 kept it off that worker');
  });

  test('a schedule fires once per slot with two gateways and two worker processes', async () => {
    const [a, b] = gateways as [TestGateway, TestGateway];
    // both gateways upserted the manifests' schedules at start: one job scheduler each, on its model's shard
    // (readmission's bundled nightly schedule does not fire during the test)
    const nightly = ['readmission-nightly', 'readmission', '0 30 2 * * *'];
    assert.deepEqual(
      (await jobSchedulers(a)).map((s) => [s.key, s.model, s.pattern]),
      [nightly, [SCHEDULE.id, 'news2', SCHEDULE.cron]],
    );
    const runsOf = async () => {
      const { runs } = a.gateway.services;
      const all = await Promise.all((await runs.list(0, 1000)).map((id) => runs.get(id)));
      return all.filter((r) => r?.scheduleId === SCHEDULE.id) as NonNullable<(typeof all)[0]>[];
    };
    await waitFor(
      async () => (await runsOf()).filter((r) => r.state === 'completed' || r.state === 'skipped').length >= SLOTS,
      `${SLOTS} slots to be run`,
      180_000,
    );
    assert.equal((await b.call('DELETE', `/v1/schedules/${SCHEDULE.id}`, keys.admin)).status, 204);
    assert.deepEqual(
      (await jobSchedulers(a)).map((s) => [s.key, s.model, s.pattern]),
      [nightly],
    );
    const queue = a.gateway.services.queues.batch.for('news2');
    await waitFor(
      async () => (await queue.getJobCountByTypes('waiting', 'active', 'delayed', 'prioritized')) === 0,
      'the slots already fired to finish',
      120_000,
    );

    const runs = await runsOf();
    assert.ok(runs.length >= SLOTS);
    // each fire time: one job, on news2's shard only (none in the other shard, none in a global queue)
    const global = createQueue(BATCH_QUEUE, a.gateway.services.redis, PREFIX, createLogger('silent'));
    try {
      const types = ['completed', 'failed', 'active', 'waiting', 'delayed'] as const;
      const jobs = [
        ...(await queue.getJobs([...types])),
        ...(await a.gateway.services.queues.batch.for('readmission').getJobs([...types])),
        ...(await global.getJobs([...types])),
      ].filter((j) => j?.name === 'scheduled-run');
      const perSlot = new Map<number, number>();
      for (const j of jobs) {
        const slot = Number(String(j.id).split(':').pop());
        perSlot.set(slot, (perSlot.get(slot) ?? 0) + 1);
      }
      for (const [slot, n] of perSlot) assert.equal(n, 1, `slot ${slot}: one job`);
      for (const run of runs) assert.ok(perSlot.has(run.asOf), `run ${run.id}: its slot's job`);
    } finally {
      await global.close();
    }
    // each run is the slot's own, scored once by one of the two processes (a process writes its log in blocks, at
    // least every 200 ms: the line may follow the run's record)
    await waitFor(
      () => {
        const logged = workers.flatMap(completedBy);
        return runs.every((r) => r.state !== 'completed' || logged.includes(r.id));
      },
      'the completed runs to be in the workers’ logs',
      5_000,
    );
    const completions = workers.flatMap(completedBy);
    for (const run of runs) {
      assert.equal(run.asOf % 3000, 0, 'a slot on a three-second boundary');
      assert.equal(run.id, scheduledRunId(a.gateway.services.keyspace, 'news2', SCHEDULE.id, run.asOf));
      assert.ok(run.state === 'completed' || run.state === 'skipped', `${run.id}: ${run.state}`);
      if (run.state !== 'completed') continue;
      assert.equal(run.scored, VITALS_ROWS, `${run.id} scored once`);
      assert.equal(completions.filter((id) => id === run.id).length, 1, `${run.id} completed by one process`);
    }
    assert.ok(
      runs.some((r) => r.state === 'completed'),
      'at least one slot ran (the rest may be skipped as missed on busy cores)',
    );
  });
});
