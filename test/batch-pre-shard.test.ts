/**
 * Upgrading a deployment whose batch tier lived under the global tag (before model shards), on real Redis: the state
 * the old version left is written here as it wrote it (a queued run and its job on the global batch queue, an API
 * schedule with its job scheduler there, a run held for review), then a gateway of this version starts on it. The
 * queued run is moved to its model's shard queue and completes; the schedule's job scheduler is now on its model's
 * shard and gone from the global queue; the held run is on the review desk and decided once; old run ids still answer.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { RunHoldStore } from '../src/batch/review-store.ts';
import { RunStore } from '../src/batch/runs.ts';
import { AuditLog } from '../src/platform/audit.ts';
import { KeySpace } from '../src/platform/keyspace.ts';
import { createLogger } from '../src/platform/logger.ts';
import { createQueue } from '../src/platform/queue.ts';
import { BATCH_QUEUE, type BatchJobData, batchJobOptions } from '../workers/batch-queue.ts';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  jobSchedulers,
  makeKeys,
  makePrefix,
  news2Row,
  REDIS_URL,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitForRun,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('pre-shard');
const ROWS = 12;
const queuedId = randomUUID();
const heldId = randomUUID();
const SCHEDULE = {
  id: 'legacy-nightly',
  model: 'news2',
  cron: '0 0 1 1 *', // never fires during the test
  timezone: 'UTC',
  input: { path: 'inputs/vitals.ndjson', format: 'ndjson' },
  missed: 'skip',
  readers: ['client'],
  source: 'api',
  updatedAt: new Date().toISOString(),
  updatedBy: 'admin',
};

let redis: Redis;
let modelsDir: string;
let dataDir: string;
let gw: TestGateway;

/** What the pre-shard version left in Redis: every batch key under the global tag. */
async function writePreShardState(): Promise<void> {
  // a key space that knows no model: every id names no shard, so the stores write where the old version did
  const old = new KeySpace(prefix);
  const runs = new RunStore(redis, old);
  const base = { version: '1', requestedBy: 'api:client', asOf: Date.now(), createdAt: Date.now() };
  await runs.create({
    ...base,
    id: queuedId,
    model: 'news2',
    input: { path: 'clients/client/inputs/vitals.ndjson', format: 'ndjson' },
    state: 'queued',
  });
  await runs.create({
    ...base,
    id: heldId,
    model: 'news2',
    input: { path: 'clients/client/inputs/vitals.ndjson', format: 'ndjson' },
    state: 'completed',
  });
  await runs.update(heldId, { review: 'run', scored: ROWS, rowsDone: ROWS, finishedAt: Date.now() });
  const holds = new RunHoldStore(redis, old, new AuditLog(redis, old));
  const hold = { runId: heldId, model: 'news2', version: '1', hold: 'run' as const, requestedBy: 'api:client' };
  await holds.create(
    { ...hold, heldAt: Date.now(), scored: ROWS, above: 0, heldRows: ROWS },
    { actor: 'api:client', role: 'system', action: 'batch.hold', target: heldId, model: 'news2' },
  );
  const queue = createQueue<BatchJobData>(BATCH_QUEUE, redis, prefix, createLogger('silent'));
  try {
    await queue.add('run', { runId: queuedId }, batchJobOptions(`run-${queuedId}`));
    await redis.hset(`${prefix}:schedules`, SCHEDULE.id, JSON.stringify(SCHEDULE));
    await queue.upsertJobScheduler(
      SCHEDULE.id,
      { pattern: SCHEDULE.cron, tz: SCHEDULE.timezone },
      { name: 'scheduled-run', data: { scheduleId: SCHEDULE.id }, opts: batchJobOptions() },
    );
  } finally {
    await queue.close();
  }
}

before(async () => {
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  modelsDir = await tempModels({ news2: null });
  dataDir = await tempDir('pre-shard');
  const rows = Array.from({ length: ROWS }, (_, i) => JSON.stringify({ id: `p-${i}`, ...news2Row(i) }));
  for (const dir of ['inputs', 'clients/client/inputs']) {
    await mkdir(path.join(dataDir, dir), { recursive: true });
    await writeFile(path.join(dataDir, dir, 'vitals.ndjson'), `${rows.join('\n')}\n`);
  }
  await writePreShardState();
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: ['batch'] });
});

after(async () => {
  await gw?.close();
  await deletePrefix(prefix);
  redis?.disconnect();
  await removeDir(modelsDir);
  await removeDir(dataDir);
});

describe('a deployment upgraded from the pre-shard batch layout', () => {
  test('a run queued on the global batch queue is moved to its model’s shard and completes, found by its old id', async () => {
    const { final } = await waitForRun(gw, keys.client, queuedId);
    assert.equal(final.status, 200, final.text);
    assert.equal(final.body.output[0].count, ROWS);
    const job = await gw.gateway.services.queues.batch.for('news2').getJob(`run-${queuedId}`);
    assert.equal(await job?.getState(), 'completed', 'run from the news2 shard queue');
    const old = createQueue<BatchJobData>(BATCH_QUEUE, redis, prefix, createLogger('silent'));
    try {
      assert.equal(await old.getJob(`run-${queuedId}`), undefined, 'gone from the global queue');
      assert.deepEqual(await old.getJobSchedulers(), [], 'no job scheduler left on the global queue');
    } finally {
      await old.close();
    }
  });

  test('an API schedule’s job scheduler is on its model’s shard', async () => {
    assert.deepEqual(
      (await jobSchedulers(gw)).map((s) => [s.key, s.model, s.pattern]),
      [[SCHEDULE.id, 'news2', SCHEDULE.cron]],
    );
    const list = await gw.call('GET', '/v1/schedules', keys.admin);
    assert.deepEqual(
      list.body.schedules.map((s: { id: string }) => s.id),
      [SCHEDULE.id],
    );
  });

  test('a run held before the upgrade is on the review desk and decided once, audited', async () => {
    const desk = await gw.call('GET', '/v1/batch-reviews', keys.reviewer);
    assert.equal(desk.status, 200, desk.text);
    assert.deepEqual(
      desk.body.items.map((i: { runId: string }) => i.runId),
      [heldId],
    );
    const body = { decision: 'reject', reason: 'the ward list changed since' };
    const decided = await gw.call('POST', `/v1/batch-reviews/${heldId}/decision`, keys.reviewer, body);
    assert.equal(decided.status, 200, decided.text);
    const again = await gw.call('POST', `/v1/batch-reviews/${heldId}/decision`, keys.reviewer, body);
    assert.equal(again.status, 409, again.text);
    const actions = (await allAudit(gw, keys.admin)).filter((e) => e.target === heldId).map((e) => e.action);
    assert.deepEqual(actions, ['batch.hold', 'batch.review.reject']);
    // both old runs are in the cross-shard list beside new ones
    const ids = await gw.gateway.services.runs.list(0, 10);
    assert.ok(ids.includes(queuedId) && ids.includes(heldId), ids.join(','));
  });
});
