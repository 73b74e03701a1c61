/**
 * A model a reload adds reaches the shard workers of other processes without a restart (real Redis, BullMQ and
 * onnxruntime): the reloading process announces the model's shard ({<prefix>}:shards) before the model serves; a
 * worker process that did not have the model learns the shard, re-reads its own manifests (the same directory, as
 * pods of one deployment share their manifests), and starts the shard's workers, which then consume the model's jobs.
 * A process told its shards (TRIAGE_WORKER_SHARDS) keeps to them, and still finds the model's jobs by id.
 */
import assert from 'node:assert/strict';
import { cp } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ShardWorkers } from '../src/platform/queue.ts';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  HANG_GUARD_MS,
  MODELS_DIR,
  makeKeys,
  makePrefix,
  NOTES,
  removeDir,
  type TestGateway,
  tempModels,
  waitForState,
} from './support/index.ts';

const keys = makeKeys();
const ADDED = 'note-triage';

/** how many shards a gateway's in-process inference worker serves */
function inferenceShards(gw: TestGateway): number {
  const worker = gw.gateway.workers?.workers[0] as unknown as ShardWorkers<unknown>;
  return worker.workers.length;
}

describe('a model added by a reload reaches other processes’ shard workers', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('reload-shards');
  let modelsDir: string;
  /** the worker process: started with news2 only, never reloaded by hand */
  let workers: TestGateway;
  /** a worker process told its shards: news2 only */
  let pinned: TestGateway;
  /** the gateway that is reloaded (no workers of its own) */
  let gateway: TestGateway;

  before(async () => {
    modelsDir = await tempModels({ news2: null });
    const common = { prefix, keys, modelsDir, reload: true, routingRefreshMs: 200 };
    workers = await buildGateway({ ...common, workers: ['inference', 'callbacks'] });
    pinned = await buildGateway({ ...common, workers: ['inference'], config: { workerShards: ['news2'] } });
    gateway = await buildGateway({ ...common, workers: [] });
  });

  after(async () => {
    await Promise.all([workers?.close(), pinned?.close(), gateway?.close()]);
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  test('the other process starts the new shard’s workers and consumes its jobs', async () => {
    assert.equal(inferenceShards(workers), 1, 'news2 only, at start');
    await cp(path.join(MODELS_DIR, ADDED), path.join(modelsDir, ADDED), { recursive: true });
    const reloaded = await gateway.call('POST', '/v1/admin/reload', keys.admin);
    assert.equal(reloaded.status, 200, reloaded.text);
    const submitted = await gateway.call('POST', `/v1/models/${ADDED}/jobs`, keys.client, {
      input: { text: NOTES.urgent },
    });
    assert.equal(submitted.status, 202, submitted.text);
    // scored by the worker process (the reloaded gateway runs no workers): held for review, as the model says
    await waitForState(gateway, keys.client, submitted.body.id, 'awaiting_review');
    assert.equal(inferenceShards(workers), 2, 'news2 and the added model');
    const reloads = (await allAudit(gateway, keys.admin)).filter((e) => e.action === 'manifests.reload');
    assert.ok(
      reloads.some((e) => e.actor === 'shards:announced'),
      'the worker process re-read its manifests for the announced model, audited',
    );
    assert.equal(inferenceShards(pinned), 1, 'a process told its shards keeps to them');
    // and a process that never loaded the model still finds the job by its id (the id names the model's shard)
    const found = await pinned.call('GET', `/v1/jobs/${submitted.body.id}`, keys.client);
    assert.equal(found.status, 200, found.text);
    assert.equal(found.body.state, 'awaiting_review');
  });
});
