import { type JobsOptions, Queue } from 'bullmq';
import type { Logger } from 'pino';
import type { RedisClient } from './redis.ts';

/** How a queue's jobs are retried and kept. Each queue module states its policy once. */
export interface RetryPolicy {
  attempts: number;
  /** first retry delay; doubles each attempt */
  backoffMs: number;
  /** spread of each delay (0-1), so retries of many jobs do not arrive together */
  jitter?: number;
  /** how long finished jobs stay visible for inspection */
  keepCompletedSeconds: number;
  keepFailedSeconds: number;
}

export function jobOptions(policy: RetryPolicy, jobId?: string): JobsOptions {
  return {
    ...(jobId !== undefined ? { jobId } : {}),
    attempts: policy.attempts,
    backoff: {
      type: 'exponential',
      delay: policy.backoffMs,
      ...(policy.jitter !== undefined ? { jitter: policy.jitter } : {}),
    },
    removeOnComplete: { age: policy.keepCompletedSeconds },
    removeOnFail: { age: policy.keepFailedSeconds },
  };
}

/**
 * A BullMQ queue under the key prefix, its connection errors logged as one JSON line each (without a listener
 * BullMQ prints multi-line dumps to stderr).
 */
export function createQueue<T>(name: string, connection: RedisClient, prefix: string, logger: Logger): Queue<T> {
  const queue = new Queue<T>(name, { connection, prefix });
  queue.on('error', (err: Error) => logger.warn({ queue: name, err: { message: err.message } }, 'queue error'));
  return queue;
}
