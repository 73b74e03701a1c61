/**
 * A failover that leaves the old primary up, as a replica of the new one (a SIGKILLed primary restarted on its address
 * rejoins that way; CLUSTER FAILOVER does it at once), on a real Redis Cluster (this file's own) with the gateway's
 * own shared connection (connectRedis: auto-pipelining, no offline queue). The client's slot map still names the old
 * primary, which answers MOVED. ioredis follows a redirection in a pipeline only when every command of it got the
 * same one, so an auto-pipeline of writes to two of that node's slots (two requests' writes in one turn, or a
 * worker's and a request's) hands each caller its raw MOVED: that was a 500, and nothing made the client read the
 * map again. Now each caller's error is unavailability (503, retry) and the client reads the map again at once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { LocalCluster } from '../src/devtools/local-cluster.ts';
import { createLogger } from '../src/platform/logger.ts';
import { connectRedis, isRedisUnavailable, type RedisClient } from '../src/platform/redis.ts';
import { sleep, waitFor } from './support/index.ts';

let cluster: LocalCluster;
let redis: RedisClient;

before(async () => {
  cluster = await LocalCluster.start();
  redis = await connectRedis(cluster.url, createLogger('error'), 2000);
});

after(async () => {
  redis?.disconnect();
  await cluster?.stop();
});

/** Two keys in two slots of one primary: a model's shard and another tag that landed on the same node. */
async function twoSlotsOfOnePrimary(): Promise<{ keys: [string, string]; slot: number; port: number }> {
  const first = '{triage:note-triage}:redirections';
  const slot = await cluster.keySlot(first);
  const primary = await cluster.primaryOf(slot);
  for (let i = 0; i < 10_000; i++) {
    const other = `{triage:probe-${i}}:redirections`;
    const s = await cluster.keySlot(other);
    if (s !== slot && primary.slots.some(([a, b]) => s >= a && s <= b)) {
      return { keys: [first, other], slot, port: primary.port };
    }
  }
  throw new Error('no second slot on the primary');
}

/** Both writes sent in one turn of the event loop: one auto-pipeline, as concurrent requests' writes are. */
const writeBoth = (keys: [string, string], value: string) => Promise.allSettled(keys.map((k) => redis.set(k, value)));

describe('a failover that leaves the old primary up as a replica', () => {
  test('writes redirected in an auto-pipeline are unavailability (503), and the next reach the new primary', async () => {
    const { keys, slot, port } = await twoSlotsOfOnePrimary();
    for (const r of await writeBoth(keys, 'before')) assert.equal(r.status, 'fulfilled');
    // the replica takes over; the old primary stays up and becomes its replica
    const replica = await cluster.replicaOf(port);
    const node = new Redis({ port: replica, host: '127.0.0.1' });
    try {
      await node.cluster('FAILOVER');
    } finally {
      node.disconnect();
    }
    await waitFor(
      async () => {
        const topology = await cluster.topology();
        const old = topology.find((n) => n.port === port);
        return (await cluster.primaryOf(slot)).port === replica && old?.role === 'slave';
      },
      'the replica promoted and the old primary its replica',
      30_000,
      50,
    );
    await sleep(200); // the old primary's demotion is settled: it redirects rather than refuses

    // the client still sends both to the old primary: each caller gets its MOVED, never followed
    const refused = await writeBoth(keys, 'during');
    const errors = refused.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
    assert.ok(errors.length > 0, 'the stale slot map sent the writes to the old primary');
    for (const err of errors) {
      assert.match(err.message, /^MOVED \d+ 127\.0\.0\.1:\d+$/);
      assert.equal(isRedisUnavailable(err), true, `${err.message}: a 503 and a retry, not a 500`);
    }

    // the client reads the slot map again at once: the retries (again two slots in one pipeline) go to the new
    // primary. Without that, every such pipeline was refused until a lone command happened to be redirected
    await waitFor(
      async () => (await writeBoth(keys, 'after')).every((r) => r.status === 'fulfilled'),
      'the writes to reach the new primary',
      5000,
      50,
    );
    const check = new Redis({ port: replica, host: '127.0.0.1' });
    try {
      assert.deepEqual(await Promise.all(keys.map((k) => check.get(k))), ['after', 'after']);
    } finally {
      check.disconnect();
    }
  });
});
