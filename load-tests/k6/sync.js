// Sync tier SLO: bedside scoring (news2, deterioration) at a constant arrival rate, below capacity.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e CLIENT_KEY=… load-tests/k6/sync.js
// env: SYNC_RATE (requests/s per model, default 50), DURATION (default 2m).
// Thresholds are the SLOs (load-tests/k6/README.md): per model p95 < 25 ms, p99 < 50 ms (the models' latency budget),
// under 0.1 % errors (any non-2xx: a 503 shed or a 504 deadline is a failure here, where load is below capacity).

import exec from 'k6/execution';
import {
  deteriorationInstance,
  envDuration,
  envNumber,
  news2Instance,
  predict,
  preflight,
  SUMMARY_TREND_STATS,
} from './lib.js';

const RATE = envNumber('SYNC_RATE', 50);
const DURATION = envDuration('DURATION', '2m');

function bedside(model, exec_) {
  return {
    executor: 'constant-arrival-rate',
    exec: exec_,
    rate: RATE,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: Math.max(10, Math.ceil(RATE / 10)),
    maxVUs: Math.max(50, RATE * 2),
    tags: { model: model },
  };
}

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    news2: bedside('news2', 'news2'),
    deterioration: bedside('deterioration', 'deterioration'),
  },
  thresholds: {
    'http_req_duration{name:predict,model:news2}': ['p(95)<25', 'p(99)<50'],
    'http_req_duration{name:predict,model:deterioration}': ['p(95)<25', 'p(99)<50'],
    'http_req_failed{name:predict,model:news2}': ['rate<0.001'],
    'http_req_failed{name:predict,model:deterioration}': ['rate<0.001'],
    'checks{model:news2}': ['rate>0.999'],
    'checks{model:deterioration}': ['rate>0.999'],
    // the load generator kept the rate (else the latencies above were measured at a lower load than intended)
    dropped_iterations: ['count<10'],
  },
};

export function setup() {
  preflight();
}

export function news2() {
  predict('news2', news2Instance(exec.scenario.iterationInTest));
}

export function deterioration() {
  predict('deterioration', deteriorationInstance(exec.scenario.iterationInTest));
}
