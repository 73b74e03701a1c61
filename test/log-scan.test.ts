/**
 * Issue 10, item 5: patient identifiers stay out of the logs. Every endpoint is called with seeded identifiers (a
 * name, an MRN, an SSN, a phone number, an email address, a subject key) in its path, query, headers and body; the
 * workers score, hold and fail what was accepted; then every log line, at debug level, and the /metrics text are
 * scanned for them. Also: idempotency keys reach Redis key names only hashed, and a failed batch run is logged by run
 * id, not input path.
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { outcomeCode } from '../src/fhir/operation-outcome.ts';
import { captureLogs, REDIS_URL, waitFor } from './support/index.ts';
import { ENDPOINTS, NEWS2, startTour, type Tour } from './tour-support.ts';

const digits = (n: number) => Array.from(randomBytes(n), (b) => String(b % 10)).join('');
const tag = randomBytes(3).toString('hex');
const ID = {
  name: `Quackenbush${tag}`,
  mrn: `MRN-${digits(8)}`,
  ssn: `9${digits(2)}-${digits(2)}-${digits(4)}`,
  phone: `+44-7700-9${digits(5)}`,
  email: `bq.${tag}@example.org`,
  subject: `subject-${tag}-${digits(6)}`,
};
const ALL = Object.values(ID).join(' ');
const PATH_ID = encodeURIComponent(`${ID.mrn}`);
const UNSAFE_PATH = `inputs/ward-7/${ID.name}-${ID.mrn}.ndjson`;

const logs = captureLogs('debug');
let tour: Tour;
before(async () => {
  tour = await startTour('log-scan', logs.logger);
});
after(() => tour?.close());

/** What each endpoint is sent: a body carrying the identifiers in the fields it reads. */
function bodyFor(path: string): unknown {
  if (path.endsWith('/$predict'))
    return {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        { resource: { resourceType: 'Patient', id: 'p1', name: [{ text: ID.name }], identifier: [{ value: ID.mrn }] } },
      ],
    };
  if (path.startsWith('/cds-services'))
    return {
      hook: 'patient-view',
      hookInstance: ID.mrn,
      context: { patientId: 'p1' },
      prefetch: { patient: { resourceType: 'Patient', id: 'p1', name: [{ text: ID.name }] } },
    };
  if (path.endsWith('/predict')) return { instances: [{ ...NEWS2, name: ID.name, mrn: ID.mrn }] };
  if (path.endsWith('/jobs'))
    return {
      input: { text: `Patient ${ALL}: crushing chest pain, troponin raised.` },
      idempotencyKey: ID.mrn,
      callbackUrl: `http://127.0.0.1:9/hook?patient=${ID.mrn}&email=${ID.email}`,
    };
  if (path.endsWith('/decision')) return { decision: 'amend', reason: `seen ${ALL}`, output: { category: ID.name } };
  if (path.endsWith('/infer'))
    return { id: ID.mrn, inputs: [{ name: ID.name, shape: [1], datatype: 'BYTES', data: [ID.ssn] }] };
  if (path.endsWith('/batches')) return { input: { path: UNSAFE_PATH, format: 'ndjson' }, asOf: ID.ssn };
  if (path === '/v1/outcomes') return { requestId: ID.mrn, outcome: ID.name, observedAt: ID.ssn };
  if (path.endsWith('/threshold-changes'))
    return { threshold: 4, reason: `seen ${ALL}`, evidence: { ppv: ID.ssn, reviewedBy: ID.email } };
  if (path.startsWith('/v1/schedules'))
    return { model: 'news2', cron: ID.phone, input: { path: UNSAFE_PATH, format: 'ndjson' }, readers: [ID.email] };
  return { version: ID.mrn, weight: 0.5, reason: `after ${ALL}`, versions: [ID.ssn], sampleRate: 1 };
}

describe('seeded identifiers never reach the log', () => {
  test('every endpoint, identifiers in path, query, headers and body', async () => {
    const headers = {
      'x-request-id': ID.mrn,
      'x-subject-key': ID.subject,
      'idempotency-key': ID.mrn,
    };
    const key = { client: tour.keys.client, reviewer: tour.keys.reviewer, admin: tour.keys.admin, none: undefined };
    for (const e of ENDPOINTS) {
      for (const id of ['seeded', 'hostile'] as const) {
        const url = e.path.replace(/:(\w+)/g, (_, n: string) =>
          id === 'hostile'
            ? PATH_ID
            : n === 'job'
              ? tour.seeded.job
              : n === 'run'
                ? tour.seeded.run
                : n === 'model'
                  ? 'note-triage'
                  : PATH_ID,
        );
        const query = `?model=${encodeURIComponent(ID.name)}&after=${encodeURIComponent(ID.ssn)}`;
        const res = await tour.call(e.method, url + query, key[e.role], e.body ? bodyFor(e.path) : undefined, headers);
        assert.ok(res.status < 500, `${e.method} ${url}: ${res.status} ${res.text.slice(0, 200)}`);
      }
      // and once with an identifier where the key should be
      await tour.call(e.method, e.path, undefined, undefined, {
        'x-api-key': ID.ssn,
        authorization: `Bearer ${ID.mrn}`,
      });
    }
    // what the API accepted is worked on: the job with the identifiers scored and held
    const jobs = await tour.call('POST', '/v1/models/note-triage/jobs', tour.keys.client, bodyFor('/jobs'));
    assert.equal(jobs.status, 202, jobs.text);
    await waitFor(
      async () =>
        (await tour.call('GET', `/v1/jobs/${jobs.body.id}`, tour.keys.client)).body?.state === 'awaiting_review',
      'the job to be held',
    );
    // a sticky canary by subject key, and a prediction under it
    const canary = await tour.call('PUT', '/v1/models/news2/routing/canary', tour.keys.admin, {
      version: '1',
      weight: 0,
      reason: ALL,
    });
    assert.ok(canary.status < 500, canary.text);
    const predicted = await tour.call(
      'POST',
      '/v1/models/news2/predict',
      tour.keys.client,
      { instances: [NEWS2] },
      headers,
    );
    assert.equal(predicted.status, 200, predicted.text);
    // the same observations over Open Inference Protocol v2, the request id an MRN
    const tensors = Object.entries(NEWS2).map(([name, v]) => ({
      name,
      shape: [1],
      datatype: typeof v === 'boolean' ? 'BOOL' : typeof v === 'string' ? 'BYTES' : 'FP32',
      data: [v],
    }));
    const inferred = await tour.call(
      'POST',
      '/v2/models/news2/infer',
      tour.keys.client,
      { id: ID.mrn, inputs: tensors },
      headers,
    );
    assert.equal(inferred.status, 200, inferred.text);
    assert.notEqual(predicted.headers.get('x-request-id'), ID.mrn, 'a free-form request id is replaced');
  });

  test('a batch run that fails on its input is logged by run id, not input path', async () => {
    const id = tour.gateway.services.runs.newId('news2');
    await tour.gateway.services.runs.create({
      id,
      model: 'news2',
      version: '1',
      requestedBy: 'api:client',
      input: { path: `clients/client/${UNSAFE_PATH}`, format: 'ndjson' },
      asOf: Date.now(),
      state: 'queued',
      createdAt: Date.now(),
    });
    await tour.gateway.services.queues.batch.for('news2').add('run', { runId: id }, { jobId: `run-${id}` });
    await waitFor(async () => (await tour.gateway.services.runs.get(id))?.state === 'failed', 'the run to fail');
    const failed = logs.lines.filter((l) => l.includes(id));
    assert.ok(failed.length > 0, 'the failure is logged, by run id');
    const status = await tour.call('GET', `/v1/batches/${id}`, tour.keys.client);
    assert.equal(outcomeCode(status.body), 'run_failed');
    const detail = String(status.body.issue?.[0]?.diagnostics);
    assert.ok(!detail.includes(ID.mrn), `the run's error names no path: ${detail}`);
  });

  test('the scan: none of the identifiers, in any log line', () => {
    assert.ok(logs.lines.length > 100, `the access log was on (${logs.lines.length} lines)`);
    const text = logs.lines.join('');
    for (const [what, value] of Object.entries(ID)) {
      assert.ok(!text.includes(value), `the ${what} reached the log`);
      assert.ok(!text.includes(encodeURIComponent(value)), `the ${what} reached the log, URL-encoded`);
    }
    assert.ok(!text.includes(ID.mrn.slice(4)), 'the MRN digits reached the log');
  });

  test('nor in a metric label', async () => {
    // the same requests were counted: route patterns, model names and versions label them, never a path or a header
    const metrics = await tour.call('GET', '/metrics', undefined);
    assert.equal(metrics.status, 200);
    assert.match(metrics.text, /triage_http_request_duration_seconds_count\{/, 'the requests were counted');
    for (const [what, value] of Object.entries(ID)) {
      assert.ok(!metrics.text.includes(value), `the ${what} reached /metrics`);
      assert.ok(!metrics.text.includes(encodeURIComponent(value)), `the ${what} reached /metrics, URL-encoded`);
    }
  });

  test('idempotency keys are hashed before they become Redis key names', async () => {
    const redis = new Redis(REDIS_URL);
    try {
      const names: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await redis.scan(cursor, 'MATCH', `${tour.prefix.slice(0, -1)}*idem*`, 'COUNT', 1000);
        cursor = next;
        names.push(...batch);
      } while (cursor !== '0');
      const ours = names.filter((n) => n.includes(':idem:client:'));
      assert.ok(ours.length > 0, 'the submissions made idempotency records');
      for (const n of names) assert.ok(!n.includes(ID.mrn), `a Redis key name carries the idempotency key: ${n}`);
    } finally {
      redis.disconnect();
    }
  });
});
