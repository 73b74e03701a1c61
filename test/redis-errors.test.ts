/**
 * Which Redis errors mean "Redis is away, retry shortly" (503 dependency_unavailable, nothing accepted) and which mean
 * a command was wrong (a defect: 500). Between a Redis Cluster primary's failure and its replica's promotion, or while
 * a slot moves, the replies are TRYAGAIN, CLUSTERDOWN, MASTERDOWN, LOADING or READONLY: an accepted-nothing 503 each.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ReplyError } from 'ioredis';
import { isRedisUnavailable } from '../src/platform/redis.ts';

describe('isRedisUnavailable', () => {
  test('failover and resharding replies are unavailability', () => {
    for (const message of [
      'TRYAGAIN Multiple keys request during rehashing of slot',
      'CLUSTERDOWN The cluster is down',
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

  test('a wrong command is not', () => {
    for (const message of [
      'WRONGTYPE Operation against a key holding the wrong kind of value',
      "ERR wrong number of arguments for 'hset' command",
      'NOSCRIPT No matching script. Please use EVAL.',
      "CROSSSLOT Keys in request don't hash to the same slot",
    ]) {
      assert.equal(isRedisUnavailable(new ReplyError(message)), false, message);
    }
    assert.equal(isRedisUnavailable(undefined), false);
  });
});
