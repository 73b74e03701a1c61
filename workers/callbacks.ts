/**
 * The callbacks queue: signed CloudEvents delivered to callback URLs, retried with exponential backoff and jitter
 * with the same event id every time; after the last attempt the event goes to the dead letters, from which an admin
 * replays it.
 */
import { type Job, UnrecoverableError } from 'bullmq';
import type { Logger } from 'pino';
import type { DeadLetters } from '../src/callbacks/dead-letters.ts';
import { DeliveryError, postEvent } from '../src/callbacks/deliver.ts';
import { signedHeaders } from '../src/callbacks/event.ts';
import type { CallbackEvent, CallbackSender, Outbox } from '../src/callbacks/outbox.ts';
import { jobEvent } from '../src/callbacks/payload.ts';
import { hostOf, namedExactly } from '../src/callbacks/url-policy.ts';
import type { JobStore } from '../src/jobs/store.ts';
import type { ApiKeyStore } from '../src/platform/auth.ts';
import type { CallbackPolicy } from '../src/platform/config.ts';
import type { KeySpace } from '../src/platform/keyspace.ts';
import type { JobMetrics } from '../src/platform/metrics.ts';
import { jobOptions, ShardQueues, ShardWorkers } from '../src/platform/queue.ts';
import { newRedis, type RedisClient } from '../src/platform/redis.ts';

export const CALLBACK_QUEUE = 'callbacks';

export interface CallbackJobData {
  jobId: string;
  event: CallbackEvent;
  /** the CloudEvent / webhook id: the same on every retry and replay, so receivers can de-duplicate */
  eventId: string;
}

/** The callbacks queue of every model shard: a job's callbacks are queued in its model's shard. */
export function createCallbackQueue(
  connection: RedisClient,
  keys: KeySpace,
  logger: Logger,
): ShardQueues<CallbackJobData> {
  return new ShardQueues<CallbackJobData>(CALLBACK_QUEUE, connection, keys, logger);
}

/** Exponential backoff with jitter over hours; kept a while for inspection. A replay gets a job id of its own. */
function callbackJobOptions(policy: CallbackPolicy, jobId: string, event: CallbackEvent, replay?: number) {
  const id = replay === undefined ? `cb-${jobId}-${event}` : `cb-${jobId}-${event}-r${replay}`;
  return jobOptions(
    {
      attempts: policy.attempts,
      backoffMs: policy.backoffMs,
      jitter: 0.5,
      keepCompletedSeconds: 7 * 24 * 3600,
      keepFailedSeconds: 30 * 24 * 3600,
    },
    id,
  );
}

export function enqueueCallback(
  queues: ShardQueues<CallbackJobData>,
  policy: CallbackPolicy,
  data: CallbackJobData,
  replay?: number,
): Promise<unknown> {
  const queue = queues.forId(data.jobId);
  if (!queue) return Promise.reject(new Error('the job id names no model shard served here'));
  return queue.add('deliver', data, callbackJobOptions(policy, data.jobId, data.event, replay));
}

/** Queues the callback a transition recorded in the outbox, then clears the outbox entry. */
export function callbackSender(
  queues: ShardQueues<CallbackJobData>,
  outbox: Outbox,
  policy: CallbackPolicy,
): CallbackSender {
  return {
    async send(jobId, event) {
      await enqueueCallback(queues, policy, { jobId, event, eventId: `evt-${jobId}-${event}` });
      await outbox.clear(jobId, event);
    },
  };
}

export interface CallbackJobDeps {
  store: JobStore;
  deadLetters: DeadLetters;
  keys: ApiKeyStore;
  metrics: JobMetrics;
  logger: Logger;
  policy: CallbackPolicy;
}

export async function execCallbackJob(job: Job<CallbackJobData>, deps: CallbackJobDeps): Promise<string> {
  const { store, metrics, logger } = deps;
  const { jobId, event, eventId } = job.data;
  const record = await store.get(jobId);
  if (!record?.callbackUrl) return 'no callback';
  const finalAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
  const deadLetter = async (error: string) => {
    const attempts = job.attemptsMade + 1;
    await deps.deadLetters.put({ jobId, event, eventId, error, attempts, failedAt: new Date().toISOString() });
    metrics.callbackDeadLetters.inc();
    logger.warn({ jobId, eventId, event, error }, 'callback dead-lettered');
  };
  const secret = deps.keys.callbackSecret(record.client);
  if (!secret) {
    await deadLetter('no callback secret configured for this client');
    throw new UnrecoverableError('no callback secret');
  }
  const url = new URL(record.callbackUrl);
  const at = new Date();
  const body = JSON.stringify(jobEvent(record, event, eventId, at));
  try {
    await postEvent(url, body, signedHeaders(secret, eventId, at, body), {
      timeoutMs: deps.policy.timeoutMs,
      allowInternal: namedExactly(hostOf(url), deps.keys.callbackHostsOf(record.client)),
    });
    metrics.callbackAttempts.inc({ outcome: 'delivered' });
    return 'delivered';
  } catch (err) {
    metrics.callbackAttempts.inc({ outcome: 'failed' });
    const message = (err as Error).message;
    const retryable = !(err instanceof DeliveryError) || err.retryable;
    logger.info({ jobId, eventId, attempt: job.attemptsMade + 1, error: message }, 'callback attempt failed');
    if (!retryable || finalAttempt) {
      await deadLetter(message);
      throw new UnrecoverableError(message);
    }
    throw err;
  }
}

export function startCallbackWorker(
  deps: CallbackJobDeps & { redisUrl: string; shards: readonly string[]; concurrency: number },
) {
  const connection = newRedis(deps.redisUrl, { maxRetriesPerRequest: null });
  const worker = new ShardWorkers<CallbackJobData>(CALLBACK_QUEUE, deps.shards, (job) => execCallbackJob(job, deps), {
    connection,
    concurrency: deps.concurrency,
  });
  worker.on('error', (err) => deps.logger.warn({ err: { message: err.message } }, 'callback worker error'));
  return {
    worker,
    async close() {
      await worker.close();
      connection.disconnect();
    },
  };
}
