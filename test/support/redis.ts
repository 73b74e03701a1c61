/** Redis for tests: the server the suite runs against, one key prefix per gateway or file, and clean-up. */
import { randomBytes } from 'node:crypto';
import type { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { KeySpace } from '../../src/platform/keyspace.ts';

export const REDIS_URL = process.env.TRIAGE_REDIS_URL || 'redis://127.0.0.1:6379';

/** A Redis Cluster-style prefix (one hash tag) unique to this test run. */
export function makePrefix(name: string): string {
  return `{triage-test-${name}-${randomBytes(6).toString('hex')}}`;
}

export function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}

export async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out;
}

/**
 * Deletes every key under `prefix` (job records, idempotency keys, audit, BullMQ queues, schedules), its model shards'
 * (`{<base>:<model>}…`, src/platform/keyspace.ts) included.
 */
export async function deletePrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  try {
    const keys: string[] = [];
    for (const pattern of new KeySpace(prefix).patterns()) keys.push(...(await scanKeys(redis, pattern)));
    for (let i = 0; i < keys.length; i += 1000) await redis.unlink(...keys.slice(i, i + 1000));
  } finally {
    redis.disconnect();
  }
}

/** True when a queue has nothing waiting, delayed or running. */
export async function queueIdle(queue: Pick<Queue, 'getJobCounts'>): Promise<boolean> {
  const c = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children');
  return Object.values(c).every((n) => n === 0);
}
