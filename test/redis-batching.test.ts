/**
 * A connection that sends what one turn of the event loop sends in one write (BatchingRedis, src/platform/redis.ts):
 * the gateway's and the inference worker's. Commands issued by separate callbacks of one turn (requests read from
 * their sockets together, jobs finishing together) leave in one socket write, in the order issued, each with its own
 * answer; a command Redis refuses fails alone. Then the async tier's submissions through it: submissions made in
 * one turn go to Redis in one write, and each still gets its own job, an idempotency key still names one job across
 * the group, and a submission that fails does not fail the others.
 */
import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Redis } from 'ioredis';
import type { Principal } from '../src/platform/auth.ts';
import { BatchingRedis, newRedis, type RedisClient } from '../src/platform/redis.ts';
import type { CatalogModel } from '../src/serving/catalog.ts';
import {
  buildGateway,
  deletePrefix,
  makeKeys,
  makePrefix,
  NEWS2_INSTANCE,
  REDIS_URL,
  type TestGateway,
  waitForState,
} from './support/index.ts';

/** Counts the writes the connection's socket makes (each `_write` or `_writev` is one write to the kernel). */
function countWrites(redis: RedisClient): { count: number } {
  const socket = (redis as Redis).stream as Socket & {
    _write: (...a: unknown[]) => void;
    _writev?: (...a: unknown[]) => void;
  };
  const counter = { count: 0 };
  const write = socket._write.bind(socket);
  socket._write = (...a: unknown[]) => {
    counter.count++;
    write(...a);
  };
  const writev = socket._writev?.bind(socket);
  if (writev) {
    socket._writev = (...a: unknown[]) => {
      counter.count++;
      writev(...a);
    };
  }
  return counter;
}

/**
 * Runs each function in its own callback, all in the same turn: immediates queued together run in one check phase
 * (one queued while it runs waits for the next turn). Timers would not do: each `setTimeout` reads the clock, so
 * twenty set across a millisecond boundary can fall due in two turns (a CI run on a busy machine saw two writes).
 */
function inOneTurn<T>(fns: Array<() => Promise<T>>): Promise<Array<PromiseSettledResult<T>>> {
  return Promise.allSettled(
    fns.map((fn) => new Promise<T>((resolve, reject) => setImmediate(() => fn().then(resolve, reject)))),
  );
}

describe('a batching connection', () => {
  const prefix = makePrefix('batching');
  let redis: RedisClient;

  before(async () => {
    redis = newRedis(REDIS_URL, { batchWrites: true });
    assert.ok(redis instanceof BatchingRedis);
    await redis.ping();
  });
  after(async () => {
    redis.disconnect();
    await deletePrefix(prefix);
  });

  test("the commands of one turn's callbacks leave in one write, in order, each with its own answer", async () => {
    const key = `${prefix}:counter`;
    const writes = countWrites(redis);
    const results = await inOneTurn(Array.from({ length: 20 }, () => () => redis.incr(key)));
    assert.deepEqual(
      results.map((r) => (r.status === 'fulfilled' ? r.value : r.reason)),
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    assert.equal(writes.count, 1, 'twenty callbacks of one turn, one write');
  });

  test("a turn's commands are written as they are sent: no Pipeline object built for them", async () => {
    // ioredis's auto-pipelining built one per batch, copying every script defined on the connection (BullMQ's
    // sixty-odd on the gateway's): the largest share of the gateway's CPU per async job
    const client = redis as Redis & { pipeline: Redis['pipeline'] };
    const pipeline = client.pipeline;
    let built = 0;
    client.pipeline = ((...a: Parameters<Redis['pipeline']>) => {
      built++;
      return pipeline.apply(client, a);
    }) as Redis['pipeline'];
    try {
      await inOneTurn(Array.from({ length: 5 }, (_, i) => () => redis.set(`${prefix}:p${i}`, 'x')));
    } finally {
      client.pipeline = pipeline;
    }
    assert.equal(built, 0);
  });

  test('a command alone is sent (the turn ends without anything else to send)', async () => {
    assert.equal(await redis.set(`${prefix}:alone`, 'x'), 'OK');
    assert.equal(await redis.get(`${prefix}:alone`), 'x');
  });

  test('a refused command fails alone; pipelines and transactions keep their place in the order', async () => {
    const key = `${prefix}:order`;
    await redis.set(`${prefix}:text`, 'not a number');
    const [a, bad, piped, multi, c] = await inOneTurn<unknown>([
      () => redis.set(key, 'a'),
      () => redis.incr(`${prefix}:text`),
      () => redis.pipeline().append(key, 'b').exec(),
      () => redis.multi().append(key, 'c').exec(),
      () => redis.append(key, 'd'),
    ]);
    assert.deepEqual(a, { status: 'fulfilled', value: 'OK' });
    assert.equal(bad?.status, 'rejected');
    assert.match(String((bad as PromiseRejectedResult).reason), /not an integer/);
    assert.equal(piped?.status, 'fulfilled');
    assert.equal(multi?.status, 'fulfilled');
    assert.deepEqual(c, { status: 'fulfilled', value: 4 });
    assert.equal(await redis.get(key), 'abcd');
  });
});

describe('submissions of one turn', () => {
  const keys = makeKeys();
  const prefix = makePrefix('batching-jobs');
  let gw: TestGateway;
  let principal: Principal;
  let news2: CatalogModel;

  before(async () => {
    gw = await buildGateway({ keys, prefix, workers: ['inference'], only: ['news2'] });
    news2 = gw.gateway.services.catalog.get('news2') as CatalogModel;
    // the principal the client key authenticates as (test/support/keys.ts): its jobs are read back through the API
    principal = { id: 'client', role: 'client', models: new Set(['*']), callbackHosts: [] };
  });
  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
  });

  const submit = (body: Record<string, unknown>) => () =>
    gw.gateway.services.jobs.submit(principal, news2, { input: { instances: [NEWS2_INSTANCE] }, ...body });

  test('go to Redis in one write, and each gets its own job, released', async () => {
    const writes = countWrites(gw.gateway.services.redis);
    const results = await inOneTurn(Array.from({ length: 12 }, () => submit({})));
    assert.equal(writes.count, 1, 'twelve submissions (record and queue entry each), one write');
    const ids = results.map((r) => (r.status === 'fulfilled' ? r.value.id : assert.fail(String(r.reason))));
    assert.equal(new Set(ids).size, 12);
    for (const id of ids) await waitForState(gw, keys.client, id, 'released');
  });

  test('an idempotency key names one job across the group; a reuse for another request fails alone', async () => {
    const other = { instances: [{ ...NEWS2_INSTANCE, respirationRate: 30 }] };
    const results = await inOneTurn([
      submit({ idempotencyKey: 'same-turn-1' }),
      submit({}),
      submit({ idempotencyKey: 'same-turn-1' }),
      () => gw.gateway.services.jobs.submit(principal, news2, { input: other, idempotencyKey: 'same-turn-1' }),
      submit({ idempotencyKey: 'same-turn-2' }),
    ]);
    const [first, plain, again, conflict, second] = results;
    assert.ok(first?.status === 'fulfilled' && again?.status === 'fulfilled');
    assert.equal(again.value.id, first.value.id, 'the same key and request: the same job');
    assert.equal([first.value.created, again.value.created].filter(Boolean).length, 1, 'created once');
    assert.equal(conflict?.status, 'rejected');
    assert.equal((conflict as PromiseRejectedResult).reason.code, 'idempotency_conflict');
    assert.ok(plain?.status === 'fulfilled' && second?.status === 'fulfilled');
    const ids = new Set([first.value.id, plain.value.id, second.value.id]);
    assert.equal(ids.size, 3);
    for (const id of ids) await waitForState(gw, keys.client, id, 'released');
  });

  test("the worker's release of a job and BullMQ's completion of it leave in one write", async () => {
    // every socket write of this process while one job runs, as text (the worker's connection is its own)
    type Writes = {
      _write: (chunk: unknown, ...a: unknown[]) => void;
      _writev: (chunks: Array<{ chunk: unknown }>, ...a: unknown[]) => void;
    };
    const proto = Socket.prototype as unknown as Writes;
    const { _write, _writev } = proto;
    const writes: string[] = [];
    const text = (chunk: unknown) => (Buffer.isBuffer(chunk) ? chunk.toString('latin1') : String(chunk));
    proto._write = function (this: Socket, chunk: unknown, ...rest: unknown[]) {
      writes.push(text(chunk));
      return _write.call(this, chunk, ...rest);
    };
    proto._writev = function (this: Socket, chunks: Array<{ chunk: unknown }>, ...rest: unknown[]) {
      writes.push(chunks.map((c) => text(c.chunk)).join(''));
      return _writev.call(this, chunks, ...rest);
    };
    let id: string;
    try {
      ({ id } = await submit({})());
      await waitForState(gw, keys.client, id, 'released');
    } finally {
      proto._write = _write;
      proto._writev = _writev;
    }
    // the release transition names `releasedAt` and the job; BullMQ's moveToFinished names `returnvalue` and the job
    const release = writes.filter((w) => w.includes('releasedAt') && w.includes(id));
    assert.equal(release.length, 1, 'the release written once');
    assert.match(release[0] as string, /returnvalue/, "BullMQ's completion in the release's write");
  });

  test('a submission refused before Redis (bad input) does not fail the others of its turn', async () => {
    const results = await inOneTurn([
      submit({}),
      () => gw.gateway.services.jobs.submit(principal, news2, { input: { instances: [{ nonsense: true }] } }),
      submit({}),
    ]);
    assert.equal(results[1]?.status, 'rejected');
    assert.equal((results[1] as PromiseRejectedResult).reason.code, 'invalid_input');
    for (const r of [results[0], results[2]]) {
      assert.ok(r?.status === 'fulfilled');
      await waitForState(gw, keys.client, r.value.id, 'released');
    }
  });
});
