// Shared by the k6 scripts: configuration from the environment, request helpers, and inputs for the bundled models.
// k6 runs these files (not Node): no Node APIs here, and only syntax k6 0.46 parses, i.e. ES2017 at most: no optional
// chaining (?.), no ?? and no object spread ({...x}), which k6 accepts only from 0.53 (test/k6-scripts.test.ts checks).
import { check, fail, sleep } from 'k6';
import http from 'k6/http';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const CLIENT_KEY = __ENV.CLIENT_KEY || '';
export const REVIEWER_KEY = __ENV.REVIEWER_KEY || '';

/** A positive number from the environment, or the fallback. */
export function envNumber(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!(n > 0)) throw new Error(`${name} must be a positive number, got "${raw}"`);
  return n;
}

/** A k6 duration (30s, 2m, 1h30m) from the environment, or the fallback. */
export function envDuration(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^(\d+(ms|s|m|h))+$/.test(raw)) throw new Error(`${name} must be a duration like 30s or 2m, got "${raw}"`);
  return raw;
}

/** A k6 duration in seconds (to place one scenario after another: startTime is a duration too). */
export function seconds(duration) {
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600 };
  let total = 0;
  const re = /(\d+)(ms|s|m|h)/g;
  let m = re.exec(duration);
  while (m !== null) {
    total += Number(m[1]) * unit[m[2]];
    m = re.exec(duration);
  }
  return total;
}

/** The end-of-test summary's trend columns: p99 too (k6 shows up to p(95) by default), as the thresholds use it. */
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'];

/** Request parameters: the API key, JSON, and tags (endpoint `name` keeps URLs with ids out of the metrics' tags). */
export function params(key, tags, extra) {
  const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
  const p = { headers: headers, tags: tags || {} };
  if (extra) Object.assign(p, extra);
  return p;
}

/** Responses that are part of the protocol, not failures (e.g. 404 while polling for something not there yet). */
export function expecting(...statuses) {
  return http.expectedStatuses(...statuses);
}

/**
 * Before any load: the gateway is ready and the keys work. A misconfigured run fails here, loudly, instead of
 * producing a wall of failed thresholds.
 */
export function preflight(options) {
  const needReviewer = options !== undefined && options.reviewer === true;
  if (!CLIENT_KEY) fail('CLIENT_KEY is not set: a client API key (see load-tests/k6/README.md)');
  if (needReviewer && !REVIEWER_KEY) fail('REVIEWER_KEY is not set: a reviewer API key');
  const ready = http.get(`${BASE_URL}/readyz`, { tags: { name: 'preflight' } });
  if (ready.status !== 200) fail(`${BASE_URL}/readyz answered ${ready.status}: is the gateway up and ready?`);
  const models = http.get(`${BASE_URL}/v1/models`, params(CLIENT_KEY, { name: 'preflight' }));
  if (models.status !== 200) fail(`GET /v1/models with CLIENT_KEY answered ${models.status}: wrong key?`);
  if (needReviewer) {
    const reviews = http.get(`${BASE_URL}/v1/reviews?limit=1`, params(REVIEWER_KEY, { name: 'preflight' }));
    if (reviews.status !== 200) fail(`GET /v1/reviews with REVIEWER_KEY answered ${reviews.status}: wrong key?`);
  }
}

// ---- inputs: varied within physiological ranges, deterministic per iteration --------------------------------------

function pick(list, i) {
  return list[i % list.length];
}

export function news2Instance(i) {
  return {
    respirationRate: pick([12, 16, 20, 22, 25, 9], i),
    spo2: pick([98, 96, 94, 92, 90], i),
    onOxygen: i % 4 === 0,
    systolicBP: pick([125, 108, 100, 95, 222], i),
    pulse: pick([72, 95, 104, 115, 135], i),
    consciousness: pick(['alert', 'alert', 'alert', 'confusion'], i),
    temperature: pick([36.8, 37.5, 38.3, 39.2, 35.4], i),
  };
}

export function deteriorationInstance(i) {
  return {
    age: pick([45, 58, 71, 83, 90], i),
    respirationRate: pick([14, 18, 22, 26], i),
    spo2: pick([98, 95, 93, 90], i),
    systolicBP: pick([130, 115, 100, 92], i),
    pulse: pick([70, 88, 104, 122], i),
    temperature: pick([36.9, 37.8, 38.4, 39.0], i),
    onOxygen: i % 3 === 0,
  };
}

export function clinicalNote(i) {
  return pick(
    [
      'Crushing central chest pain radiating to the left arm since this morning; troponin raised. ECG pending.',
      'Routine review: blood pressure stable on current medication. Repeat renal function in three months.',
      'Wound healing well, no signs of infection. Sutures removed. No further follow-up needed.',
      'New confusion overnight, temperature 38.9, lactate 4.1. Sepsis screen positive. Blood cultures taken.',
      'Medication change: switch from ramipril to losartan because of cough. Review in four weeks.',
    ],
    i,
  );
}

// ---- sync scoring ----------------------------------------------------------------------------------------------------

/** One sync prediction; tagged with the model, so thresholds can be per model. */
export function predict(model, instance) {
  const res = http.post(
    `${BASE_URL}/v1/models/${model}/predict`,
    JSON.stringify({ instances: [instance] }),
    params(CLIENT_KEY, { name: 'predict', model: model }),
  );
  check(
    res,
    {
      'predict: 200': (r) => r.status === 200,
      'predict: one prediction, the model named': (r) =>
        r.status === 200 && r.json('model') === model && r.json('predictions.#') === 1,
    },
    { model: model },
  );
  return res;
}

// ---- async jobs ------------------------------------------------------------------------------------------------------

const TERMINAL = ['released', 'rejected', 'failed', 'cancelled'];

/** Polls GET /v1/jobs/:id until its state is one of `states` (or terminal); null if the deadline passes first. */
export function waitForJob(id, states, deadlineMs, pollMs) {
  for (;;) {
    const res = http.get(`${BASE_URL}/v1/jobs/${id}`, params(CLIENT_KEY, { name: 'GET /v1/jobs/:id' }));
    if (res.status === 200) {
      const state = res.json('state');
      if (states.indexOf(state) !== -1 || TERMINAL.indexOf(state) !== -1) return res.json();
    }
    if (Date.now() + pollMs > deadlineMs) return null;
    sleep(pollMs / 1000);
  }
}
