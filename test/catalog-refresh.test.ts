/**
 * The catalog on real Redis: a refresh that was already reading when a change was made through this catalog does
 * not put the older routing back (it read Redis before the change; applying it would undo the change here until the
 * next refresh, a second later).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { loadModels } from '../src/registry/load.ts';
import { ModelCatalog } from '../src/serving/catalog.ts';
import { deletePrefix, MODELS_DIR, makePrefix, REDIS_URL } from './support/index.ts';

test('a refresh overlapping a routing change made here does not undo it', async () => {
  const prefix = makePrefix('catalog-refresh');
  const redis = new Redis(REDIS_URL, { enableAutoPipelining: true });
  try {
    const catalog = await ModelCatalog.open({ redis, prefix, models: await loadModels(MODELS_DIR, 5000) });
    for (let i = 0; i < 50; i++) {
      const primary = i % 2 === 0 ? '2' : '1';
      const reading = catalog.refresh(); // its reads go out first, in the same pipeline as the change below
      await catalog.setRouting('deterioration', { primary }, 'test');
      await reading;
      assert.equal(catalog.get('deterioration')?.routing.primary, primary, `round ${i}`);
    }
  } finally {
    redis.disconnect();
    await deletePrefix(prefix);
  }
});
