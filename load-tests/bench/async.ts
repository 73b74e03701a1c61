import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { KeySpace } from '../../src/platform/keyspace.ts';
import {
  DEFAULT_REDIS_URL,
  deletePrefix,
  envNumber,
  fmt,
  HttpClient,
  logProfile,
  passFail,
  procCpuMs,
  runJsonChild,
  sleep,
  summarize,
} from './common.ts';
import type { BenchContext, Section, SectionResult } from './context.ts';
import { NEWS2_INSTANCE } from './sync.ts';
import { startTriage, type TriageProcess } from './triage.ts';

/** Issue 3: jobs/s through submit → run → release ≥ 50% of raw BullMQ add → complete; idle submit-to-release p50 < 20 ms. */
export const ASYNC_GOALS = { minRateRatio: 0.5, maxIdleP50Ms: 20 };

const FINAL = new Set(['released', 'rejected', 'failed', 'cancelled']);

interface RawBullmqResult {
  idle: { jobs: number; p50Ms: number; p90Ms: number; p99Ms: number };
  throughput: {
    jobs: number;
    producers: number;
    concurrency: number;
    addPhaseMs: number;
    elapsedMs: number;
    jobsPerSec: number;
    addToCompleteP50Ms: number;
    addToCompleteP99Ms: number;
    cpuMsPerJob: number;
  };
}

interface Submitted {
  id: string;
}

/** `POST /v1/models/news2/predict` with `Prefer: respond-async`: 202 and the job id, or throws. */
async function submit(http: HttpClient, body: string): Promise<Submitted> {
  const r = await http.request('POST', '/v1/models/news2/predict', body, { prefer: 'respond-async' });
  if (r.status !== 202) throw new Error(`submit answered ${r.status}: ${r.text.slice(0, 300)}`);
  const id = (JSON.parse(r.text) as { id?: string }).id;
  if (!id) throw new Error(`submit: no job id in ${r.text.slice(0, 300)}`);
  return { id };
}

/** Polls GET /v1/jobs/:id every `everyMs` until a final state; returns the state and when it was first seen. */
async function waitReleased(http: HttpClient, id: string, everyMs: number, timeoutMs = 10_000) {
  const deadline = performance.now() + timeoutMs;
  let polls = 0;
  for (;;) {
    const r = await http.request('GET', `/v1/jobs/${id}`);
    polls++;
    const state = r.status === 200 ? (JSON.parse(r.text) as { state: string }).state : `HTTP ${r.status}`;
    if (FINAL.has(state) || r.status !== 200) return { state, at: performance.now(), polls, text: r.text };
    if (performance.now() > deadline) throw new Error(`job ${id} still ${state} after ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

/** Server-side timestamps of jobs (Triage's own clock, ms): createdAt, startedAt (worker picked it up), releasedAt. */
async function jobTimes(redis: Redis, prefix: string, ids: readonly string[]) {
  const out: Array<{ id: string; state: string; createdAt: number; startedAt: number; releasedAt: number }> = [];
  for (let i = 0; i < ids.length; i += 1000) {
    const pipe = redis.pipeline();
    for (const id of ids.slice(i, i + 1000))
      pipe.hmget(`${prefix}:job:${id}`, 'state', 'createdAt', 'startedAt', 'releasedAt');
    const res = (await pipe.exec()) ?? [];
    res.forEach(([err, v], j) => {
      if (err) throw err;
      const [state, createdAt, startedAt, releasedAt] = v as Array<string | null>;
      out.push({
        id: ids[i + j] as string,
        state: state ?? 'missing',
        createdAt: Number(createdAt),
        startedAt: Number(startedAt),
        releasedAt: Number(releasedAt),
      });
    });
  }
  return out;
}

/** Waits until every job is in a final state, polling `HGET …:job:<id> state` on a small window of the oldest. */
async function waitAllFinal(redis: Redis, prefix: string, ids: readonly string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let first = 0;
  const window = 128;
  while (first < ids.length) {
    const slice = ids.slice(first, first + window);
    const pipe = redis.pipeline();
    for (const id of slice) pipe.hget(`${prefix}:job:${id}`, 'state');
    const states = ((await pipe.exec()) ?? []).map(([, v]) => v as string | null);
    let advanced = 0;
    while (advanced < states.length && FINAL.has(states[advanced] ?? '')) advanced++;
    first += advanced;
    if (first >= ids.length) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${ids.length - first} of ${ids.length} jobs not final after ${timeoutMs} ms (next: ${states[advanced]})`,
      );
    }
    if (advanced < window) await sleep(20);
  }
}

export const asyncSection: Section = {
  name: 'async',
  description:
    'async jobs: submit → run → release (news2 via Prefer: respond-async, no review hold) vs raw BullMQ add → no-op worker',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const errors: string[] = [];
    const jobs = envNumber('BENCH_ASYNC_JOBS', 2000, 1);
    const submitters = envNumber('BENCH_ASYNC_SUBMITTERS', ctx.settings.connections, 1);
    const concurrency = envNumber('BENCH_ASYNC_CONCURRENCY', 4, 1);
    const idleJobs = envNumber('BENCH_ASYNC_IDLE_JOBS', 50, 1);
    const idleWarmup = envNumber('BENCH_ASYNC_IDLE_WARMUP', 10, 0);
    const pollMs = envNumber('BENCH_ASYNC_POLL_MS', 2, 0);
    const settings = { jobs, submitters, concurrency, idleJobs, idleWarmup, pollMs };
    ctx.log(
      `${jobs} jobs, ${submitters} submissions in flight, worker concurrency ${concurrency}; idle: ${idleJobs} sequential ` +
        `jobs after ${idleWarmup} warm-up, polled every ${pollMs} ms`,
    );

    // 1. baseline, while nothing else runs: raw BullMQ in its own process, its own prefix; run again after Triage
    // (step 5), so a shared machine's load, which moves within seconds, weighs on both sides alike
    const runRaw = async (label: string): Promise<RawBullmqResult> => {
      const rawPrefix = `{triage-bench-raw-${process.pid}-${randomBytes(4).toString('hex')}}`;
      let raw: RawBullmqResult;
      try {
        raw = await runJsonChild<RawBullmqResult>(
          ctx.children,
          'raw bullmq',
          path.join(ctx.repoRoot, 'load-tests', 'bench', 'raw-bullmq.ts'),
          {
            RAW_REDIS_URL: ctx.redisUrl ?? DEFAULT_REDIS_URL,
            RAW_PREFIX: rawPrefix,
            RAW_JOBS: String(jobs),
            RAW_PRODUCERS: String(submitters),
            RAW_CONCURRENCY: String(concurrency),
            RAW_IDLE_JOBS: String(idleJobs),
            RAW_IDLE_WARMUP: String(idleWarmup),
          },
          { cwd: ctx.repoRoot, marker: 'RAW_JSON', timeoutMs: 120_000 },
        );
      } finally {
        await deletePrefix(ctx.redisUrl, rawPrefix).catch(() => 0);
      }
      ctx.log(
        `  raw BullMQ   ${label}: idle add→complete p50 ${fmt(raw.idle.p50Ms)} ms (p99 ${fmt(raw.idle.p99Ms)}); ` +
          `${jobs} jobs in ${fmt(raw.throughput.elapsedMs / 1000)} s = ${fmt(raw.throughput.jobsPerSec, 0)} jobs/s, ` +
          `${fmt(raw.throughput.cpuMsPerJob, 3)} ms CPU per job`,
      );
      return raw;
    };
    const rawBefore = await runRaw('before');

    // 2. Triage: gateway + in-process workers (TRIAGE_WORKERS=all), its own prefix
    const profDir = ctx.settings.cpuProfile
      ? path.join(ctx.resultsDir, 'profiles', `triage-async-${Date.now()}`)
      : undefined;
    if (profDir) mkdirSync(profDir, { recursive: true });
    const triage: TriageProcess = await startTriage(ctx, {
      name: 'triage (async)',
      logLevel: 'warn',
      accessLog: false,
      env: { TRIAGE_WORKERS: 'all', TRIAGE_WORKER_CONCURRENCY: String(concurrency) },
      ...(profDir ? { cpuProfDir: profDir } : {}),
    });
    let profile: unknown;
    const http = new HttpClient(triage.url, { authorization: `Bearer ${triage.clientKey}` }, submitters + 4);
    const redis = new Redis(ctx.redisUrl ?? DEFAULT_REDIS_URL, { maxRetriesPerRequest: 3 });
    const body = JSON.stringify({ instances: [NEWS2_INSTANCE] });
    // job records live in the model's shard (src/platform/keyspace.ts)
    const shard = new KeySpace(triage.prefix).shard('news2');
    try {
      // probe: the job is released without a hold and carries the result
      const probe = await submit(http, body);
      const probeDone = await waitReleased(http, probe.id, 5);
      if (probeDone.state !== 'released' || !probeDone.text.includes('"result"')) {
        throw new Error(`probe job ended ${probeDone.state}: ${probeDone.text.slice(0, 300)}`);
      }

      // 3. idle: one job at a time, client-observed submit → GET says released
      const idleClient: number[] = [];
      const idleIds: string[] = [];
      let idlePolls = 0;
      for (let i = 0; i < idleWarmup + idleJobs; i++) {
        const t = performance.now();
        const { id } = await submit(http, body);
        const done = await waitReleased(http, id, pollMs);
        if (done.state !== 'released') throw new Error(`idle job ${id} ended ${done.state}`);
        if (i >= idleWarmup) {
          idleClient.push(done.at - t);
          idleIds.push(id);
          idlePolls += done.polls;
        }
      }
      const idleTimes = await jobTimes(redis, shard, idleIds);
      const idle = {
        client: summarize(idleClient),
        server: summarize(idleTimes.map((j) => j.releasedAt - j.createdAt)),
        // created → the worker's running transition, and from there → released (Triage's clock, whole ms)
        pickup: summarize(idleTimes.map((j) => j.startedAt - j.createdAt)),
        work: summarize(idleTimes.map((j) => j.releasedAt - j.startedAt)),
        meanPolls: idlePolls / idleJobs,
      };
      ctx.log(
        `  triage       idle submit→released p50 ${fmt(idle.client.p50)} ms (p90 ${fmt(idle.client.p90)}, p99 ` +
          `${fmt(idle.client.p99)}; client-observed, ${fmt(idle.meanPolls, 1)} GETs/job); server-side createdAt→releasedAt ` +
          `p50 ${fmt(idle.server.p50, 0)} ms = created→started ${fmt(idle.pickup.p50, 0)} + started→released ${fmt(idle.work.p50, 0)}`,
      );

      // 4. throughput: `jobs` submissions, `submitters` in flight; released = Triage's own releasedAt
      const ids: string[] = [];
      const submitMs: number[] = [];
      let next = 0;
      const cpuBefore = procCpuMs(triage.child.proc.pid);
      const t0 = Date.now();
      await Promise.all(
        Array.from({ length: submitters }, async () => {
          while (next < jobs) {
            next++;
            const t = performance.now();
            ids.push((await submit(http, body)).id);
            submitMs.push(performance.now() - t);
          }
        }),
      );
      const submittedAt = Date.now();
      await waitAllFinal(redis, shard, ids, 120_000);
      const cpuAfter = procCpuMs(triage.child.proc.pid);
      const times = await jobTimes(redis, shard, ids);
      const notReleased = times.filter((j) => j.state !== 'released');
      if (notReleased.length > 0) {
        errors.push(`${notReleased.length} of ${jobs} jobs not released (e.g. ${notReleased[0]?.state})`);
      }
      const lastRelease = Math.max(...times.map((j) => j.releasedAt).filter(Number.isFinite));
      const elapsedMs = lastRelease - t0;
      const throughput = {
        jobs,
        submitPhaseMs: submittedAt - t0,
        submitRate: (jobs * 1000) / (submittedAt - t0),
        submitLatencyMs: summarize(submitMs),
        elapsedMs,
        jobsPerSec: (jobs * 1000) / elapsedMs,
        // Triage's process (gateway and workers, every thread) per job, from the first submission until all were seen
        // released: like the baseline's, steadier than jobs/s on a shared machine
        cpuMsPerJob: cpuBefore !== undefined && cpuAfter !== undefined ? (cpuAfter - cpuBefore) / jobs : Number.NaN,
        submitToReleaseMs: summarize(times.map((j) => j.releasedAt - j.createdAt).filter(Number.isFinite)),
        // the worker alone: releases after the last submission answered, over that tail
        workerOnlyJobsPerSec: (() => {
          const tail = times.filter((j) => j.releasedAt > submittedAt).length;
          return lastRelease > submittedAt ? (tail * 1000) / (lastRelease - submittedAt) : Number.NaN;
        })(),
      };
      ctx.log(
        `  triage       ${jobs} jobs in ${fmt(elapsedMs / 1000)} s = ${fmt(throughput.jobsPerSec, 0)} jobs/s ` +
          `(submissions ${fmt(throughput.submitRate, 0)}/s, POST p50 ${fmt(throughput.submitLatencyMs.p50)} ms / p99 ` +
          `${fmt(throughput.submitLatencyMs.p99)} ms; createdAt→releasedAt under load p50 ${fmt(throughput.submitToReleaseMs.p50, 0)} ms; ` +
          `after the last submission the workers alone released ${fmt(throughput.workerOnlyJobsPerSec, 0)} jobs/s); ` +
          `${fmt(throughput.cpuMsPerJob, 3)} ms CPU per job`,
      );

      // 5. the baseline again, Triage stopped; the goals compare with the mean of its two runs
      await triage.stop();
      const rawAfter = await runRaw('after ');
      const raw = {
        before: rawBefore,
        after: rawAfter,
        jobsPerSec: (rawBefore.throughput.jobsPerSec + rawAfter.throughput.jobsPerSec) / 2,
        cpuMsPerJob: (rawBefore.throughput.cpuMsPerJob + rawAfter.throughput.cpuMsPerJob) / 2,
        idleP50Ms: (rawBefore.idle.p50Ms + rawAfter.idle.p50Ms) / 2,
      };

      // 6. verdicts
      const ratio = throughput.jobsPerSec / raw.jobsPerSec;
      const comparison = {
        rateRatio: ratio,
        ratePass: ratio >= ASYNC_GOALS.minRateRatio,
        idleP50Ms: idle.client.p50,
        idlePass: idle.client.p50 < ASYNC_GOALS.maxIdleP50Ms,
      };
      ctx.log();
      ctx.log(
        `goals (issue 3): jobs/s ≥ ${ASYNC_GOALS.minRateRatio * 100}% of raw BullMQ; idle submit-to-release p50 < ${ASYNC_GOALS.maxIdleP50Ms} ms`,
      );
      ctx.log(
        `  throughput   triage ${fmt(throughput.jobsPerSec, 0)} jobs/s vs raw BullMQ ${fmt(raw.jobsPerSec, 0)} jobs/s (mean of its two runs)` +
          ` = ${fmt(ratio * 100, 1)}% ${passFail(comparison.ratePass)}`,
      );
      ctx.log(
        `  idle p50     triage ${fmt(idle.client.p50)} ms (raw BullMQ add→complete ${fmt(raw.idleP50Ms)} ms, ` +
          `${fmt(idle.client.p50 / raw.idleP50Ms, 1)}×) ${passFail(comparison.idlePass)}`,
      );
      ctx.log(
        `  CPU per job  triage ${fmt(throughput.cpuMsPerJob, 3)} ms vs raw BullMQ ${fmt(raw.cpuMsPerJob, 3)} ms ` +
          `(${fmt(throughput.cpuMsPerJob / raw.cpuMsPerJob, 1)}×; each process over its throughput run, every thread)`,
      );
      if (profDir) {
        await triage.stop();
        ctx.log();
        profile = logProfile(ctx, profDir, 'Triage (async) main thread');
      }
      return {
        data: { goals: ASYNC_GOALS, settings, raw, triage: { idle, throughput }, comparison, profile },
        errors,
      };
    } finally {
      http.close();
      redis.disconnect();
      await triage.stop();
    }
  },
};
