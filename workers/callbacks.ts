import { type Job, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { DeliveryError, postEvent } from '../src/callbacks/deliver.ts';
import { signedHeaders } from '../src/callbacks/event.ts';
import { jobEvent } from '../src/callbacks/payload.ts';
import { hostOf, namedExactly } from '../src/callbacks/url-policy.ts';
import { type CallbackJobData, type CallbackPolicy, QUEUE_NAMES } from '../src/jobs/queues.ts';
import type { DeadLetter, JobStore } from '../src/jobs/store.ts';
import type { ApiKeyStore } from '../src/platform/auth.ts';
import type { JobMetrics } from '../src/platform/metrics.ts';

export interface CallbackWorkerDeps {
  redisUrl: string;
  prefix: string;
  store: JobStore;
  keys: ApiKeyStore;
  metrics: JobMetrics;
  logger: Logger;
  policy: CallbackPolicy;
  concurrency: number;
}

/**
 * Delivers signed CloudEvents to callback URLs. Retries with exponential backoff and jitter (BullMQ), with the same
 * event id every time; after the last attempt the event goes to the dead-letter list, from which an admin replays it.
 */
export function startCallbackWorker(deps: CallbackWorkerDeps) {
  const { store, metrics, logger } = deps;
  const process = async (job: Job<CallbackJobData>) => {
    const { jobId, event, eventId } = job.data;
    const record = await store.get(jobId);
    if (!record?.callbackUrl) return 'no callback';
    const finalAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    const deadLetter = async (error: string) => {
      const letter: DeadLetter = {
        jobId,
        event,
        eventId,
        error,
        attempts: job.attemptsMade + 1,
        failedAt: new Date().toISOString(),
      };
      await store.redis.hset(store.deadLettersKey, eventId, JSON.stringify(letter));
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
  };
  const connection = new Redis(deps.redisUrl, { maxRetriesPerRequest: null });
  const worker = new Worker<CallbackJobData>(QUEUE_NAMES.callbacks, process, {
    connection,
    prefix: deps.prefix,
    concurrency: deps.concurrency,
  });
  worker.on('error', (err) => logger.warn({ err: { message: err.message } }, 'callback worker error'));
  return {
    worker,
    async close() {
      await worker.close();
      connection.disconnect();
    },
  };
}
