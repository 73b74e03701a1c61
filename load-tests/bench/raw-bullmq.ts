/**
 * The async section's baseline, in its own process: raw BullMQ on the same Redis, `queue.add` → a Worker with a
 * no-op processor → completed. The job and worker options are those Triage's inference queue uses (our own job id,
 * 3 attempts with backoff, removeOnComplete after a day; 30 s lock), so the only difference is Triage's own work.
 *
 * 1. idle latency: RAW_IDLE_WARMUP + RAW_IDLE_JOBS sequential single jobs, add → 'completed' event (in-process);
 * 2. throughput: RAW_JOBS jobs added with RAW_PRODUCERS adds in flight, until the worker completed them all.
 *
 * env: RAW_REDIS_URL, RAW_PREFIX, RAW_JOBS, RAW_PRODUCERS, RAW_CONCURRENCY, RAW_IDLE_JOBS, RAW_IDLE_WARMUP.
 * Prints one line `RAW_JSON {…}`.
 */
import { randomUUID } from 'node:crypto';
import { type JobsOptions, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';

const num = (name: string, fallback: number) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name}: bad number`);
  return v;
};
const redisUrl = process.env.RAW_REDIS_URL || 'redis://127.0.0.1:6379';
const prefix = process.env.RAW_PREFIX;
if (!prefix) throw new Error('RAW_PREFIX is required');
const jobs = num('RAW_JOBS', 2000);
const producers = Math.max(1, num('RAW_PRODUCERS', 32));
const concurrency = Math.max(1, num('RAW_CONCURRENCY', 4));
const idleJobs = num('RAW_IDLE_JOBS', 50);
const idleWarmup = num('RAW_IDLE_WARMUP', 10);

const jobOptions = (): JobsOptions => ({
  jobId: randomUUID(),
  attempts: 3,
  backoff: { type: 'exponential', delay: 1000, jitter: 0.5 },
  removeOnComplete: { age: 24 * 3600 },
  removeOnFail: { age: 7 * 24 * 3600 },
});

const queueConnection = new Redis(redisUrl, { maxRetriesPerRequest: null });
const workerConnection = new Redis(redisUrl, { maxRetriesPerRequest: null });
const queue = new Queue('inference', { connection: queueConnection, prefix });
const waiters = new Map<string, () => void>();
let completed = 0;
let lastCompletedAt = 0;
let allDone: { target: number; resolve: () => void } | undefined;
const latencies: number[] = [];
const worker = new Worker('inference', async () => 'ok', {
  connection: workerConnection,
  prefix,
  concurrency,
  lockDuration: 30_000,
  stalledInterval: 30_000,
  maxStalledCount: 2,
});
worker.on('completed', (job) => {
  completed++;
  lastCompletedAt = Date.now();
  if (job.finishedOn) latencies.push(job.finishedOn - job.timestamp);
  if (allDone && completed >= allDone.target) {
    allDone.resolve();
    allDone = undefined;
  }
  const w = waiters.get(job.id as string);
  if (w) {
    waiters.delete(job.id as string);
    w();
  }
});
worker.on('failed', (job, err) => {
  process.stderr.write(`raw-bullmq: job ${job?.id} failed: ${err.message}\n`);
});
await worker.waitUntilReady();

const sorted = (a: number[]) => [...a].sort((x, y) => x - y);
const pct = (s: number[], p: number) =>
  s[Math.min(s.length - 1, Math.max(0, Math.ceil(s.length * p) - 1))] ?? Number.NaN;

// 1. idle: one job at a time
const idle: number[] = [];
for (let i = 0; i < idleWarmup + idleJobs; i++) {
  const opts = jobOptions();
  const done = new Promise<void>((resolve) => waiters.set(opts.jobId as string, resolve));
  const t = performance.now();
  await queue.add('infer', { jobId: opts.jobId }, opts);
  await done;
  if (i >= idleWarmup) idle.push(performance.now() - t);
}

// 2. throughput
completed = 0;
latencies.length = 0;
let next = 0;
const t0 = Date.now();
const cpu0 = process.cpuUsage();
const all = new Promise<void>((resolve) => {
  allDone = { target: jobs, resolve };
});
await Promise.all(
  Array.from({ length: producers }, async () => {
    while (next < jobs) {
      next++;
      const opts = jobOptions();
      await queue.add('infer', { jobId: opts.jobId }, opts);
    }
  }),
);
const addedAt = Date.now();
await all;
const cpu = process.cpuUsage(cpu0);
const elapsedMs = lastCompletedAt - t0;
const idleSorted = sorted(idle);
const loaded = sorted(latencies);
process.stdout.write(
  `RAW_JSON ${JSON.stringify({
    idle: { jobs: idle.length, p50Ms: pct(idleSorted, 0.5), p90Ms: pct(idleSorted, 0.9), p99Ms: pct(idleSorted, 0.99) },
    throughput: {
      jobs,
      producers,
      concurrency,
      addPhaseMs: addedAt - t0,
      elapsedMs,
      jobsPerSec: (jobs * 1000) / elapsedMs,
      addToCompleteP50Ms: pct(loaded, 0.5),
      addToCompleteP99Ms: pct(loaded, 0.99),
      // this process's CPU (producers and worker) per job over the run
      cpuMsPerJob: (cpu.user + cpu.system) / 1000 / jobs,
    },
  })}\n`,
);
await worker.close();
await queue.close();
queueConnection.disconnect();
workerConnection.disconnect();
process.exit(0);
