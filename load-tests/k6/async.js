// Async tier SLO: clinical notes submitted to note-triage (held for review), approved through the review API with a
// reviewer key, released, and called back.
//   k6 run -e BASE_URL=… -e CLIENT_KEY=… -e REVIEWER_KEY=… load-tests/k6/async.js
// env: ASYNC_RATE (jobs/s, default 5), DURATION (default 2m), POLL_MS (default 250), JOB_TIMEOUT_S (default 60),
//      CALLBACK_URL: the callbackUrl sent with each job (the gateway's callback worker must reach it and the client
//        key must allow its host); RECEIVER_URL: where k6 reaches the same receiver (load-tests/k6/callback-receiver.mjs)
//        to see each job's callback arrive. With both set, callback delivery gets its own thresholds.
// k6 cannot run an HTTP server, so time-to-release is measured by polling GET /v1/jobs/:id until the job is released;
// time-to-callback by polling the receiver's GET /events/:jobId.
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import http from 'k6/http';
import { Rate, Trend } from 'k6/metrics';
import {
  BASE_URL,
  CLIENT_KEY,
  clinicalNote,
  envDuration,
  envNumber,
  expecting,
  params,
  preflight,
  REVIEWER_KEY,
  SUMMARY_TREND_STATS,
  waitForJob,
} from './lib.js';

const RATE = envNumber('ASYNC_RATE', 5);
const DURATION = envDuration('DURATION', '2m');
const POLL_MS = envNumber('POLL_MS', 250);
const JOB_TIMEOUT_MS = envNumber('JOB_TIMEOUT_S', 60) * 1000;
const CALLBACK_URL = __ENV.CALLBACK_URL || '';
const RECEIVER_URL = (__ENV.RECEIVER_URL || '').replace(/\/+$/, '');
const MODEL = 'note-triage';
/** a per-run prefix, so idempotency keys of one run never collide with an earlier run's */
const RUN = __ENV.RUN_ID || String(Date.now());

const timeToReview = new Trend('job_time_to_review', true);
const timeToRelease = new Trend('job_time_to_release', true);
const jobCompleted = new Rate('job_completed');
const timeToCallback = new Trend('job_time_to_callback', true);
const callbackDelivered = new Rate('job_callback_delivered');

const thresholds = {
  'http_req_duration{name:submit}': ['p(95)<100', 'p(99)<250'],
  'http_req_failed{name:submit}': ['rate<0.001'],
  'http_req_duration{name:decision}': ['p(95)<100', 'p(99)<250'],
  // queued → awaiting_review: the async tier's own work (queue wait + scoring), no human in it
  job_time_to_review: ['p(95)<2000', 'p(99)<5000'],
  // submit → released, with the reviewer approving as soon as the job is held
  job_time_to_release: ['p(95)<3000', 'p(99)<6000'],
  job_completed: ['rate>0.999'],
  dropped_iterations: ['count<5'],
};
if (CALLBACK_URL && RECEIVER_URL) {
  // submit → the signed callback verified by the receiver (k6's clock only: seen by polling the receiver)
  thresholds.job_time_to_callback = ['p(95)<5000', 'p(99)<8000'];
  thresholds.job_callback_delivered = ['rate>0.999'];
}

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    notes: {
      executor: 'constant-arrival-rate',
      exec: 'jobFlow',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      // each iteration lives for the whole flow (seconds), so many are in flight at once
      preAllocatedVUs: Math.max(10, RATE * 5),
      maxVUs: Math.max(50, RATE * 30),
      gracefulStop: `${Math.ceil(JOB_TIMEOUT_MS / 1000) + 10}s`,
    },
  },
  thresholds: thresholds,
};

export function setup() {
  preflight({ reviewer: true });
  if (CALLBACK_URL && RECEIVER_URL) {
    const stats = http.get(`${RECEIVER_URL}/stats`, { tags: { name: 'preflight' } });
    if (stats.status !== 200) throw new Error(`RECEIVER_URL ${RECEIVER_URL}/stats answered ${stats.status}`);
  }
}

/** submit → held for review → approve → released (→ called back) */
export function jobFlow() {
  const i = exec.scenario.iterationInTest;
  const body = { input: { text: clinicalNote(i) }, idempotencyKey: `k6-${RUN}-${i}` };
  if (CALLBACK_URL) body.callbackUrl = CALLBACK_URL;
  const submittedAt = Date.now();
  const submit = http.post(
    `${BASE_URL}/v1/models/${MODEL}/jobs`,
    JSON.stringify(body),
    params(CLIENT_KEY, { name: 'submit', model: MODEL }),
  );
  const accepted = check(submit, {
    'submit: 202 + Location': (r) => r.status === 202 && String(r.headers.Location || '').indexOf('/v1/jobs/') === 0,
  });
  if (!accepted) {
    jobCompleted.add(false);
    return;
  }
  const id = submit.json('id');
  const deadline = submittedAt + JOB_TIMEOUT_MS;

  const held = waitForJob(id, ['awaiting_review'], deadline, POLL_MS);
  if (!check(held, { 'job: held for review': (j) => j !== null && j.state === 'awaiting_review' })) {
    jobCompleted.add(false);
    return;
  }
  timeToReview.add(Date.now() - submittedAt);

  const decision = http.post(
    `${BASE_URL}/v1/reviews/${id}/decision`,
    JSON.stringify({ decision: 'approve', reason: 'k6 load test: automatic approval' }),
    params(REVIEWER_KEY, { name: 'decision', model: MODEL }),
  );
  check(decision, { 'decision: 200': (r) => r.status === 200 });

  const released = waitForJob(id, ['released'], deadline, POLL_MS);
  const ok = check(released, {
    'job: released with its result': (j) => j !== null && j.state === 'released' && j.result !== undefined,
  });
  jobCompleted.add(ok);
  if (!ok) return;
  timeToRelease.add(Date.now() - submittedAt);

  if (CALLBACK_URL && RECEIVER_URL) {
    for (;;) {
      const event = http.get(`${RECEIVER_URL}/events/${id}`, {
        tags: { name: 'receiver' },
        responseCallback: expecting(200, 404),
      });
      if (event.status === 200 && event.json('verified') === true) {
        timeToCallback.add(Date.now() - submittedAt);
        callbackDelivered.add(true);
        return;
      }
      if (Date.now() + POLL_MS > deadline) {
        callbackDelivered.add(false);
        return;
      }
      sleep(POLL_MS / 1000);
    }
  }
}
