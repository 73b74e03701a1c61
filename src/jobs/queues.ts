import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';

export const QUEUE_NAMES = { inference: 'inference', callbacks: 'callbacks' } as const;

export interface InferenceJobData {
  jobId: string;
}
export interface CallbackJobData {
  jobId: string;
  event: 'released' | 'rejected' | 'failed';
  /** the CloudEvent / webhook id: the same on every retry and replay, so receivers can de-duplicate */
  eventId: string;
}

export interface Queues {
  inference: Queue<InferenceJobData>;
  callbacks: Queue<CallbackJobData>;
  close(): Promise<void>;
}

/** BullMQ queues under the `{triage}` prefix: one hash tag, so Redis Cluster keeps them on one slot with our keys. */
export function createQueues(connection: Redis, prefix: string): Queues {
  const inference = new Queue<InferenceJobData>(QUEUE_NAMES.inference, { connection, prefix });
  const callbacks = new Queue<CallbackJobData>(QUEUE_NAMES.callbacks, { connection, prefix });
  return {
    inference,
    callbacks,
    async close() {
      await Promise.all([inference.close(), callbacks.close()]);
    },
  };
}

export interface CallbackPolicy {
  attempts: number;
  /** first retry delay; doubles each attempt, with jitter */
  backoffMs: number;
  timeoutMs: number;
  /** hosts allowed over plain http (e.g. loopback in development) */
  httpHosts: readonly string[];
}

/** How a callback is delivered: exponential backoff with jitter over hours, kept a while for inspection. */
export function callbackJobOptions(policy: CallbackPolicy, jobId: string) {
  return {
    jobId,
    attempts: policy.attempts,
    backoff: { type: 'exponential', delay: policy.backoffMs, jitter: 0.5 },
    removeOnComplete: { age: 7 * 24 * 3600 },
    removeOnFail: { age: 30 * 24 * 3600 },
  };
}

export function callbackJobId(jobId: string, event: string, replay?: number): string {
  return replay === undefined ? `cb-${jobId}-${event}` : `cb-${jobId}-${event}-r${replay}`;
}

/** Enqueues the callback of a transition the store recorded in its outbox, then clears the outbox entry. */
export async function enqueueCallback(
  queues: Queues,
  redis: Redis,
  outboxKey: string,
  policy: CallbackPolicy,
  jobId: string,
  event: CallbackJobData['event'],
): Promise<void> {
  await queues.callbacks.add(
    'deliver',
    { jobId, event, eventId: `evt-${jobId}-${event}` },
    callbackJobOptions(policy, callbackJobId(jobId, event)),
  );
  await redis.srem(outboxKey, `${jobId}|${event}`);
}
