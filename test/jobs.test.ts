/**
 * The async tier end to end, through the real composition root: real Redis, real BullMQ workers, real onnxruntime,
 * and a real HTTP receiver verifying the signed callbacks. Submission → hold → review → decision → callback, the
 * FHIR and Prefer: respond-async entries, idempotency, ownership, cancel, bad input and what /metrics and the logs
 * (must not) show.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { SECURE_HEADERS } from '../src/platform/secure-headers.ts';
import {
  ASYNC_WORKERS,
  allAudit,
  buildGateway,
  captureLogs,
  deletePrefix,
  makeKeys,
  makePrefix,
  metricValue,
  NEWS2_INSTANCE,
  NOTES,
  queueIdle,
  Receiver,
  type TestGateway,
  waitFor,
  waitForState,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('jobs');
const logs = captureLogs('debug');
/** every note text this file submits: none may appear in logs or metrics */
const submitted: string[] = [];
let gw: TestGateway;
let receiver: Receiver;

before(async () => {
  receiver = await Receiver.start(keys.secrets.client);
  gw = await buildGateway({ workers: ASYNC_WORKERS, prefix, keys, logger: logs.logger });
});
after(async () => {
  await gw?.close();
  await receiver?.close();
  await deletePrefix(prefix);
});

function note(text: string): { text: string } {
  submitted.push(text);
  return { text };
}

const submit = (body: unknown, key = keys.client, headers: Record<string, string> = {}, model = 'note-triage') =>
  gw.call('POST', `/v1/models/${model}/jobs`, key, body, headers);

async function heldJob(text: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await submit({ input: note(text), ...extra });
  assert.equal(res.status, 202, res.text);
  await waitForState(gw, keys.client, res.body.id, 'awaiting_review');
  return res.body.id;
}

const decide = (id: string, body: unknown, key = keys.reviewer) =>
  gw.call('POST', `/v1/reviews/${id}/decision`, key, body);

async function metrics(): Promise<string> {
  const res = await gw.call('GET', '/metrics', undefined);
  assert.equal(res.status, 200);
  return res.text;
}

describe('whole path', () => {
  test('submit → 202 → held (nothing shown) → reviewed → approved → signed CloudEvent → released', async () => {
    const res = await submit({ input: note(NOTES.urgent), callbackUrl: receiver.url('/a'), idempotencyKey: 'path-1' });
    assert.equal(res.status, 202, res.text);
    const id = res.body.id as string;
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(res.headers.get('location'), `/v1/jobs/${id}`);
    assert.equal(res.headers.get('retry-after'), '1');
    // the 202 is built on the fast path (routes/jobs.ts): it carries the headers the middleware would have added
    for (const [name, value] of Object.entries(SECURE_HEADERS)) assert.equal(res.headers.get(name), value, name);
    assert.match(res.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.equal(res.body.created, true);
    assert.equal(res.body.model, 'note-triage');
    assert.ok(['queued', 'running', 'awaiting_review'].includes(res.body.state), res.body.state);
    assert.equal(res.body.result, undefined);

    const held = await waitForState(gw, keys.client, id, 'awaiting_review');
    for (const hidden of ['result', 'output', 'holdReason', 'input', 'amendedOutput', 'decision']) {
      assert.equal(held[hidden], undefined, `a held job must not show ${hidden}`);
    }
    assert.doesNotMatch(JSON.stringify(held), /predictions|probabilities|urgent-follow-up/);
    assert.equal(receiver.deliveriesFor(id).length, 0, 'no callback before approval');

    const list = await gw.call('GET', '/v1/reviews?model=note-triage', keys.reviewer);
    assert.equal(list.status, 200, list.text);
    const item = list.body.items.find((i: { id: string }) => i.id === id);
    assert.ok(item, 'the held job is in the review queue');
    assert.equal(item.state, 'awaiting_review');
    assert.equal(item.holdReason, 'policy: always reviewed');
    assert.equal(item.links.decision, `/v1/reviews/${id}/decision`);

    const detail = await gw.call('GET', `/v1/reviews/${id}`, keys.reviewer);
    assert.equal(detail.status, 200, detail.text);
    assert.deepEqual(detail.body.input, { text: NOTES.urgent });
    const prediction = detail.body.output.predictions[0];
    assert.equal(prediction.category, 'urgent-follow-up');
    assert.ok(prediction.confidence >= 0.6, `confidence ${prediction.confidence}`);

    const decided = await decide(id, { decision: 'approve', reason: 'agree: urgent cardiology review' });
    assert.equal(decided.status, 200, decided.text);
    assert.equal(decided.body.state, 'released');
    assert.equal(decided.body.decision.outcome, 'approve');
    assert.equal(decided.body.decision.by, 'reviewer');
    assert.equal(decided.body.decision.reason, 'agree: urgent cardiology review');

    const eventId = `evt-${id}-released`;
    await waitFor(() => receiver.events.has(eventId), 'the released callback');
    const event = receiver.events.get(eventId)!;
    const delivery = receiver.deliveriesFor(id).find((d) => d.verified)!;
    assert.equal(delivery.path, '/a');
    assert.equal(delivery.headers['webhook-id'], eventId);
    assert.match(delivery.headers['content-type'] ?? '', /^application\/cloudevents\+json/);
    assert.equal(event.specversion, '1.0');
    assert.equal(event.id, eventId);
    assert.ok(event.source.length > 0, 'source is set');
    assert.equal(event.type, 'org.triage.job.released');
    assert.equal(event.subject, `/v1/jobs/${id}`);
    assert.ok(!Number.isNaN(Date.parse(event.time)), `time ${event.time}`);
    assert.equal(event.data.jobId, id);
    assert.equal(event.data.state, 'released');

    const released = await gw.call('GET', `/v1/jobs/${id}`, keys.client);
    assert.equal(released.body.state, 'released');
    assert.deepEqual(released.body.result, { output: detail.body.output, amended: false, reviewed: true });
    assert.deepEqual(event.data.result, released.body.result);

    const audit = (await allAudit(gw, keys.admin)).filter((e) => e.target === id);
    assert.deepEqual(
      audit.map((e) => [e.action, e.actor]),
      [
        ['job.hold', 'system'],
        ['review.approve', 'reviewer'],
      ],
    );
    assert.equal(audit[1]?.reason, 'agree: urgent cardiology review');
  });

  test('reject: callback of type rejected, no result in the status or the callback', async () => {
    const id = await heldJob(NOTES.routine, { callbackUrl: receiver.url('/r') });
    const res = await decide(id, { decision: 'reject', reason: 'model misread the note' });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.state, 'rejected');
    await waitFor(() => receiver.events.has(`evt-${id}-rejected`), 'the rejected callback');
    const event = receiver.events.get(`evt-${id}-rejected`)!;
    assert.equal(event.type, 'org.triage.job.rejected');
    assert.equal(event.data.state, 'rejected');
    assert.equal(event.data.result, undefined);
    assert.doesNotMatch(JSON.stringify(event), /predictions|probabilities/);
    const job = await gw.call('GET', `/v1/jobs/${id}`, keys.client);
    assert.equal(job.body.state, 'rejected');
    assert.equal(job.body.result, undefined);
    assert.doesNotMatch(job.text, /predictions|probabilities/);
    assert.equal(receiver.events.has(`evt-${id}-released`), false);
  });

  test('amend: released with the amended output, counted as an override; an invalid amendment is a 400', async () => {
    const before = metricValue(await metrics(), 'triage_review_overrides_total', { model: 'note-triage' }) ?? 0;
    const id = await heldJob(NOTES.urgent, { callbackUrl: receiver.url('/m') });

    for (const output of [
      { category: 'very-urgent' },
      {},
      'routine-follow-up',
      null,
      [{ category: 'no-action' }],
      { category: 'no-action', probabilities: { 'no-action': 0.2, 'urgent-follow-up': 0.8, 'routine-follow-up': 0 } },
      { category: 'no-action', confidence: 0.3 },
    ]) {
      const bad = await decide(id, { decision: 'amend', reason: 'reclassify', output });
      assert.equal(bad.status, 400, `${JSON.stringify(output)}: ${bad.text}`);
      assert.equal(bad.body.code, 'invalid_request');
    }
    // a field the model does not produce is refused by name, not silently dropped
    const unknown = await decide(id, {
      decision: 'amend',
      reason: 'reclassify',
      output: { category: 'routine-follow-up', comment: 'see GP' },
    });
    assert.equal(unknown.status, 400, unknown.text);
    assert.match(unknown.body.detail, /"comment" not in this model's output \(fields: category, confidence/);
    const missing = await decide(id, { decision: 'amend', reason: 'reclassify' });
    assert.equal(missing.status, 400);
    assert.equal((await gw.call('GET', `/v1/jobs/${id}`, keys.client)).body.state, 'awaiting_review');

    const res = await decide(id, {
      decision: 'amend',
      reason: 'not urgent on reading the full note',
      output: { category: 'routine-follow-up' },
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.state, 'released');
    const job = await gw.call('GET', `/v1/jobs/${id}`, keys.client);
    // the amended result has exactly the model's output shape: a clinician's label is certain (one-hot)
    const amended = {
      predictions: [
        {
          category: 'routine-follow-up',
          confidence: 1,
          confident: true,
          probabilities: { 'urgent-follow-up': 0, 'routine-follow-up': 1, 'no-action': 0 },
        },
      ],
    };
    assert.deepEqual(job.body.result, { output: amended, amended: true, reviewed: true });
    await waitFor(() => receiver.events.has(`evt-${id}-released`), 'the amended release callback');
    assert.deepEqual(receiver.events.get(`evt-${id}-released`)?.data.result, job.body.result);
    const review = await gw.call('GET', `/v1/reviews/${id}`, keys.reviewer);
    assert.deepEqual(review.body.amendedOutput, amended);
    assert.deepEqual(
      Object.keys(amended.predictions[0] ?? {}).sort(),
      Object.keys(review.body.output.predictions[0]).sort(),
    );
    assert.equal(review.body.output.predictions[0].category, 'urgent-follow-up', 'the model output is kept');
    const afterCount = metricValue(await metrics(), 'triage_review_overrides_total', { model: 'note-triage' });
    assert.equal(afterCount, before + 1);
  });

  test('a FHIR DocumentReference (base64 text/plain attachment) is scored like the same text', async () => {
    submitted.push(Buffer.from(NOTES.none).toString('base64'));
    const document = {
      resourceType: 'DocumentReference',
      status: 'current',
      content: [
        { attachment: { contentType: 'text/plain; charset=utf-8', data: Buffer.from(NOTES.none).toString('base64') } },
      ],
    };
    const res = await submit({ input: { document } });
    assert.equal(res.status, 202, res.text);
    await waitForState(gw, keys.client, res.body.id, 'awaiting_review');
    const plain = await heldJob(NOTES.none);
    const [fromDoc, fromText] = await Promise.all(
      [res.body.id, plain].map((id) => gw.call('GET', `/v1/reviews/${id}`, keys.reviewer)),
    );
    assert.deepEqual(fromDoc?.body.input, { document });
    assert.equal(fromDoc?.body.output.predictions[0].category, 'no-action');
    assert.deepEqual(fromDoc?.body.output, fromText?.body.output);
  });

  test('POST …/predict with Prefer: respond-async on news2 → 202 job, released (no review) with predictions', async () => {
    const sync = await gw.call('POST', '/v1/models/news2/predict', keys.client, {
      instances: [{ ...NEWS2_INSTANCE, pulse: 135, respirationRate: 26 }],
    });
    assert.equal(sync.status, 200, sync.text);
    const res = await gw.call(
      'POST',
      '/v1/models/news2/predict',
      keys.client,
      { instances: [{ ...NEWS2_INSTANCE, pulse: 135, respirationRate: 26 }], callbackUrl: receiver.url('/n') },
      { prefer: 'respond-async' },
    );
    assert.equal(res.status, 202, res.text);
    const id = res.body.id;
    assert.equal(res.headers.get('location'), `/v1/jobs/${id}`);
    const job = await waitForState(gw, keys.client, id, 'released');
    assert.equal(job.result.reviewed, false);
    assert.equal(job.result.amended, false);
    assert.deepEqual(job.result.output.predictions, sync.body.predictions);
    assert.ok(job.result.output.predictions[0].news2Total >= 5, 'a high NEWS2 score');
    await waitFor(() => receiver.events.has(`evt-${id}-released`), 'the news2 callback');
    assert.deepEqual(receiver.events.get(`evt-${id}-released`)?.data.result, job.result);
    const review = await gw.call('GET', `/v1/reviews/${id}`, keys.reviewer);
    assert.equal(review.status, 404, 'never held, so never a review item');
  });
});

describe('idempotent submission', () => {
  test('same key + same body → same job (created: false), one BullMQ job; different body → 409', async () => {
    const body = { input: note(NOTES.routine), idempotencyKey: `idem-${randomUUID()}` };
    const first = await submit(body);
    assert.equal(first.status, 202, first.text);
    assert.equal(first.body.created, true);
    await waitForState(gw, keys.client, first.body.id, 'awaiting_review');
    const again = await submit(body);
    assert.equal(again.status, 202, again.text);
    assert.equal(again.body.id, first.body.id);
    assert.equal(again.body.created, false);
    assert.equal(again.body.state, 'awaiting_review', 'the existing job, not a new run');

    const jobs = await gw.gateway.services.queues.inference.getJobs([
      'completed',
      'waiting',
      'active',
      'delayed',
      'failed',
    ]);
    assert.equal(jobs.filter((j) => j.data.jobId === first.body.id).length, 1);
    await waitFor(() => queueIdle(gw.gateway.services.queues.inference), 'the inference queue to drain');
    const holds = (await allAudit(gw, keys.admin)).filter((e) => e.target === first.body.id && e.action === 'job.hold');
    assert.equal(holds.length, 1, 'ran once');

    const conflict = await submit({ ...body, input: note(NOTES.urgent) });
    assert.equal(conflict.status, 409, conflict.text);
    assert.equal(conflict.body.code, 'idempotency_conflict');
    assert.equal(conflict.body.jobId, first.body.id);
    const otherCallback = await submit({ ...body, callbackUrl: receiver.url('/x') });
    assert.equal(otherCallback.status, 409);
    // keys are per model (each model's jobs live in its own shard; the key names a submission to one URL, as the
    // IETF Idempotency-Key draft scopes it): the same key on another model is that model's own job
    const otherModel = await submit(body, keys.client, {}, 'similar-cases');
    assert.equal(otherModel.status, 202, otherModel.text);
    assert.notEqual(otherModel.body.id, first.body.id);
    // keys are per client: client B may use the same key for its own job
    const otherClient = await submit(body, keys.other);
    assert.equal(otherClient.status, 202);
    assert.notEqual(otherClient.body.id, first.body.id);
  });

  test('10 concurrent identical submissions → one job', async () => {
    const before = metricValue(await metrics(), 'triage_jobs_total', { model: 'note-triage', state: 'queued' }) ?? 0;
    const bullJobs = () => gw.gateway.services.queues.inference.getJobCountByTypes('completed', 'wait', 'active');
    await waitFor(() => queueIdle(gw.gateway.services.queues.inference), 'the inference queue to drain');
    const bullBefore = await bullJobs();
    const body = { input: note(NOTES.none), idempotencyKey: `burst-${randomUUID()}` };
    const replies = await Promise.all(Array.from({ length: 10 }, () => submit(body)));
    for (const r of replies) assert.equal(r.status, 202, r.text);
    const ids = new Set(replies.map((r) => r.body.id));
    assert.equal(ids.size, 1);
    assert.equal(replies.filter((r) => r.body.created === true).length, 1);
    const id = [...ids][0] as string;
    await waitForState(gw, keys.client, id, 'awaiting_review');
    await waitFor(() => queueIdle(gw.gateway.services.queues.inference), 'the inference queue to drain');
    const m = await metrics();
    const after = metricValue(m, 'triage_jobs_total', { model: 'note-triage', state: 'queued' });
    assert.equal(after, before + 1);
    // a submission with a key is queued only once its record is known: no job queued for a record never made
    assert.equal(await bullJobs(), bullBefore + 1, 'one BullMQ job for the ten submissions');
    // the async tier is visible: queue wait, job duration by outcome, inference on the async tier
    const labels = { model: 'note-triage', tier: 'async' };
    assert.ok((metricValue(m, 'triage_job_queue_wait_seconds_count', labels) ?? 0) >= 1);
    assert.ok((metricValue(m, 'triage_job_duration_seconds_count', { ...labels, outcome: 'held' }) ?? 0) >= 1);
    assert.ok((metricValue(m, 'triage_inference_duration_seconds_count', labels) ?? 0) >= 1);
    const holds = (await allAudit(gw, keys.admin)).filter((e) => e.target === id && e.action === 'job.hold');
    assert.equal(holds.length, 1);
  });

  test('the Idempotency-Key header works like the body field', async () => {
    const key = `hdr-${randomUUID()}`;
    const input = note(NOTES.routine);
    const a = await submit({ input }, keys.client, { 'idempotency-key': key });
    const b = await submit({ input, idempotencyKey: key });
    const c = await submit({ input, idempotencyKey: key }, keys.client, { 'idempotency-key': key });
    for (const r of [a, b, c]) assert.equal(r.status, 202, r.text);
    assert.equal(a.body.created, true);
    assert.equal(b.body.id, a.body.id);
    assert.equal(c.body.id, a.body.id);
    assert.equal(b.body.created, false);
    const differ = await submit({ input, idempotencyKey: 'other' }, keys.client, { 'idempotency-key': key });
    assert.equal(differ.status, 400);
  });
});

describe('ownership and roles', () => {
  test("client B cannot see or cancel client A's job (404, as if unknown)", async () => {
    const id = await heldJob(NOTES.urgent);
    const get = await gw.call('GET', `/v1/jobs/${id}`, keys.other);
    assert.equal(get.status, 404);
    assert.equal(get.body.code, 'not_found');
    const del = await gw.call('DELETE', `/v1/jobs/${id}`, keys.other);
    assert.equal(del.status, 404);
    const unknown = await gw.call('GET', `/v1/jobs/${randomUUID()}`, keys.other);
    assert.deepEqual(
      { status: unknown.status, code: unknown.body.code, detail: unknown.body.detail },
      { status: get.status, code: get.body.code, detail: get.body.detail },
    );
    const mine = await gw.call('GET', `/v1/jobs/${id}`, keys.client);
    assert.equal(mine.body.state, 'awaiting_review', 'B did not cancel it');
    const asAdmin = await gw.call('GET', `/v1/jobs/${id}`, keys.admin);
    assert.equal(asAdmin.status, 200);
  });

  test('review and admin routes check roles', async () => {
    const id = await heldJob(NOTES.routine);
    const checks: Array<[string, string, string | undefined, unknown, number]> = [
      ['GET', '/v1/reviews', keys.client, undefined, 403],
      ['GET', `/v1/reviews/${id}`, keys.client, undefined, 403],
      ['POST', `/v1/reviews/${id}/decision`, keys.client, { decision: 'approve', reason: 'self-approval' }, 403],
      ['GET', '/v1/reviews', undefined, undefined, 401],
      ['GET', '/v1/reviews', 'not-a-key', undefined, 401],
      ['GET', '/v1/audit', keys.reviewer, undefined, 403],
      ['GET', '/v1/audit', keys.client, undefined, 403],
      ['GET', '/v1/callbacks/dead-letters', keys.reviewer, undefined, 403],
      ['POST', `/v1/callbacks/dead-letters/evt-${id}-released/replay`, keys.client, undefined, 403],
      ['POST', '/v1/models/note-triage/jobs', keys.reviewer, { input: { text: 'x' } }, 403],
      ['GET', '/v1/reviews', keys.reviewer, undefined, 200],
      ['GET', '/v1/reviews', keys.admin, undefined, 200],
      ['GET', '/v1/audit', keys.admin, undefined, 200],
    ];
    for (const [method, url, key, body, status] of checks) {
      const res = await gw.call(method, url, key, body);
      assert.equal(res.status, status, `${method} ${url}: ${res.text}`);
    }
    assert.equal((await gw.call('GET', `/v1/jobs/${id}`, keys.client)).body.state, 'awaiting_review');
  });
});

describe('cancel', () => {
  const qPrefix = makePrefix('cancel');
  let queued: TestGateway;

  before(async () => {
    queued = await buildGateway({ prefix: qPrefix, keys, workers: [], only: ['note-triage'] });
  });
  after(async () => {
    await queued?.close();
    await deletePrefix(qPrefix);
  });

  test('a queued job cancelled never runs, even once a worker starts', async () => {
    const res = await queued.call('POST', '/v1/models/note-triage/jobs', keys.client, { input: note(NOTES.urgent) });
    assert.equal(res.status, 202);
    const id = res.body.id;
    assert.equal((await queued.call('GET', `/v1/jobs/${id}`, keys.client)).body.state, 'queued');
    const del = await queued.call('DELETE', `/v1/jobs/${id}`, keys.client);
    assert.equal(del.status, 200, del.text);
    assert.equal(del.body.state, 'cancelled');
    const again = await queued.call('DELETE', `/v1/jobs/${id}`, keys.client);
    assert.equal(again.status, 409);
    assert.equal(again.body.code, 'invalid_state');

    // a job queued after it: once the worker has held this one, it has been past the cancelled one
    const sentinel = await queued.call('POST', '/v1/models/note-triage/jobs', keys.client, {
      input: note(NOTES.none),
    });
    const worker = await buildGateway({ prefix: qPrefix, keys, workers: ['inference'], only: ['note-triage'] });
    try {
      await waitForState(worker, keys.client, sentinel.body.id, 'awaiting_review');
      await waitFor(() => queueIdle(worker.gateway.services.queues.inference), 'the inference queue to drain');
      const record = await worker.gateway.services.store.get(id);
      assert.equal(record?.state, 'cancelled');
      assert.equal(record?.attempts, 0, 'never picked up');
      assert.equal(record?.output, undefined);
      assert.equal(record?.heldAt, undefined);
      const audit = (await allAudit(worker, keys.admin)).filter((e) => e.target === id);
      assert.deepEqual(
        audit.map((e) => e.action),
        ['job.cancel'],
      );
      assert.equal(audit[0]?.actor, 'client');
    } finally {
      await worker.close();
    }
  });

  test('cancelling a held job removes it from the review queue; a released job cannot be cancelled', async () => {
    const id = await heldJob(NOTES.routine);
    const del = await gw.call('DELETE', `/v1/jobs/${id}`, keys.client);
    assert.equal(del.status, 200, del.text);
    assert.equal(del.body.state, 'cancelled');
    const list = await gw.call('GET', '/v1/reviews?limit=500', keys.reviewer);
    assert.ok(!list.body.items.some((i: { id: string }) => i.id === id), 'a cancelled job is not in the review queue');
    const late = await decide(id, { decision: 'approve', reason: 'too late' });
    assert.equal(late.status, 409);
    assert.equal(late.body.code, 'invalid_state');
    assert.equal((await gw.call('GET', `/v1/jobs/${id}`, keys.client)).body.state, 'cancelled');

    const news2 = await submit({ input: { instances: [NEWS2_INSTANCE] } }, keys.client, {}, 'news2');
    assert.equal(news2.status, 202, news2.text);
    await waitForState(gw, keys.client, news2.body.id, 'released');
    const refused = await gw.call('DELETE', `/v1/jobs/${news2.body.id}`, keys.client);
    assert.equal(refused.status, 409);
    assert.equal(refused.body.code, 'invalid_state');
    assert.equal((await gw.call('GET', `/v1/jobs/${news2.body.id}`, keys.client)).body.state, 'released');
  });
});

describe('bad input on the job endpoints: a 4xx problem, never a job', () => {
  test('table', async () => {
    // job records live in their model's shard: {<base>:<model>}:job:<id>
    const countJobs = async () => (await gw.gateway.services.redis.keys(`${prefix.slice(0, -1)}:*}:job:*`)).length;
    const before = await countJobs();
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const doc = (attachment: Record<string, unknown>) => ({
      input: { document: { resourceType: 'DocumentReference', content: [{ attachment }] } },
    });
    const jobs = '/v1/models/note-triage/jobs';
    const cases: Array<{
      name: string;
      method?: string;
      url?: string;
      body?: unknown;
      headers?: Record<string, string>;
      status: number;
      code: string;
    }> = [
      { name: 'missing input', body: {}, status: 400, code: 'invalid_request' },
      { name: 'input null', body: { input: null }, status: 400, code: 'invalid_input' },
      { name: 'input not an object', body: { input: 'chest pain' }, status: 400, code: 'invalid_input' },
      { name: 'input an array', body: { input: ['chest pain'] }, status: 400, code: 'invalid_input' },
      {
        name: 'unknown top-level field',
        body: { input: { text: 'a b' }, priority: 1 },
        status: 400,
        code: 'invalid_request',
      },
      { name: 'body an array', body: [{ input: { text: 'a b' } }], status: 400, code: 'invalid_request' },
      { name: 'body a string', body: '"text"', status: 400, code: 'invalid_request' },
      { name: 'text not a string', body: { input: { text: 42 } }, status: 400, code: 'invalid_input' },
      { name: 'text and document', body: { input: { text: 'a', document: {} } }, status: 400, code: 'invalid_input' },
      { name: 'unknown input field', body: { input: { note: 'a b' } }, status: 400, code: 'invalid_input' },
      { name: 'empty text', body: { input: { text: '' } }, status: 400, code: 'invalid_input' },
      { name: 'blank text', body: { input: { text: ' \n\t ' } }, status: 400, code: 'invalid_input' },
      {
        name: 'text over maxChars',
        body: { input: { text: 'a'.repeat(100_001) } },
        status: 400,
        code: 'invalid_input',
      },
      {
        name: 'not a DocumentReference',
        body: { input: { document: { resourceType: 'Patient' } } },
        status: 400,
        code: 'invalid_input',
      },
      {
        name: 'DocumentReference without content',
        body: { input: { document: { resourceType: 'DocumentReference' } } },
        status: 400,
        code: 'invalid_input',
      },
      {
        name: 'attachment without data (url only)',
        body: doc({ contentType: 'text/plain', url: 'http://169.254.169.254/latest' }),
        status: 400,
        code: 'invalid_input',
      },
      {
        name: 'wrong contentType',
        body: doc({ contentType: 'application/pdf', data: b64('x y') }),
        status: 400,
        code: 'invalid_input',
      },
      {
        name: 'non-base64 data',
        body: doc({ contentType: 'text/plain', data: '%%% not base64 ***' }),
        status: 400,
        code: 'invalid_input',
      },
      {
        name: 'empty decoded text',
        body: doc({ contentType: 'text/plain', data: b64('   ') }),
        status: 400,
        code: 'invalid_input',
      },
      {
        name: 'data not a string',
        body: doc({ contentType: 'text/plain', data: 12 }),
        status: 400,
        code: 'invalid_input',
      },
      {
        name: 'idempotencyKey with bad characters',
        body: { input: { text: 'a b' }, idempotencyKey: 'has space/slash' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'idempotencyKey too long',
        body: { input: { text: 'a b' }, idempotencyKey: 'k'.repeat(129) },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'idempotencyKey empty',
        body: { input: { text: 'a b' }, idempotencyKey: '' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'idempotencyKey a number',
        body: { input: { text: 'a b' }, idempotencyKey: 7 },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'Idempotency-Key header and body differ',
        body: { input: { text: 'a b' }, idempotencyKey: 'one' },
        headers: { 'idempotency-key': 'two' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'Idempotency-Key header with bad characters',
        body: { input: { text: 'a b' } },
        headers: { 'idempotency-key': 'a b c' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'callbackUrl not a string',
        body: { input: { text: 'a b' }, callbackUrl: 5 },
        status: 400,
        code: 'invalid_callback_url',
      },
      { name: 'malformed JSON', body: '{"input": {"text": ', status: 400, code: 'malformed_json' },
      {
        name: 'wrong content type',
        body: 'input=text',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        status: 415,
        code: 'unsupported_media_type',
      },
      {
        name: 'unknown model',
        url: '/v1/models/no-such-model/jobs',
        body: { input: { text: 'a b' } },
        status: 404,
        code: 'model_not_found',
      },
      {
        name: 'bad model name',
        url: '/v1/models/..%2Fetc/jobs',
        body: { input: { text: 'a b' } },
        status: 404,
        code: 'model_not_found',
      },
      {
        name: 'feature model: input without instances',
        url: '/v1/models/news2/jobs',
        body: { input: { text: 'a b' } },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'feature model: out-of-range instance',
        url: '/v1/models/news2/jobs',
        body: { input: { instances: [{ ...NEWS2_INSTANCE, pulse: 900 }] } },
        status: 400,
        code: 'invalid_input',
      },
      {
        name: 'Prefer: respond-async with no instances',
        url: '/v1/models/news2/predict',
        body: { instances: [] },
        headers: { prefer: 'respond-async' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'Prefer: respond-async with a bad instance',
        url: '/v1/models/news2/predict',
        body: { instances: [{ pulse: 'fast' }] },
        headers: { prefer: 'respond-async' },
        status: 400,
        code: 'invalid_input',
      },
      {
        name: 'Prefer: respond-async with an unknown field',
        url: '/v1/models/news2/predict',
        body: { instances: [NEWS2_INSTANCE], extra: 1 },
        headers: { prefer: 'respond-async' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'GET a job id that is not a uuid',
        method: 'GET',
        url: '/v1/jobs/not-a-uuid',
        status: 404,
        code: 'not_found',
      },
      { name: 'GET an unknown job', method: 'GET', url: `/v1/jobs/${randomUUID()}`, status: 404, code: 'not_found' },
      {
        name: 'DELETE a job id that is not a uuid',
        method: 'DELETE',
        url: '/v1/jobs/not-a-uuid',
        status: 404,
        code: 'not_found',
      },
      {
        name: 'DELETE an unknown job',
        method: 'DELETE',
        url: `/v1/jobs/${randomUUID()}`,
        status: 404,
        code: 'not_found',
      },
      {
        name: 'PUT a job',
        method: 'PUT',
        url: `/v1/jobs/${randomUUID()}`,
        body: {},
        status: 405,
        code: 'method_not_allowed',
      },
    ];
    const batch = gw.gateway.deps.catalog.list().find((m) => m.tier === 'batch');
    assert.ok(batch, 'a bundled batch model (readmission)');
    cases.push(
      {
        name: 'a batch model takes no jobs',
        url: `/v1/models/${batch.manifest.name}/jobs`,
        body: { input: { instances: [{ age: 70 }] } },
        status: 409,
        code: 'wrong_tier',
      },
      {
        name: 'Prefer: respond-async on a batch model',
        url: `/v1/models/${batch.manifest.name}/predict`,
        body: { instances: [{ age: 70 }] },
        headers: { prefer: 'respond-async' },
        status: 409,
        code: 'wrong_tier',
      },
    );
    for (const c of cases) {
      const res = await gw.call(c.method ?? 'POST', c.url ?? jobs, keys.client, c.body, c.headers);
      assert.equal(res.status, c.status, `${c.name}: ${res.text}`);
      assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/, c.name);
      assert.equal(res.body.code, c.code, `${c.name}: ${res.text}`);
    }
    assert.equal(await countJobs(), before, 'no bad request created a job');
  });
});

describe('metrics and logs after a flow', () => {
  test('/metrics shows the async series, and no input text appears in /metrics or the logs', async () => {
    const secretText = `Zygomatic fracture reported by patient ${randomUUID()} after a fall; chest pain and syncope.`;
    const id = await heldJob(secretText, { callbackUrl: receiver.url('/metrics-flow') });
    const text1 = await metrics();
    const atLeast = (t: string, name: string, labels: Record<string, string>, min: number) => {
      const value = metricValue(t, name, labels);
      assert.ok(value !== undefined && value >= min, `${name}${JSON.stringify(labels)} = ${value}, expected >= ${min}`);
    };
    atLeast(text1, 'triage_review_backlog', {}, 1);
    atLeast(text1, 'triage_review_oldest_hold_age_seconds', {}, 0);
    assert.equal(await decide(id, { decision: 'approve', reason: 'ok' }).then((r) => r.status), 200);
    await waitFor(() => receiver.events.has(`evt-${id}-released`), 'the callback');
    await waitFor(() => queueIdle(gw.gateway.services.queues.callbacks), 'the callback queue to drain');

    const text = await metrics();
    for (const state of ['queued', 'awaiting_review', 'released', 'cancelled']) {
      atLeast(text, 'triage_jobs_total', { model: 'note-triage', state }, 1);
    }
    atLeast(text, 'triage_review_backlog', {}, 0);
    atLeast(text, 'triage_review_oldest_hold_age_seconds', {}, 0);
    atLeast(text, 'triage_queue_jobs', { queue: 'inference', state: 'completed' }, 1);
    atLeast(text, 'triage_queue_jobs', { queue: 'callbacks', state: 'waiting' }, 0);
    atLeast(text, 'triage_review_decisions_total', { model: 'note-triage', outcome: 'approve' }, 1);
    atLeast(text, 'triage_callback_attempts_total', { outcome: 'delivered' }, 1);
    const backlog = metricValue(text, 'triage_review_backlog');
    assert.equal(backlog, await gw.gateway.services.store.pendingCount());

    const log = logs.lines.join('');
    assert.ok(logs.lines.length > 0, 'the logger captured something');
    assert.match(log, /"msg":"request"/, 'access log lines were captured');
    for (const s of [...submitted, secretText, 'Zygomatic']) {
      assert.ok(!text.includes(s), `input text in /metrics: ${s.slice(0, 40)}`);
      assert.ok(!log.includes(s), `input text in the logs: ${s.slice(0, 40)}`);
    }
    for (const secret of [keys.client, keys.reviewer, keys.admin, keys.secrets.client]) {
      assert.ok(!log.includes(secret) && !text.includes(secret), 'a key or callback secret leaked');
    }
  });
});
