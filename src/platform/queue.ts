import {
  type JobsOptions,
  type JobType,
  type Processor,
  Queue,
  Worker,
  type WorkerListener,
  type WorkerOptions,
} from 'bullmq';
import type { Logger } from 'pino';
import type { KeySpace } from './keyspace.ts';
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

/**
 * One BullMQ queue per model shard (its prefix the model's hash tag, so each queue's scripts run on its shard's
 * slot): `for(model)` when adding, `forId(id)` for a record id that names its shard (KeySpace.newId). The whole set
 * answers the questions asked of "the queue" (counts, a job by id) by asking every shard.
 */
export class ShardQueues<T> {
  readonly #queues = new Map<string, Queue<T>>();
  readonly #make: (prefix: string) => Queue<T>;
  readonly #keys: KeySpace;

  constructor(name: string, connection: RedisClient, keys: KeySpace, logger: Logger) {
    this.#keys = keys;
    this.#make = (prefix) => createQueue<T>(name, connection, prefix, logger);
    // made now, while the connection is up: a BullMQ queue first used while Redis is away stays broken after it is back
    for (const { model } of keys.shards()) this.for(model);
  }

  for(model: string): Queue<T> {
    let queue = this.#queues.get(model);
    if (!queue) {
      queue = this.#make(this.#keys.shard(model));
      this.#queues.set(model, queue);
    }
    return queue;
  }

  /** The queue of the shard a record id (or a queue job id containing one) names; undefined for a foreign id. */
  forId(id: string): Queue<T> | undefined {
    const model = this.#keys.modelOfId(id);
    return model === undefined ? undefined : this.for(model);
  }

  /** Every shard's queue (the models this process knows). */
  all(): Queue<T>[] {
    return this.#keys.shards().map(({ model }) => this.for(model));
  }

  async getJob(id: string) {
    return this.forId(id)?.getJob(id);
  }

  /** Counts summed over the shards. */
  async getJobCounts(...types: JobType[]): Promise<Record<string, number>> {
    const total: Record<string, number> = {};
    for (const counts of await Promise.all(this.all().map((q) => q.getJobCounts(...types)))) {
      for (const [k, v] of Object.entries(counts)) total[k] = (total[k] ?? 0) + v;
    }
    return total;
  }

  /** One count summed over the shards and the types. */
  async getJobCountByTypes(...types: JobType[]): Promise<number> {
    const counts = await Promise.all(this.all().map((q) => q.getJobCountByTypes(...types)));
    return counts.reduce((a, b) => a + b, 0);
  }

  async getJobs(types: JobType[]) {
    return (await Promise.all(this.all().map((q) => q.getJobs(types)))).flat();
  }

  async close(): Promise<void> {
    await Promise.all([...this.#queues.values()].map((q) => q.close()));
  }
}

/**
 * One BullMQ worker per model shard served (its queue's prefix the shard's tag), sharing one connection (each
 * worker makes its own blocking connection from it). Seen from outside as one worker: /healthz's running check,
 * the gateway's pause under bedside pressure, and close. A shard added later (`add`: a model a reload added) gets a
 * worker like the others: the same listeners, paused while they are.
 */
export class ShardWorkers<T> {
  readonly name: string;
  readonly workers: Worker<T>[] = [];
  readonly #make: (prefix: string) => Worker<T>;
  readonly #prefixes = new Set<string>();
  readonly #listeners: Array<(w: Worker<T>) => void> = [];
  #paused = false;
  #closing = false;

  constructor(
    name: string,
    prefixes: readonly string[],
    processor: Processor<T>,
    options: Omit<WorkerOptions, 'prefix'>,
  ) {
    this.name = name;
    this.#make = (prefix) => new Worker<T>(name, processor, { ...options, prefix });
    for (const prefix of prefixes) this.add(prefix);
  }

  /** Starts a worker on one more shard; false when it is served already (or the set is closing). */
  add(prefix: string): boolean {
    if (this.#closing || this.#prefixes.has(prefix)) return false;
    const worker = this.#make(prefix);
    this.#prefixes.add(prefix);
    this.workers.push(worker);
    for (const attach of this.#listeners) attach(worker);
    if (this.#paused) void worker.pause(true).catch((err: Error) => worker.emit('error', err));
    return true;
  }

  on<E extends 'error' | 'failed'>(event: E, listener: WorkerListener<T>[E]): this {
    const attach = (w: Worker<T>) => w.on(event, listener);
    this.#listeners.push(attach);
    for (const w of this.workers) attach(w);
    return this;
  }

  isRunning(): boolean {
    return this.workers.every((w) => w.isRunning());
  }

  get closing(): Promise<void> | undefined {
    const closing = this.workers.map((w) => w.closing).filter((c) => c !== undefined);
    return closing.length > 0 ? Promise.all(closing).then(() => undefined) : undefined;
  }

  async pause(doNotWaitActive?: boolean): Promise<void> {
    this.#paused = true;
    await Promise.all(this.workers.map((w) => w.pause(doNotWaitActive)));
  }

  resume(): void {
    this.#paused = false;
    for (const w of this.workers) w.resume();
  }

  /**
   * Closes every shard's worker, waiting for their active jobs; a worker whose close has not finished after `graceMs`
   * is left behind (reported on its 'error' listeners). BullMQ can leave a worker's close waiting on its blocking
   * client's reconnection after a Redis Cluster failover (taskforcesh/bullmq#4656); a job cut off that way has its
   * lock lapse and is retried, as after a crash, and the process's shutdown is not held hostage.
   */
  async close(graceMs = WORKER_CLOSE_GRACE_MS): Promise<void> {
    this.#closing = true;
    await Promise.all(
      this.workers.map(async (w) => {
        let timer: NodeJS.Timeout | undefined;
        const gaveUp = new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), graceMs);
        });
        const closed = await Promise.race([w.close().then(() => true), gaveUp]);
        clearTimeout(timer);
        if (!closed) w.emit('error', new Error(`closing the worker of ${w.opts.prefix} took over ${graceMs} ms: left`));
      }),
    );
  }
}

/** How long a shard's worker may take to close (its active jobs included) before shutdown goes on without it. */
export const WORKER_CLOSE_GRACE_MS = 20_000;
