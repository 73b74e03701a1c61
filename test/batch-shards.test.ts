/**
 * The batch stores across model shards, on real Redis: a run and its hold live in the shard their id names (a run from
 * before shards, under the global tag); the list of runs (newest first) and of held runs (oldest first) are merged from
 * every shard and page without skipping or repeating a run.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { RunHoldStore } from '../src/batch/review-store.ts';
import { RunStore } from '../src/batch/runs.ts';
import { AuditLog } from '../src/platform/audit.ts';
import { KeySpace } from '../src/platform/keyspace.ts';
import { deletePrefix, makePrefix, REDIS_URL } from './support/index.ts';

const prefix = makePrefix('batch-shards');
const MODELS = ['news2', 'readmission', 'deterioration'];
let redis: Redis;
let keys: KeySpace;
let runs: RunStore;
let holds: RunHoldStore;
/** run ids by creation time, oldest first */
const created: Array<{ id: string; model: string }> = [];

before(async () => {
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  keys = new KeySpace(prefix, MODELS);
  runs = new RunStore(redis, keys);
  holds = new RunHoldStore(redis, keys, new AuditLog(redis, keys));
  const t0 = Date.now();
  for (let i = 0; i < 9; i++) {
    const model = MODELS[i % MODELS.length] as string;
    // the fifth run is from before shards: its id names none
    const id = i === 4 ? randomUUID() : runs.newId(model);
    await runs.create({
      id,
      model,
      version: '1',
      requestedBy: 'api:client',
      input: { path: 'inputs/x.ndjson', format: 'ndjson' },
      asOf: t0,
      state: 'completed',
      createdAt: t0 + i * 1000,
    });
    created.push({ id, model });
  }
  for (const [i, { id, model }] of created.entries()) {
    const hold = { runId: id, model, version: '1', hold: 'run' as const, requestedBy: 'api:client' };
    await holds.create(
      // held in the reverse order of creation
      { ...hold, heldAt: t0 + (100 - i) * 1000, scored: 1, above: 0, heldRows: 1 },
      { actor: 'api:client', role: 'system', action: 'batch.hold', target: id, model },
    );
  }
});

after(async () => {
  await deletePrefix(prefix);
  redis?.disconnect();
});

describe('batch runs and holds across model shards', () => {
  test('each run and its hold are in the shard its id names; a pre-shard run under the global tag', async () => {
    for (const [i, { id, model }] of created.entries()) {
      const tag = i === 4 ? prefix : keys.shard(model);
      assert.equal(await redis.exists(`${tag}:batch:${id}`), 1, `${id}: record under ${tag}`);
      assert.equal(await redis.exists(`${tag}:batch-review:${id}`), 1, `${id}: hold under ${tag}`);
      assert.equal((await runs.get(id))?.model, model);
    }
  });

  test('the list of runs is newest first over every shard, and its pages neither skip nor repeat', async () => {
    const newestFirst = created.map((r) => r.id).reverse();
    assert.deepEqual(await runs.list(0, 100), newestFirst);
    const paged: string[] = [];
    for (let offset = 0; offset < newestFirst.length; offset += 2) paged.push(...(await runs.list(offset, 2)));
    assert.deepEqual(paged, newestFirst);
  });

  test('held runs are oldest first over every shard; one model’s only when named', async () => {
    const oldestHeldFirst = created.map((r) => r.id).reverse();
    assert.deepEqual(
      (await holds.held(undefined, 100)).map((h) => h.runId),
      oldestHeldFirst,
    );
    assert.deepEqual(
      (await holds.held(undefined, 3)).map((h) => h.runId),
      oldestHeldFirst.slice(0, 3),
    );
    // one shard's, and the pre-shard index (filtered by model by the service)
    const news2 = (await holds.held('news2', 100)).map((h) => h.runId);
    const expected = created
      .filter((r, i) => r.model === 'news2' || i === 4)
      .map((r) => r.id)
      .reverse();
    assert.deepEqual(news2, expected);
  });
});
