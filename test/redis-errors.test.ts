/**
 * Which Redis errors mean "Redis is away, retry shortly" (503 dependency_unavailable, nothing accepted) and which mean
 * a command was wrong (a defect: 500). Between a Redis Cluster primary's failure and its replica's promotion, or while
 * a slot moves, the replies are TRYAGAIN, CLUSTERDOWN, MASTERDOWN, LOADING or READONLY: an accepted-nothing 503 each.
 *
 * Every error a failover can raise, as ioredis (6: built/cluster/index.js, redis/event_handler.js, Redis.js,
 * Command.js, Pipeline.js), BullMQ (classes/redis-connection.js) and Node's sockets build it: real errors from a real
 * Redis (or from ioredis facing a port where nothing listens) where that is cheap, else the library's own class with
 * the message it gives.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, test } from 'node:test';
import { ConnectionClosedError } from 'bullmq';
import { Cluster, Redis, ReplyError } from 'ioredis';
// ioredis's own classes, where its modules define them (a CommonJS default export: the class is its `default`)
import allFailedModule from 'ioredis/built/errors/ClusterAllFailedError.js';
import { MaxRetriesPerRequestError } from 'ioredis/built/errors/index.js';
import { isRedisUnavailable } from '../src/platform/redis.ts';
import { REDIS_URL } from './support/index.ts';

const ClusterAllFailedError = allFailedModule.default;

/** A port where nothing listens (taken, then given back). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** The error a promise rejects with. */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('it did not reject');
}

describe('isRedisUnavailable', () => {
  test('failover and resharding replies are unavailability', () => {
    for (const message of [
      'TRYAGAIN Multiple keys request during rehashing of slot',
      'CLUSTERDOWN The cluster is down',
      'CLUSTERDOWN Hash slot not served',
      'MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to no',
      'LOADING Redis is loading the dataset in memory',
      "READONLY You can't write against a read only replica.",
    ]) {
      assert.equal(isRedisUnavailable(new ReplyError(message)), true, message);
    }
    assert.equal(
      isRedisUnavailable(new Error('Too many Cluster redirections. Last error: Error: Connection is closed.')),
      true,
    );
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH']) {
      assert.equal(isRedisUnavailable(Object.assign(new Error(`connect ${code}`), { code })), true, code);
    }
  });

  test('a pipeline partly answered when its node closed: the rest aborted (a real Redis, a real ioredis)', async () => {
    // what a primary SIGKILLed in the middle of an auto-pipeline does to the commands after its last reply: ioredis
    // rejects them with AbortError (redis/event_handler.js, abortIncompletePipelines), and a pipeline of writes is
    // not sent again. Here the first command is answered, the second blocks, and the connection is killed meanwhile
    const redis = new Redis(REDIS_URL);
    const admin = new Redis(REDIS_URL);
    redis.on('error', () => {});
    try {
      const id = await redis.client('ID');
      const key = `redis-errors:abort:${process.pid}`;
      const sent = redis.pipeline().set(key, '1').blpop(`${key}:never`, 5).set(key, '2').exec();
      await new Promise((r) => setTimeout(r, 200));
      await admin.client('KILL', 'ID', String(id));
      const replies = (await sent) ?? [];
      assert.equal(replies[0]?.[0], null, 'the first command was answered');
      const [err] = replies[1] ?? [];
      // redis-errors' AbortError (ioredis's dependency; ioredis does not export it)
      assert.equal(err?.name, 'AbortError', String(err));
      assert.equal(err?.message, 'Command aborted due to connection close');
      assert.equal(isRedisUnavailable(err), true);
      await admin.del(key);
    } finally {
      redis.disconnect();
      admin.disconnect();
    }
  });

  test('a cluster client with no node to ask (real ioredis against a port where nothing listens)', async () => {
    const port = await closedPort();
    const cluster = new Cluster([{ host: '127.0.0.1', port }], {
      lazyConnect: true,
      clusterRetryStrategy: () => null,
      enableOfflineQueue: false,
    });
    const errors: Error[] = [];
    cluster.on('error', (err: Error) => errors.push(err));
    try {
      const connecting = await rejection(cluster.connect());
      assert.equal(connecting.message, 'None of startup nodes is available');
      assert.equal(isRedisUnavailable(connecting), true);
      // the slot map could not be read from any node: ClusterAllFailedError, the node's own error inside
      const allFailed = errors.find((e) => e instanceof ClusterAllFailedError);
      assert.ok(allFailed, errors.map((e) => `${e.name}: ${e.message}`).join('; '));
      assert.equal(isRedisUnavailable(allFailed), true);
      // and a command on the client it left ended
      const closed = await rejection(cluster.get('k'));
      assert.equal(closed.message, 'Connection is closed.');
      assert.equal(isRedisUnavailable(closed), true);
    } finally {
      cluster.disconnect();
    }
    // ClusterAllFailedError is known by its class, whatever its message, and by the error it carries
    const wrapped = new ClusterAllFailedError('no slots', Object.assign(new Error('connect ECONNREFUSED'), {}));
    assert.equal(isRedisUnavailable(wrapped), true);
  });

  test('a command that outlived its retries, or its timeout (real ioredis, real Redis)', async () => {
    const port = await closedPort();
    const away = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, retryStrategy: () => 10 });
    away.on('error', () => {});
    try {
      const err = await rejection(away.get('k'));
      assert.ok(err instanceof MaxRetriesPerRequestError, `${err.name}: ${err.message}`);
      assert.equal(isRedisUnavailable(err), true);
    } finally {
      away.disconnect();
    }
    const slow = new Redis(REDIS_URL, { commandTimeout: 20 });
    try {
      const err = await rejection(slow.blpop(`redis-errors:never:${process.pid}`, 1));
      assert.equal(err.message, 'Command timed out');
      assert.equal(isRedisUnavailable(err), true);
    } finally {
      slow.disconnect();
    }
  });

  test('redirections and replies a pipeline of writes hands back, and what a demoted primary answers', () => {
    const replies = [
      // ioredis follows a redirection only when every command of a pipeline got the same one (Pipeline.js)
      'MOVED 3999 127.0.0.1:6381',
      'ASK 3999 127.0.0.1:6381',
      // WAIT (TRIAGE_REDIS_REPLICA_ACKS) at the old primary's address, now a replica of the new one
      'ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.',
      // a WAIT under way when its primary became a replica
      'UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)',
      'NOREPLICAS Not enough good replicas to write.',
    ];
    // every one not recognised, named at once
    assert.deepEqual(
      replies.filter((m) => !isRedisUnavailable(new ReplyError(m))),
      [],
    );
  });

  test("the cluster client's own states, and sockets, as ioredis and Node build them", () => {
    const messages = [
      'Cluster is disconnected.',
      'Cluster is disconnecting.',
      'Node is disconnected',
      "Cluster isn't ready and enableOfflineQueue options is false",
      "Stream isn't writeable and enableOfflineQueue options is false",
      "Socket timeout. Expecting data, but didn't receive any in 1000ms.",
    ];
    assert.deepEqual(
      messages.filter((m) => !isRedisUnavailable(new Error(m))),
      [],
    );
    const sockets = [
      ['write', 'EPIPE', -32],
      ['read', 'ECONNRESET', -104],
      ['connect', 'ENETUNREACH', -101],
      ['connect', 'EHOSTDOWN', -112],
      ['connect', 'ECONNABORTED', -103],
      ['getaddrinfo', 'EAI_AGAIN', -3001],
    ] as const;
    // as Node's sockets and DNS raise them: `<syscall> <code>`, with code, errno and syscall
    const socketError = ([syscall, code, errno]: (typeof sockets)[number]) =>
      Object.assign(new Error(`${syscall} ${code}`), { code, errno, syscall });
    assert.deepEqual(
      sockets.filter((s) => !isRedisUnavailable(socketError(s))).map(([, code]) => code),
      [],
    );
  });

  test("BullMQ's connection errors, and an error wrapping one", () => {
    // redis-connection.js: a cluster reconnect that timed out, and a connection closed
    assert.equal(
      isRedisUnavailable(new ConnectionClosedError('BullMQ: cluster reconnect timed out after 5000ms')),
      true,
    );
    assert.equal(isRedisUnavailable(new ConnectionClosedError()), true);
    const cause = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    assert.equal(isRedisUnavailable(new Error('adding the job failed', { cause })), true);
  });

  test('a wrong command is not', () => {
    for (const message of [
      'WRONGTYPE Operation against a key holding the wrong kind of value',
      "ERR wrong number of arguments for 'hset' command",
      'NOSCRIPT No matching script. Please use EVAL.',
      "CROSSSLOT Keys in request don't hash to the same slot",
      'ERR unknown command',
      // words that only start like a redirection
      'ASKING is not allowed here',
      'MOVEDX 1 2',
    ]) {
      assert.equal(isRedisUnavailable(new ReplyError(message)), false, message);
    }
    assert.equal(isRedisUnavailable(undefined), false);
    assert.equal(isRedisUnavailable('Connection is closed.'), false, 'a string is not an error');
    assert.equal(
      isRedisUnavailable(Object.assign(new Error('getaddrinfo ENOTFOUND redis'), { code: 'ENOTFOUND' })),
      false,
    );
  });

  test('a programming error is not, whatever its message or cause', () => {
    assert.equal(isRedisUnavailable(new TypeError("Cannot read properties of undefined (reading 'then')")), false);
    assert.equal(isRedisUnavailable(new TypeError('Connection is closed.')), false);
    assert.equal(isRedisUnavailable(new RangeError('Command timed out')), false);
    assert.equal(isRedisUnavailable(new Error('wrapped', { cause: new TypeError('x is not a function') })), false);
    // a cause chain is followed a few levels, not forever
    const loop: Error & { cause?: unknown } = new Error('loop');
    loop.cause = loop;
    assert.equal(isRedisUnavailable(loop), false);
  });
});
