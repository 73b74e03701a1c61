/**
 * Batch schedules on real Redis and BullMQ job schedulers: the admin API (PUT is an idempotent upsert, GET lists,
 * DELETE removes), a per-second cron that fires and writes output, the missed-slot policy (skip or catch up), manifest
 * schedules upserted by two gateway "replicas" at once (one scheduler, one record) that survive a restart, the
 * last-success metric, and the bad-input table of /v1/schedules.
 */
import assert from 'node:assert/strict';
import { access, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { ScheduleService, syncManifestSchedules } from '../src/batch/schedules.ts';
import { AuditLog } from '../src/platform/audit.ts';
import { KeySpace } from '../src/platform/keyspace.ts';
import { createLogger } from '../src/platform/logger.ts';
import { scheduleSchema } from '../src/registry/schema.ts';
import { createBatchQueue, scheduledRunId, schedulerPort } from '../workers/batch-queue.ts';
import {
  buildGateway,
  captureLogs,
  deletePrefix,
  download,
  fireSlot,
  jobSchedulers,
  makeKeys,
  makePrefix,
  metricValue,
  news2Row,
  REDIS_URL,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForRun,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('schedules');
const logs = captureLogs('debug');
const SMALL_ROWS = 20;

let modelsDir: string;
let dataDir: string;
/** runs the batch worker in this process */
let gw: TestGateway;

before(async () => {
  modelsDir = await tempModels({ news2: null, 'note-triage': null });
  dataDir = await tempDir('schedules-data');
  await mkdir(path.join(dataDir, 'inputs'), { recursive: true });
  await writeFile(
    path.join(dataDir, 'inputs', 'small.ndjson'),
    `${Array.from({ length: SMALL_ROWS }, (_, i) => JSON.stringify({ id: `sched-row-${i}`, ...news2Row(i) })).join('\n')}\n`,
  );
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: ['batch'], logger: logs.logger });
});

after(async () => {
  await gw?.close();
  await deletePrefix(prefix);
  await removeDir(modelsDir);
  await removeDir(dataDir);
});

/** A schedule that will not fire during the test (00:00 on 1 January). */
const yearly = (extra: Record<string, unknown> = {}) => ({
  model: 'news2',
  cron: '0 0 1 1 *',
  timezone: 'UTC',
  input: { path: 'inputs/small.ndjson', format: 'ndjson' },
  // who may read its runs besides admins (allowing the model is not enough: a schedule scores a population)
  readers: ['client'],
  ...extra,
});

async function schedulerIds(g: TestGateway = gw): Promise<string[]> {
  return (await jobSchedulers(g)).map((s) => s.key);
}

/** The runs of a schedule (their ids derive from the schedule and the slot: scheduledRunId). */
async function runsOf(scheduleId: string) {
  const ids = await gw.gateway.services.runs.list(0, 1000);
  const runs = await Promise.all(ids.map((id) => gw.gateway.services.runs.get(id)));
  return runs.filter((r) => r !== undefined && r.scheduleId === scheduleId) as NonNullable<(typeof runs)[0]>[];
}

describe('the admin API', () => {
  test('PUT creates (201), the same definition again is 200, GET lists it, DELETE → 204 then 404', async () => {
    const first = await gw.call('PUT', '/v1/schedules/hourly-news2', keys.admin, yearly({ missed: 'catch-up' }));
    assert.equal(first.status, 201, first.text);
    assert.deepEqual(
      { ...first.body, updatedAt: undefined },
      {
        id: 'hourly-news2',
        model: 'news2',
        cron: '0 0 1 1 *',
        timezone: 'UTC',
        input: { path: 'inputs/small.ndjson', format: 'ndjson' },
        missed: 'catch-up',
        readers: ['client'],
        source: 'api',
        updatedAt: undefined,
        updatedBy: 'admin',
      },
    );
    const again = await gw.call('PUT', '/v1/schedules/hourly-news2', keys.admin, yearly({ missed: 'catch-up' }));
    assert.equal(again.status, 200, again.text);
    assert.equal(again.body.updatedAt, first.body.updatedAt, 'unchanged');

    const list = await gw.call('GET', '/v1/schedules', keys.admin);
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.body.schedules.map((s: { id: string }) => s.id),
      ['hourly-news2'],
    );
    const schedulers = await jobSchedulers(gw);
    assert.equal(schedulers.length, 1);
    assert.equal(schedulers[0]?.key, 'hourly-news2');
    assert.equal(schedulers[0]?.model, 'news2', "on the schedule's model shard");
    assert.equal(schedulers[0]?.pattern, '0 0 1 1 *');

    // a changed definition moves the one scheduler
    const changed = await gw.call('PUT', '/v1/schedules/hourly-news2', keys.admin, yearly({ cron: '0 0 2 1 *' }));
    assert.equal(changed.status, 200, changed.text);
    assert.equal(changed.body.missed, 'skip', 'missed defaults to skip');
    const moved = await jobSchedulers(gw);
    assert.deepEqual(
      moved.map((s) => [s.key, s.pattern]),
      [['hourly-news2', '0 0 2 1 *']],
    );

    assert.equal((await gw.call('DELETE', '/v1/schedules/hourly-news2', keys.admin)).status, 204);
    const gone = await gw.call('DELETE', '/v1/schedules/hourly-news2', keys.admin);
    assert.equal(gone.status, 404);
    assert.equal(gone.body.code, 'not_found');
    assert.deepEqual(await schedulerIds(), []);
    assert.deepEqual((await gw.call('GET', '/v1/schedules', keys.admin)).body.schedules, []);
  });

  const cases: Array<{
    name: string;
    id?: string;
    body: unknown;
    key?: string;
    ct?: string;
    status: number;
    code: string;
  }> = [
    { name: 'a client key', body: yearly(), key: 'client', status: 403, code: 'forbidden' },
    { name: 'a reviewer key', body: yearly(), key: 'reviewer', status: 403, code: 'forbidden' },
    { name: 'no key', body: yearly(), key: '', status: 401, code: 'unauthenticated' },
    { name: 'cron 61 * * * *', body: yearly({ cron: '61 * * * *' }), status: 400, code: 'invalid_request' },
    { name: 'cron "not a cron"', body: yearly({ cron: 'not a cron' }), status: 400, code: 'invalid_request' },
    { name: 'an empty cron', body: yearly({ cron: '' }), status: 400, code: 'invalid_request' },
    {
      name: 'an unknown time zone',
      body: yearly({ timezone: 'Mars/Olympus_Mons' }),
      status: 400,
      code: 'invalid_request',
    },
    { name: 'a bad id in the path', id: 'Bad_ID', body: yearly(), status: 400, code: 'invalid_request' },
    { name: 'an id too long', id: 'x'.repeat(64), body: yearly(), status: 400, code: 'invalid_request' },
    { name: 'an unknown model', body: yearly({ model: 'no-such-model' }), status: 404, code: 'model_not_found' },
    { name: 'no model', body: { ...yearly(), model: undefined }, status: 404, code: 'model_not_found' },
    { name: 'a document model', body: yearly({ model: 'note-triage' }), status: 409, code: 'wrong_tier' },
    { name: 'missing input', body: { ...yearly(), input: undefined }, status: 400, code: 'invalid_request' },
    {
      name: 'an input outside the data dir',
      body: yearly({ input: { path: '../etc/passwd', format: 'ndjson' } }),
      status: 404,
      code: 'not_found',
    },
    {
      name: 'an input that does not exist',
      body: yearly({ input: { path: 'inputs/none.ndjson', format: 'ndjson' } }),
      status: 404,
      code: 'not_found',
    },
    {
      name: 'a run’s output as input',
      body: yearly({ input: { path: 'batches/x/output.ndjson', format: 'ndjson' } }),
      status: 404,
      code: 'not_found',
    },
    {
      name: 'readers not key ids',
      body: yearly({ readers: ['not a key id'] }),
      status: 400,
      code: 'invalid_request',
    },
    {
      name: 'an input of the wrong format',
      body: yearly({ input: { path: 'inputs/small.ndjson', format: 'csv' } }),
      status: 400,
      code: 'invalid_input_file',
    },
    { name: 'an id differing from the path', body: yearly({ id: 'other-id' }), status: 400, code: 'invalid_request' },
    { name: 'an unknown field', body: yearly({ retries: 3 }), status: 400, code: 'invalid_request' },
    {
      name: 'missed neither skip nor catch-up',
      body: yearly({ missed: 'sometimes' }),
      status: 400,
      code: 'invalid_request',
    },
    { name: 'bad JSON', body: '{"model":', status: 400, code: 'malformed_json' },
    { name: 'a body that is an array', body: '[]', status: 400, code: 'invalid_request' },
    { name: 'the wrong content type', body: 'x', ct: 'text/plain', status: 415, code: 'unsupported_media_type' },
  ];

  for (const c of cases) {
    test(`PUT schedules: ${c.name} → ${c.status} ${c.code}`, async () => {
      const key =
        c.key === undefined ? keys.admin : c.key === '' ? undefined : c.key === 'client' ? keys.client : keys.reviewer;
      const res = await gw.call(
        'PUT',
        `/v1/schedules/${c.id ?? 'bad-input'}`,
        key,
        c.body,
        c.ct ? { 'content-type': c.ct } : {},
      );
      assert.equal(res.status, c.status, res.text);
      assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
      assert.equal(res.body.code, c.code, res.text);
      assert.deepEqual(await schedulerIds(), [], 'nothing was scheduled');
    });
  }

  test('listing and deleting need an admin', async () => {
    for (const [method, url] of [
      ['GET', '/v1/schedules'],
      ['DELETE', '/v1/schedules/anything'],
    ] as const) {
      const res = await gw.call(method, url, keys.client);
      assert.equal(res.status, 403, `${method} ${url}`);
      assert.equal(res.body.code, 'forbidden');
    }
  });
});

describe('a per-second schedule', () => {
  test('fires, each slot one run (its id derived from the slot) that writes output; DELETE stops it', async () => {
    const put = await gw.call('PUT', '/v1/schedules/every-second', keys.admin, yearly({ cron: '* * * * * *' }));
    assert.equal(put.status, 201, put.text);
    await waitFor(
      async () => (await runsOf('every-second')).some((r) => r.state === 'completed'),
      'a per-second slot to complete a run',
      30_000,
    );
    assert.equal((await gw.call('DELETE', '/v1/schedules/every-second', keys.admin)).status, 204);
    assert.deepEqual(await schedulerIds(), []);
    const queue = gw.gateway.services.queues.batch.for('news2');
    // slots already queued finish (or find their schedule gone); nothing new is scheduled
    await waitFor(
      async () => (await queue.getJobs(['waiting', 'active', 'delayed', 'prioritized'])).length === 0,
      'the queue to drain',
      30_000,
    );
    const runs = await runsOf('every-second');
    assert.ok(runs.length >= 1);
    for (const run of runs) {
      assert.ok(run.state === 'completed' || run.state === 'skipped', `${run.id}: ${run.state}`);
      const slot = run.asOf;
      assert.equal(slot % 1000, 0, 'a per-second slot starts on a whole second');
      assert.equal(
        run.id,
        scheduledRunId(gw.gateway.services.keyspace, 'news2', 'every-second', slot),
        'the slot names the run',
      );
      assert.equal(run.scheduleId, 'every-second');
      assert.equal(run.requestedBy, 'schedule:every-second');
    }

    const done = runs.find((r) => r.state === 'completed');
    assert.ok(done);
    const status = await gw.call('GET', `/v1/batches/${done.id}`, keys.client);
    assert.equal(status.status, 200, status.text);
    assert.equal(status.body.request, 'http://localhost/v1/schedules');
    assert.equal(status.body.requiresAccessToken, true);
    assert.equal(status.body.output[0].count, SMALL_ROWS);
    const output = await download(gw, keys.client, status.body.output[0].url);
    assert.deepEqual(
      output.map((r) => r.id),
      Array.from({ length: SMALL_ROWS }, (_, i) => `sched-row-${i}`),
    );
    // a scheduled run is visible to the schedule's readers only, not to every client allowed its model
    assert.equal((await gw.call('GET', `/v1/batches/${done.id}`, keys.deteriorationOnly)).status, 404);
    for (const url of [`/v1/batches/${done.id}`, `/v1/batches/${done.id}/files/output.ndjson`]) {
      assert.equal((await gw.call('GET', url, keys.other)).status, 404, url);
    }

    // its last success, per schedule, in the metrics
    const metrics = (await gw.call('GET', '/metrics', undefined)).text;
    const last = metricValue(metrics, 'triage_batch_last_success_timestamp_seconds', { schedule: 'every-second' });
    const newest = Math.max(...runs.filter((r) => r.state === 'completed').map((r) => r.finishedAt ?? 0));
    assert.equal(last, newest / 1000);
  });
});

describe('a slot missed while the workers were down', () => {
  const hourAgo = () => Math.floor((Date.now() - 3600_000) / 1000) * 1000;

  /** Adds the job a job scheduler adds for a slot (`repeat:<scheduler id>:<slot millis>`) and waits for it. */
  async function runSlot(scheduleId: string, slot: number): Promise<unknown> {
    const { job } = await fireSlot(gw, 'news2', scheduleId, slot);
    await waitFor(async () => (await job.getState()) === 'completed', `slot ${scheduleId}@${slot}`, 30_000);
    return (await gw.gateway.services.queues.batch.for('news2').getJob(job.id as string))?.returnvalue;
  }
  const slotRun = (scheduleId: string, slot: number) =>
    scheduledRunId(gw.gateway.services.keyspace, 'news2', scheduleId, slot);

  test('missed: skip records a skipped run without output; an on-time slot of it still runs', async () => {
    assert.equal((await gw.call('PUT', '/v1/schedules/late-skip', keys.admin, yearly({ missed: 'skip' }))).status, 201);
    const slot = hourAgo();
    await runSlot('late-skip', slot);
    const run = await gw.gateway.services.runs.get(slotRun('late-skip', slot));
    assert.equal(run?.state, 'skipped');
    assert.equal(run?.scored, 0);
    await assert.rejects(access(path.join(dataDir, run?.dir ?? 'batches/none')), 'no output was written');
    const status = await gw.call('GET', `/v1/batches/${slotRun('late-skip', slot)}`, keys.client);
    assert.equal(status.status, 200, status.text);
    assert.equal(status.body.state, 'skipped');
    assert.match(status.body.reason, /missed/);
    assert.equal(
      (await gw.call('GET', `/v1/batches/${slotRun('late-skip', slot)}/files/output.ndjson`, keys.client)).status,
      404,
    );

    const onTime = Math.floor(Date.now() / 1000) * 1000;
    await runSlot('late-skip', onTime);
    assert.equal((await gw.gateway.services.runs.get(slotRun('late-skip', onTime)))?.state, 'completed');
    assert.equal((await gw.call('DELETE', '/v1/schedules/late-skip', keys.admin)).status, 204);
  });

  test('missed: catch-up runs the late slot', async () => {
    const put = await gw.call('PUT', '/v1/schedules/late-catch', keys.admin, yearly({ missed: 'catch-up' }));
    assert.equal(put.status, 201);
    const slot = hourAgo();
    await runSlot('late-catch', slot);
    const run = await gw.gateway.services.runs.get(slotRun('late-catch', slot));
    assert.equal(run?.state, 'completed');
    assert.equal(run?.scored, SMALL_ROWS);
    assert.equal(run?.asOf, slot, 'scored as of the missed slot');
    const { final } = await waitForRun(gw, keys.client, slotRun('late-catch', slot));
    assert.equal(final.status, 200);
    assert.equal(final.body.output[0].count, SMALL_ROWS);
    assert.equal((await gw.call('DELETE', '/v1/schedules/late-catch', keys.admin)).status, 204);
  });

  test('a slot of a schedule deleted meanwhile creates no run', async () => {
    const slot = hourAgo() + 1000;
    assert.equal(await runSlot('late-catch', slot), 'schedule removed');
    assert.equal(await gw.gateway.services.runs.get(slotRun('late-catch', slot)), undefined);
  });
});

describe('manifest schedules and gateway replicas', () => {
  const replicaPrefix = makePrefix('schedules-replicas');
  const schedule = {
    id: 'news2-nightly',
    cron: '30 2 * * *',
    timezone: 'Europe/London',
    input: { path: 'inputs/small.ndjson', format: 'ndjson' },
    missed: 'catch-up',
  };
  let scheduledModels: string;
  let plainModels: string;

  before(async () => {
    scheduledModels = await tempModels({
      news2: (m) => {
        m.schedules = [schedule];
      },
    });
    plainModels = await tempModels({ news2: null });
  });
  after(async () => {
    await deletePrefix(replicaPrefix);
    await removeDir(scheduledModels);
    await removeDir(plainModels);
  });

  const replica = (models: string) =>
    buildGateway({ prefix: replicaPrefix, keys, modelsDir: models, dataDir, workers: [] });

  async function state(g: TestGateway) {
    const list = await g.call('GET', '/v1/schedules', keys.admin);
    assert.equal(list.status, 200);
    const delayed = await g.gateway.services.queues.batch.for('news2').getDelayed();
    return {
      schedules: list.body.schedules.map((s: Record<string, unknown>) => ({ ...s, updatedAt: undefined })),
      schedulers: (await jobSchedulers(g)).map((s) => [s.key, s.pattern, s.tz]),
      next: delayed.map((j) => j.id),
    };
  }

  test('two replicas upserting the same manifest schedule at once: one scheduler, one record, one next slot', async () => {
    const [a, b] = await Promise.all([replica(scheduledModels), replica(scheduledModels)]);
    try {
      for (const g of [a, b]) {
        const s = await state(g);
        assert.deepEqual(s.schedulers, [['news2-nightly', '30 2 * * *', 'Europe/London']]);
        assert.deepEqual(s.schedules, [
          { ...schedule, model: 'news2', source: 'manifest', updatedAt: undefined, updatedBy: 'system' },
        ]);
        assert.equal(s.next.length, 1);
        assert.match(s.next[0] ?? '', /^repeat:news2-nightly:\d+$/);
      }
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test('eight replicas syncing at the same moment still make one scheduler, one record, one next slot', async () => {
    const stressPrefix = makePrefix('schedules-stress');
    const connections = Array.from({ length: 8 }, () => new Redis(REDIS_URL, { maxRetriesPerRequest: 1 }));
    const queues = connections.map((r) =>
      createBatchQueue(r, new KeySpace(stressPrefix, ['news2']), createLogger('silent')),
    );
    const services = connections.map(
      (r, i) =>
        new ScheduleService(
          r,
          stressPrefix,
          schedulerPort(queues[i] as (typeof queues)[0]),
          new AuditLog(r, new KeySpace(stressPrefix)),
        ),
    );
    try {
      const manifests = [{ name: 'news2', schedules: [scheduleSchema.parse(schedule)] }];
      await Promise.all(services.map((s) => syncManifestSchedules(s, manifests)));
      const queue = (queues[0] as (typeof queues)[0]).for('news2');
      assert.deepEqual(
        (await queue.getJobSchedulers()).map((s) => s.key),
        ['news2-nightly'],
      );
      assert.equal((await services[0]?.list())?.length, 1);
      assert.equal((await queue.getDelayed()).length, 1);
    } finally {
      await Promise.all(queues.map((q) => q.close()));
      for (const r of connections) r.disconnect();
      await deletePrefix(stressPrefix);
    }
  });

  test("a schedule moved to another model moves its scheduler to that model's shard, never both", async () => {
    const movePrefix = makePrefix('schedules-move');
    const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    const keySpace = new KeySpace(movePrefix, ['news2', 'readmission']);
    const queues = createBatchQueue(redis, keySpace, createLogger('silent'));
    const service = new ScheduleService(redis, movePrefix, schedulerPort(queues), new AuditLog(redis, keySpace));
    const onShard = async (model: string) => (await queues.for(model).getJobSchedulers()).map((s) => s.key);
    try {
      const admin = { id: 'admin', role: 'admin' };
      await service.put('news2', schedule, admin, 'api');
      assert.deepEqual([await onShard('news2'), await onShard('readmission')], [['news2-nightly'], []]);
      await service.put('readmission', schedule, admin, 'api');
      assert.deepEqual([await onShard('news2'), await onShard('readmission')], [[], ['news2-nightly']]);
      assert.equal((await queues.for('news2').getDelayed()).length, 0, 'no slot left on the old shard');
      assert.equal((await service.get('news2-nightly'))?.model, 'readmission');
      await service.remove('news2-nightly', admin);
      assert.deepEqual([await onShard('news2'), await onShard('readmission')], [[], []]);
    } finally {
      await queues.close();
      redis.disconnect();
      await deletePrefix(movePrefix);
    }
  });

  test('a scheduler lost while its record stayed (a crash between the two writes) is back after a restart', async () => {
    const first = await replica(scheduledModels);
    const before = await state(first);
    await first.gateway.services.queues.batch.for('news2').removeJobScheduler('news2-nightly');
    assert.deepEqual(await schedulerIds(first), []);
    await first.close();
    const again = await replica(scheduledModels);
    try {
      const s = await state(again);
      assert.deepEqual(s.schedulers, before.schedulers);
      assert.equal(s.next.length, 1);
    } finally {
      await again.close();
    }
  });

  test('they survive a restart (still one), and leave with the manifest entry', async () => {
    const first = await replica(scheduledModels);
    const before = await state(first);
    await first.close();
    const again = await replica(scheduledModels);
    try {
      assert.deepEqual(await state(again), before);
      assert.equal(before.schedulers.length, 1);
      assert.equal(before.next.length, 1);
    } finally {
      await again.close();
    }
    const without = await replica(plainModels);
    try {
      const s = await state(without);
      assert.deepEqual(s.schedulers, []);
      assert.deepEqual(s.schedules, []);
    } finally {
      await without.close();
    }
  });
});

describe('what must not show', () => {
  test('the logs carry no row ids', () => {
    const text = logs.lines.join('\n');
    assert.ok(text.includes('batch run completed'));
    assert.ok(!text.includes('sched-row-'));
  });
});
