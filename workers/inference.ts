import { type Job, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import {
  type CallbackPolicy,
  enqueueCallback,
  type InferenceJobData,
  QUEUE_NAMES,
  type Queues,
} from '../src/jobs/queues.ts';
import { holdDecision } from '../src/jobs/review-policy.ts';
import type { JobRecord, JobStore } from '../src/jobs/store.ts';
import { Problem } from '../src/platform/errors.ts';
import type { JobMetrics } from '../src/platform/metrics.ts';
import type { LoadedModel } from '../src/registry/load.ts';
import { RoutingReader } from '../src/releases/service.ts';
import type { ModelRuntime } from '../src/runtime/types.ts';
import { prepareInput } from '../src/serving/inputs.ts';
import { shapePredictions } from '../src/serving/predictions.ts';
import { comparable, type ShadowRecorder } from '../src/serving/shadow.ts';
import type { RuntimeFactory } from '../src/sync/service.ts';

export interface InferenceWorkerDeps {
  redisUrl: string;
  prefix: string;
  store: JobStore;
  queues: Queues;
  models: ReadonlyMap<string, LoadedModel>;
  runtimeFactory: RuntimeFactory;
  metrics: JobMetrics;
  logger: Logger;
  callbacks: CallbackPolicy;
  concurrency: number;
  /** lock duration and stalled-job check interval (default 30 s): how soon a crashed worker's job is recovered */
  lockMs?: number;
  now: () => number;
  /** records shadow pairs of async jobs (routing.shadow in the manifest) */
  shadow?: ShadowRecorder;
  /** for the review sample; injectable so tests can decide */
  random?: () => number;
}

/**
 * Runs queued async jobs. Idempotent per job: a job that a crashed worker left half-done is picked up again by
 * BullMQ's stalled-job recovery, and the state machine makes sure its result is recorded, held or released once.
 */
export function startInferenceWorker(deps: InferenceWorkerDeps) {
  const runtimes = new Map<string, Promise<ModelRuntime>>();
  const runtimeFor = (model: LoadedModel, version: string) => {
    const key = `${model.manifest.name}@${version}`;
    let runtime = runtimes.get(key);
    if (!runtime) {
      const v = model.manifest.versions.find((x) => x.version === version);
      if (!v) throw new UnrecoverableError(`model ${model.manifest.name} has no version ${version}`);
      runtime = deps.runtimeFactory(model, v);
      runtime.catch(() => runtimes.delete(key));
      runtimes.set(key, runtime);
    }
    return runtime;
  };

  /** Records a job's failure, once (only from queued or running), and queues its failed callback. */
  const failJob = async (record: JobRecord, reason: string) => {
    const { store, now, metrics } = deps;
    const id = record.id;
    const done = await store.transition(id, record.model, ['queued', 'running'], 'failed', {
      now: now(),
      fields: { error: reason },
      ...(record.callbackUrl ? { callback: 'failed' as const } : {}),
      audit: { actor: 'system', role: 'worker', action: 'job.fail', target: id, model: record.model, detail: reason },
    });
    if (done.ok) {
      metrics.jobs.inc({ model: record.model, state: 'failed' });
      if (record.callbackUrl)
        await enqueueCallback(deps.queues, deps.store.redis, store.outboxKey, deps.callbacks, id, 'failed');
    }
  };

  const routing = new RoutingReader(deps.store.redis, deps.prefix);

  const process = async (job: Job<InferenceJobData>) => {
    const { store, now, metrics } = deps;
    const id = job.data.jobId;
    // one round trip: queued (or a stalled running) → running with its start time and attempt, and the record back
    const claim = await store.claim(id, now());
    if (!claim.record) return claim.state ? `already ${claim.state}` : 'gone';
    const record = claim.record;
    const model = deps.models.get(record.model);
    const fail = (reason: string) => failJob(record, reason);
    if (!model) {
      await fail('the model is no longer served');
      throw new UnrecoverableError('model not served');
    }
    let input: { data: Float32Array; rows: number };
    try {
      input = prepareInput(model.manifest, record.input);
    } catch (err) {
      // bad input fails at once: retrying cannot help
      await fail(err instanceof Problem ? `invalid input: ${err.message}` : 'invalid input');
      throw new UnrecoverableError('invalid input');
    }

    let predictions: ReturnType<typeof shapePredictions>;
    const timeoutMs = model.manifest.async?.timeoutMs ?? 60_000;
    const scoringStarted = performance.now();
    try {
      const runtime = await runtimeFor(model, record.version);
      let timer: NodeJS.Timeout | undefined;
      const outputs = await Promise.race([
        runtime.run(input.data, input.rows, { deadline: Date.now() + timeoutMs }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no result within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
      predictions = shapePredictions(model.manifest.output, outputs, input.rows, model.corpus);
    } catch (err) {
      const finalAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      deps.logger.warn(
        {
          jobId: id,
          model: record.model,
          attempt: job.attemptsMade + 1,
          finalAttempt,
          err: { message: (err as Error).message },
        },
        'inference attempt failed',
      );
      if (finalAttempt) await fail('the model failed to score this job');
      else await store.transition(id, record.model, ['running'], 'queued', { now: now() });
      throw err;
    }

    const primaryMs = performance.now() - scoringStarted;
    // shadows see the same input after the primary has scored; their outputs are recorded, never stored on the job;
    // they neither wait for nor delay the job's hold or release, and their failures (or hangs) fail nothing
    // the routing in force (changes made through the API included), not only the manifest's
    const shadow = (await routing.get(model.manifest)).shadow;
    if (shadow && deps.shadow && (deps.random ?? Math.random)() < shadow.sampleRate) {
      const recorder = deps.shadow;
      const primary = predictions.map((p) => comparable(model.manifest.output, p));
      const mirror = async (version: string) => {
        const started = performance.now();
        let timer: NodeJS.Timeout | undefined;
        try {
          const runtime = await runtimeFor(model, version);
          const outputs = await Promise.race([
            runtime.run(input.data, input.rows, { deadline: Date.now() + timeoutMs }),
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`shadow gave no answer within ${timeoutMs} ms`)), timeoutMs);
            }),
          ]);
          const shadowPredictions = shapePredictions(model.manifest.output, outputs, input.rows, model.corpus);
          recorder.record({
            model: record.model,
            primaryVersion: record.version,
            shadowVersion: version,
            primary,
            shadow: shadowPredictions.map((p) => comparable(model.manifest.output, p)),
            primaryMs,
            shadowMs: performance.now() - started,
          });
        } catch (err) {
          recorder.record({
            model: record.model,
            primaryVersion: record.version,
            shadowVersion: version,
            primary,
            primaryMs,
            shadowMs: performance.now() - started,
            error: (err as Error).message,
          });
        } finally {
          clearTimeout(timer);
        }
      };
      for (const version of shadow.versions) if (version !== record.version) void mirror(version);
    }

    const output = JSON.stringify({ predictions });
    const hold = holdDecision(model.manifest, predictions, deps.random);
    if (hold.hold) {
      const held = await store.transition(id, record.model, ['running'], 'awaiting_review', {
        now: now(),
        fields: { output, heldAt: String(now()), holdReason: hold.reason },
        pending: 'add',
        audit: {
          actor: 'system',
          role: 'worker',
          action: 'job.hold',
          target: id,
          model: record.model,
          version: record.version,
          reason: hold.reason,
        },
      });
      if (held.ok) metrics.jobs.inc({ model: record.model, state: 'awaiting_review' });
      return held.ok ? 'held' : `not held: ${held.previous}`;
    }
    const released = await store.transition(id, record.model, ['running'], 'released', {
      now: now(),
      fields: { output, releasedAt: String(now()) },
      ...(record.callbackUrl ? { callback: 'released' as const } : {}),
      audit: {
        actor: 'system',
        role: 'worker',
        action: 'job.release',
        target: id,
        model: record.model,
        version: record.version,
        reason: hold.reason,
      },
    });
    if (released.ok) {
      metrics.jobs.inc({ model: record.model, state: 'released' });
      if (record.callbackUrl)
        await enqueueCallback(deps.queues, deps.store.redis, store.outboxKey, deps.callbacks, id, 'released');
    }
    return released.ok ? 'released' : `not released: ${released.previous}`;
  };

  const connection = new Redis(deps.redisUrl, { maxRetriesPerRequest: null });
  const worker = new Worker<InferenceJobData>(QUEUE_NAMES.inference, process, {
    connection,
    prefix: deps.prefix,
    concurrency: deps.concurrency,
    // a crashed worker's job goes back to wait after its lock lapses, and may stall twice before it fails
    lockDuration: deps.lockMs ?? 30_000,
    stalledInterval: deps.lockMs ?? 30_000,
    maxStalledCount: 2,
  });
  worker.on('error', (err) => deps.logger.warn({ err: { message: err.message } }, 'inference worker error'));
  // BullMQ may fail a job without running it (it stalled more than maxStalledCount times: it kept killing its
  // workers), or after an error the processor could not record: the record must not stay `running` forever
  worker.on('failed', (job, err) => {
    if (!job) return;
    void (async () => {
      if ((await job.getState()) !== 'failed') return; // another attempt follows
      const record = await deps.store.get(job.data.jobId);
      if (record && (record.state === 'queued' || record.state === 'running')) {
        await failJob(record, `the job could not be completed (${err.message})`);
      }
    })().catch((e: Error) =>
      deps.logger.warn({ jobId: job.data.jobId, err: { message: e.message } }, 'recording a job failure failed'),
    );
  });
  return {
    worker,
    async close() {
      await worker.close();
      await Promise.allSettled([...runtimes.values()].map(async (r) => (await r).close()));
      connection.disconnect();
    },
  };
}
