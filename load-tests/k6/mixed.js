// Mixed SLO: bedside sync traffic (news2, deterioration) while async notes flow through review and batch runs score a
// file, one after another for the whole sync window. The sync thresholds are the same as sync.js: they must still hold
// with the other tiers busy.
//   k6 run -e BASE_URL=… -e CLIENT_KEY=… -e REVIEWER_KEY=… load-tests/k6/mixed.js
// env: MIXED_SYNC_RATE (requests/s per sync model, default 30), ASYNC_RATE (jobs/s, default 2), DURATION (default 3m),
//      BATCH_MODEL (default readmission), BATCH_INPUT (a path in the gateway's data directory, default
//      inputs/sample-discharges.ndjson: copy models/readmission/sample-discharges.ndjson there first, see README),
//      BATCH_FORMAT (default ndjson), BATCH_TIMEOUT_S (default 600), BATCH_START (when the first run starts, a k6
//      duration, default 10s: once the sync traffic is steady), BATCH_POLL_MS (default 500), and async.js's POLL_MS,
//      CALLBACK_URL, RECEIVER_URL.
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import http from 'k6/http';
import { Rate, Trend } from 'k6/metrics';
import { jobFlow } from './async.js';
import {
  BASE_URL,
  CLIENT_KEY,
  deteriorationInstance,
  envDuration,
  envNumber,
  news2Instance,
  params,
  predict,
  preflight,
  SUMMARY_TREND_STATS,
  seconds,
} from './lib.js';

const SYNC_RATE = envNumber('MIXED_SYNC_RATE', 30);
const ASYNC_RATE = envNumber('ASYNC_RATE', 2);
const DURATION = envDuration('DURATION', '3m');
const BATCH_MODEL = __ENV.BATCH_MODEL || 'readmission';
const BATCH_INPUT = __ENV.BATCH_INPUT || 'inputs/sample-discharges.ndjson';
const BATCH_FORMAT = __ENV.BATCH_FORMAT || 'ndjson';
const BATCH_TIMEOUT_MS = envNumber('BATCH_TIMEOUT_S', 600) * 1000;
const BATCH_START = envDuration('BATCH_START', '10s');
const BATCH_POLL_MS = envNumber('BATCH_POLL_MS', 500);
if (seconds(BATCH_START) >= seconds(DURATION)) throw new Error(`BATCH_START (${BATCH_START}) must be before DURATION`);

const batchRunDuration = new Trend('batch_run_duration', true);
const batchRunCompleted = new Rate('batch_run_completed');

function bedside(model, fn) {
  return {
    executor: 'constant-arrival-rate',
    exec: fn,
    rate: SYNC_RATE,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: Math.max(10, Math.ceil(SYNC_RATE / 10)),
    maxVUs: Math.max(50, SYNC_RATE * 2),
    tags: { model: model },
  };
}

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    news2: bedside('news2', 'news2'),
    deterioration: bedside('deterioration', 'deterioration'),
    notes: {
      executor: 'constant-arrival-rate',
      exec: 'notes',
      rate: ASYNC_RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.max(10, ASYNC_RATE * 5),
      maxVUs: Math.max(50, ASYNC_RATE * 30),
      gracefulStop: '70s',
    },
    // batch runs back to back from BATCH_START to the end of the sync window, so one is scoring whenever the sync
    // thresholds are measured (a single run of the 200-row sample is over in a second or two); the run in progress at
    // the end may finish within gracefulStop
    batch: {
      executor: 'constant-vus',
      exec: 'batchRun',
      vus: 1,
      startTime: BATCH_START,
      duration: `${Math.max(1, Math.floor(seconds(DURATION) - seconds(BATCH_START)))}s`,
      gracefulStop: '30s',
    },
  },
  thresholds: {
    // the sync SLO (as sync.js), with async and batch work running
    'http_req_duration{name:predict,model:news2}': ['p(95)<25', 'p(99)<50'],
    'http_req_duration{name:predict,model:deterioration}': ['p(95)<25', 'p(99)<50'],
    'http_req_failed{name:predict,model:news2}': ['rate<0.001'],
    'http_req_failed{name:predict,model:deterioration}': ['rate<0.001'],
    // the async SLO (as async.js)
    'http_req_duration{name:submit}': ['p(95)<100', 'p(99)<250'],
    job_time_to_release: ['p(95)<3000', 'p(99)<6000'],
    job_completed: ['rate>0.999'],
    // the batch run finished (its duration is reported, not a threshold: it depends on the file)
    batch_run_completed: ['rate>0.99'],
    dropped_iterations: ['count<10'],
  },
};

export function setup() {
  preflight({ reviewer: true });
}

export function news2() {
  predict('news2', news2Instance(exec.scenario.iterationInTest));
}

export function deterioration() {
  predict('deterioration', deteriorationInstance(exec.scenario.iterationInTest));
}

export function notes() {
  jobFlow();
}

/** One on-demand batch run (FHIR Bulk Data pattern): submit, then poll the status URL until the manifest. */
export function batchRun() {
  const started = Date.now();
  const submit = http.post(
    `${BASE_URL}/v1/models/${BATCH_MODEL}/batches`,
    JSON.stringify({ input: { path: BATCH_INPUT, format: BATCH_FORMAT } }),
    params(CLIENT_KEY, { name: 'batch submit', model: BATCH_MODEL }),
  );
  const accepted = check(submit, {
    'batch: 202 (is BATCH_INPUT in the data directory?)': (r) => r.status === 202,
  });
  if (!accepted) {
    batchRunCompleted.add(false);
    // runs are back to back: without a pause a missing input would be resubmitted as fast as the gateway refuses it
    sleep(1);
    return;
  }
  const statusUrl = `${BASE_URL}/v1/batches/${submit.json('id')}`;
  for (;;) {
    const res = http.get(statusUrl, params(CLIENT_KEY, { name: 'GET /v1/batches/:id', model: BATCH_MODEL }));
    if (res.status !== 202) {
      const done = check(res, {
        'batch: completed with a manifest': (r) => r.status === 200 && Array.isArray(r.json('output')),
      });
      batchRunCompleted.add(done);
      if (done) batchRunDuration.add(Date.now() - started);
      return;
    }
    if (Date.now() - started > BATCH_TIMEOUT_MS) {
      batchRunCompleted.add(false);
      return;
    }
    sleep(BATCH_POLL_MS / 1000);
  }
}
