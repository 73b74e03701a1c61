/**
 * The prediction log's buffer, on real Redis: with a row bound (what a batch thread sets) the rows are written as soon
 * as that many wait, without the timer; below the bound they wait for a flush; a row logged while a flush is under way
 * is written by the next one.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { PredictionLog } from '../src/outcomes/prediction-log.ts';
import { KeySpace } from '../src/platform/keyspace.ts';
import type { CatalogModel } from '../src/serving/catalog.ts';
import type { ScoreEvent } from '../src/serving/scorer.ts';
import { deletePrefix, makePrefix, REDIS_URL, sleep, waitFor } from './support/index.ts';

const prefix = makePrefix('prediction-log');
const keys = new KeySpace(prefix, ['news2']);
let redis: Redis;

/** just what the log reads of a model: its name and its score output */
const model = {
  name: 'news2',
  manifest: { output: { kind: 'score', scoreName: 'news2Total', threshold: 5 } },
} as unknown as CatalogModel;

function scored(refs: string[]): ScoreEvent {
  return {
    model,
    tier: 'batch',
    input: { data: new Float32Array(0), rows: refs.length, refs },
    result: { version: '1', predictions: refs.map((_, i) => ({ news2Total: i })) },
    ms: 1,
  };
}

before(() => {
  redis = new Redis(REDIS_URL);
});
after(async () => {
  redis.disconnect();
  await deletePrefix(prefix);
});

describe('prediction log buffer', () => {
  test('with a row bound, rows are written once that many wait, without a flush or a timer', async () => {
    const log = new PredictionLog({ redis, keys, flushEveryMs: 0, maxBufferedRows: 4 });
    try {
      log.onScore(scored(['batch:r1:a', 'batch:r1:b']));
      // no timer and under the bound: nothing is written however long it waits
      await sleep(200);
      assert.equal(await log.find('batch:r1:a'), undefined);
      log.onScore(scored(['batch:r1:c', 'batch:r1:d']));
      await waitFor(async () => (await log.find('batch:r1:d')) !== undefined, 'the bounded rows in Redis');
      assert.equal((await log.find('batch:r1:a'))?.score, 0);
      assert.equal((await log.find('batch:r1:d'))?.score, 1);
      // rows logged while that write was under way, past the bound again: the next write takes them
      log.onScore(scored(['batch:r1:e', 'batch:r1:f', 'batch:r1:g', 'batch:r1:h', 'batch:r1:i']));
      await waitFor(async () => (await log.find('batch:r1:i')) !== undefined, 'the next bounded rows in Redis');
      assert.equal((await log.find('batch:r1:e'))?.score, 0);
    } finally {
      await log.close();
    }
  });

  test('without a bound, rows wait for a flush (the gateway writes once a second)', async () => {
    const log = new PredictionLog({ redis, keys, flushEveryMs: 0 });
    log.onScore(scored(Array.from({ length: 5000 }, (_, i) => `batch:r2:${i}`)));
    await sleep(200);
    assert.equal(await log.find('batch:r2:4999'), undefined);
    await log.close(); // close flushes
    assert.equal((await log.find('batch:r2:4999'))?.score, 4999);
  });
});
