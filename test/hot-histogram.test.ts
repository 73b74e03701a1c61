import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import { HotHistogram } from '../src/platform/hot-histogram.ts';

const buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const labelNames = ['route', 'status', 'model'] as const;

/** The exposition lines of one metric, with its name replaced so two metrics' lines compare. */
async function lines(registry: Registry, name: string): Promise<string[]> {
  const text = await registry.metrics();
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .map((l) => l.replace(name, 'm'))
    .sort();
}

test('the hot histogram exposes exactly what prom-client Histogram does for the same observations', async () => {
  const registry = new Registry();
  const reference = new Histogram({ name: 'ref_seconds', help: 'h', labelNames, buckets, registers: [registry] });
  const hot = new HotHistogram({ name: 'hot_seconds', help: 'h', labelNames, buckets, registers: [registry] });
  // on the bounds, between them, below the first and past the last
  const values = [0, 0.0005, 0.0007, 0.001, 0.003, 0.05, 0.051, 4.99, 5, 7, 120];
  const series = [
    { route: '/v1/models/:model/predict', status: '200', model: 'news2' },
    { route: '/v1/models/:model/predict', status: '504', model: 'news2' },
    { route: 'unmatched', status: '404', model: '' },
  ];
  for (const [i, labels] of series.entries()) {
    for (const v of values.slice(i)) {
      reference.observe(labels, v);
      hot.labels(labels).observe(v);
    }
  }
  const expected = await lines(registry, 'ref_seconds');
  assert.equal(expected.length, series.length * (buckets.length + 3));
  assert.deepEqual(await lines(registry, 'hot_seconds'), expected);
  assert.match(await registry.metrics(), /# TYPE hot_seconds histogram/);

  hot.reset();
  assert.deepEqual(await lines(registry, 'hot_seconds'), []);
});

test('the same label set always reaches the same series, whatever object carries it', async () => {
  const registry = new Registry();
  const hot = new HotHistogram({ name: 'hot_seconds', help: 'h', labelNames, buckets, registers: [registry] });
  hot.labels({ route: 'r', status: '200', model: 'a' }).observe(0.002);
  hot.observe({ model: 'a', status: '200', route: 'r' }, 0.004);
  hot.labels({ route: 'r', status: '200', model: 'b' }).observe(0.004);
  const text = await registry.metrics();
  assert.match(text, /hot_seconds_count\{route="r",status="200",model="a"\} 2/);
  assert.match(text, /hot_seconds_count\{route="r",status="200",model="b"\} 1/);
});
