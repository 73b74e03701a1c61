/**
 * The clinician review hold: nothing is released, called back or shown before approval; a decision is applied
 * exactly once under concurrent approve/reject; the queue lists oldest first with paging; the review policies
 * (always, low-confidence, sample, never) and deadline escalation; bad input on the review and admin endpoints.
 * Real Redis, BullMQ, onnxruntime and a real callback receiver.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  ASYNC_WORKERS,
  allAudit,
  buildGateway,
  deletePrefix,
  makeKeys,
  makePrefix,
  metricValue,
  NOTES,
  queueIdle,
  Receiver,
  removeDir,
  TestClock,
  type TestGateway,
  tempModels,
  waitFor,
  waitForState,
} from './support/index.ts';

const keys = makeKeys();
let receiver: Receiver;

before(async () => {
  receiver = await Receiver.start(keys.secrets.client);
});
after(async () => {
  await receiver?.close();
});

async function submitHeld(gw: TestGateway, model: string, text: string, callback = true): Promise<string> {
  const res = await gw.call('POST', `/v1/models/${model}/jobs`, keys.client, {
    input: { text },
    ...(callback ? { callbackUrl: receiver.url(`/${model}`) } : {}),
  });
  assert.equal(res.status, 202, res.text);
  await waitForState(gw, keys.client, res.body.id, 'awaiting_review');
  return res.body.id;
}

const decide = (gw: TestGateway, id: string, body: unknown, key = keys.reviewer) =>
  gw.call('POST', `/v1/reviews/${id}/decision`, key, body);

async function scrape(gw: TestGateway): Promise<string> {
  return (await gw.call('GET', '/metrics', undefined)).text;
}

/** waits until every callback and outbox entry is settled, so counting deliveries is final */
async function callbacksSettled(gw: TestGateway): Promise<void> {
  await gw.gateway.workers?.maintenance?.sweep();
  await waitFor(
    async () =>
      (await queueIdle(gw.gateway.services.queues.callbacks)) && (await gw.gateway.services.outbox.size()) === 0,
    'callbacks to settle',
  );
}

describe('nothing before approval; a decision applies once', () => {
  const prefix = makePrefix('reviews');
  let gw: TestGateway;
  before(async () => {
    gw = await buildGateway({ workers: ASYNC_WORKERS, prefix, keys, only: ['note-triage', 'similar-cases'] });
  });
  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
  });

  test('while awaiting review: no callback, no result, nothing queued for delivery', async () => {
    const id = await submitHeld(gw, 'note-triage', NOTES.urgent);
    await callbacksSettled(gw);
    assert.equal(receiver.deliveriesFor(id).length, 0);
    const job = await gw.call('GET', `/v1/jobs/${id}`, keys.client);
    assert.equal(job.body.state, 'awaiting_review');
    assert.equal(job.body.result, undefined);
    assert.doesNotMatch(job.text, /predictions|probabilities|category/);
    assert.equal(await gw.gateway.services.queues.callbacks.getJob(`cb-${id}-released`), undefined);
    assert.equal(await gw.gateway.services.outbox.has(id, 'released'), false);

    const ok = await decide(gw, id, { decision: 'approve', reason: 'agreed' });
    assert.equal(ok.status, 200, ok.text);
    await waitFor(() => receiver.events.has(`evt-${id}-released`), 'the callback after approval');
  });

  test('approve vs reject at the same moment, 30 times: one wins, the other gets 409, one callback, one audit entry', async () => {
    const N = 30;
    const decisionsBefore = await scrape(gw);
    const ids: string[] = [];
    const created = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        gw.call('POST', '/v1/models/note-triage/jobs', keys.client, {
          input: { text: `${NOTES.routine} (case ${i})` },
          callbackUrl: receiver.url('/race'),
        }),
      ),
    );
    for (const r of created) {
      assert.equal(r.status, 202, r.text);
      ids.push(r.body.id);
    }
    await Promise.all(ids.map((id) => waitForState(gw, keys.client, id, 'awaiting_review', 60_000)));

    const winners = new Map<string, 'approve' | 'reject'>();
    await Promise.all(
      ids.map(async (id, i) => {
        const approve = () => decide(gw, id, { decision: 'approve', reason: 'race approve' }, keys.reviewer);
        const reject = () => decide(gw, id, { decision: 'reject', reason: 'race reject' }, keys.reviewer2);
        // alternate who fires first, so both outcomes are exercised
        const [a, r] =
          i % 2 === 0
            ? await Promise.all([approve(), reject()])
            : await Promise.all([reject(), approve()]).then(([x, y]) => [y, x] as const);
        assert.deepEqual([a.status, r.status].sort(), [200, 409], `${id}: ${a.text} / ${r.text}`);
        const loser = a.status === 409 ? a : r;
        assert.equal(loser.body.code, 'already_decided', loser.text);
        winners.set(id, a.status === 200 ? 'approve' : 'reject');
      }),
    );
    const approved = [...winners.values()].filter((w) => w === 'approve').length;
    assert.ok(approved > 0 && approved < N, `both outcomes occur (approved ${approved} of ${N})`);

    for (const id of ids) {
      const job = await gw.call('GET', `/v1/jobs/${id}`, keys.client);
      assert.equal(job.body.state, winners.get(id) === 'approve' ? 'released' : 'rejected', id);
      assert.equal(job.body.result !== undefined, winners.get(id) === 'approve');
    }
    const expectedEvent = (id: string) => `evt-${id}-${winners.get(id) === 'approve' ? 'released' : 'rejected'}`;
    await waitFor(() => ids.every((id) => receiver.events.has(expectedEvent(id))), 'one callback per job', 60_000);
    await callbacksSettled(gw);
    for (const id of ids) {
      const deliveries = receiver.deliveriesFor(id);
      assert.deepEqual(
        deliveries.map((d) => d.id),
        [expectedEvent(id)],
        `${id}: exactly one callback, of the winning decision`,
      );
    }

    const audit = await allAudit(gw, keys.admin);
    for (const id of ids) {
      const entries = audit.filter((e) => e.target === id && e.action.startsWith('review.'));
      assert.equal(entries.length, 1, `${id}: one decision in the audit`);
      const winner = winners.get(id);
      assert.equal(entries[0]?.action, `review.${winner}`);
      assert.equal(entries[0]?.actor, winner === 'approve' ? 'reviewer' : 'reviewer-2');
      assert.equal(entries[0]?.role, 'reviewer');
      assert.ok(entries[0]?.at && !Number.isNaN(Date.parse(entries[0].at)), 'the entry has a time');
    }
    const text = await scrape(gw);
    const count = (t: string, outcome: string) =>
      metricValue(t, 'triage_review_decisions_total', { model: 'note-triage', outcome }) ?? 0;
    assert.equal(count(text, 'approve') - count(decisionsBefore, 'approve'), approved);
    assert.equal(count(text, 'reject') - count(decisionsBefore, 'reject'), N - approved);
  });

  test('a retried approval after success is a 409 and changes nothing', async () => {
    const id = await submitHeld(gw, 'note-triage', NOTES.none);
    const ok = await decide(gw, id, { decision: 'approve', reason: 'first' });
    assert.equal(ok.status, 200);
    await waitFor(() => receiver.events.has(`evt-${id}-released`), 'the callback');
    await callbacksSettled(gw);
    const recordBefore = await gw.gateway.services.store.get(id);
    for (const body of [
      { decision: 'approve', reason: 'first' },
      { decision: 'reject', reason: 'changed my mind' },
      { decision: 'amend', reason: 'late amendment', output: { category: 'urgent-follow-up' } },
    ]) {
      const again = await decide(gw, id, body, keys.reviewer2);
      assert.equal(again.status, 409, again.text);
      assert.equal(again.body.code, 'already_decided');
    }
    await callbacksSettled(gw);
    assert.deepEqual(await gw.gateway.services.store.get(id), recordBefore);
    assert.equal(receiver.deliveriesFor(id).length, 1);
    const audit = (await allAudit(gw, keys.admin)).filter((e) => e.target === id);
    assert.deepEqual(
      audit.map((e) => e.action),
      ['job.hold', 'review.approve'],
    );
  });
});

describe('the review queue: oldest first, by model, paged', () => {
  const prefix = makePrefix('queue');
  const random = { value: 0 };
  let gw: TestGateway;
  before(async () => {
    gw = await buildGateway({
      workers: ASYNC_WORKERS,
      prefix,
      keys,
      only: ['note-triage', 'similar-cases'],
      now: new TestClock().now,
      random: () => random.value,
    });
  });
  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
  });

  test('lists holds oldest first, filters by model, pages with limit/offset and links.next', async () => {
    const triage: string[] = [];
    const similar: string[] = [];
    const all: string[] = [];
    for (let i = 0; i < 5; i++) {
      const id = await submitHeld(gw, 'note-triage', `${NOTES.urgent} (${i})`, false);
      triage.push(id);
      all.push(id);
      if (i % 2 === 0) {
        const s = await submitHeld(gw, 'similar-cases', `${NOTES.routine} (${i})`, false);
        similar.push(s);
        all.push(s);
      }
    }
    const everything = await gw.call('GET', '/v1/reviews', keys.reviewer);
    assert.equal(everything.status, 200, everything.text);
    assert.equal(everything.body.total, all.length);
    assert.deepEqual(
      everything.body.items.map((i: { id: string }) => i.id),
      all,
    );
    assert.equal(everything.body.links, undefined, 'one page: no next link');
    const heldAts = everything.body.items.map((i: { heldAt: string }) => Date.parse(i.heldAt));
    assert.deepEqual(
      heldAts,
      [...heldAts].sort((a, b) => a - b),
    );

    const bySimilar = await gw.call('GET', '/v1/reviews?model=similar-cases', keys.reviewer);
    assert.deepEqual(
      bySimilar.body.items.map((i: { id: string }) => i.id),
      similar,
    );
    assert.equal(bySimilar.body.total, similar.length);
    assert.ok(
      bySimilar.body.items.every((i: { holdReason: string }) => i.holdReason === 'sampled for audit (20%)'),
      'sampled holds say so',
    );

    const pages: string[][] = [];
    let url: string | undefined = '/v1/reviews?model=note-triage&limit=2';
    while (url) {
      const page = await gw.call('GET', url, keys.reviewer);
      assert.equal(page.status, 200, page.text);
      assert.equal(page.body.total, triage.length);
      pages.push(page.body.items.map((i: { id: string }) => i.id));
      url = page.body.links?.next;
      if (pages.length === 1) assert.equal(url, '/v1/reviews?model=note-triage&limit=2&offset=2');
      assert.ok(pages.length <= 3, 'paging terminates');
    }
    assert.deepEqual(pages, [triage.slice(0, 2), triage.slice(2, 4), triage.slice(4)]);

    const offset = await gw.call('GET', '/v1/reviews?limit=3&offset=4', keys.reviewer);
    assert.deepEqual(
      offset.body.items.map((i: { id: string }) => i.id),
      all.slice(4, 7),
    );
    const past = await gw.call('GET', '/v1/reviews?offset=100', keys.reviewer);
    assert.deepEqual(past.body.items, []);
    assert.equal(past.body.total, all.length);

    // deciding one removes it from the queue and its model's queue
    assert.equal((await decide(gw, triage[0]!, { decision: 'reject', reason: 'r' })).status, 200);
    const afterDecision = await gw.call('GET', '/v1/reviews?model=note-triage', keys.reviewer);
    assert.deepEqual(
      afterDecision.body.items.map((i: { id: string }) => i.id),
      triage.slice(1),
    );
    const backlog = metricValue(await scrape(gw), 'triage_review_backlog');
    assert.equal(backlog, all.length - 1);
  });
});

describe('review policies', () => {
  const prefix = makePrefix('policies');
  let dir: string | undefined;
  let gw: TestGateway;
  const random = { value: 0.99 };
  before(async () => {
    dir = await tempModels({
      'note-triage': (m) => {
        m.review = { policy: 'low-confidence', deadlineMinutes: 60 };
      },
      'similar-cases': (m) => {
        m.review = { policy: 'never' };
      },
      news2: null,
    });
    gw = await buildGateway({ workers: ASYNC_WORKERS, prefix, keys, modelsDir: dir, random: () => random.value });
  });
  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(dir);
  });

  test('low-confidence: holds a low-confidence result, releases a confident one', async () => {
    // no token the featuriser keeps → the bias alone → below the 0.6 threshold
    const low = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, { input: { text: 'x y z' } });
    const sure = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, {
      input: { text: NOTES.urgent },
      callbackUrl: receiver.url('/policy'),
    });
    assert.equal(low.status, 202, low.text);
    assert.equal(sure.status, 202, sure.text);
    await waitForState(gw, keys.client, low.body.id, 'awaiting_review');
    const released = await waitForState(gw, keys.client, sure.body.id, 'released');
    assert.equal(released.result.reviewed, false);
    assert.ok(released.result.output.predictions[0].confidence >= 0.6, 'a confident result');
    const item = await gw.call('GET', `/v1/reviews/${low.body.id}`, keys.reviewer);
    assert.match(item.body.holdReason, /^confidence [\d.]+ below 0\.6$/);
    assert.ok(item.body.output.predictions[0].confidence < 0.6, 'a low-confidence result');
    assert.equal(item.body.output.predictions[0].confident, false);
    await waitFor(() => receiver.events.has(`evt-${sure.body.id}-released`), 'the unreviewed release callback');
    const audit = (await allAudit(gw, keys.admin)).filter((e) => e.target === sure.body.id);
    assert.equal(audit.length, 1);
    assert.equal(audit[0]?.action, 'job.release');
    assert.match(audit[0]?.reason ?? '', /at or above 0\.6/);
  });

  test('never: released at once, never in the review queue', async () => {
    const res = await gw.call('POST', '/v1/models/similar-cases/jobs', keys.client, { input: { text: NOTES.urgent } });
    const job = await waitForState(gw, keys.client, res.body.id, 'released');
    assert.ok(Array.isArray(job.result.output.predictions[0].matches), 'retrieval matches');
    assert.equal((await gw.call('GET', `/v1/reviews/${res.body.id}`, keys.reviewer)).status, 404);
  });

  test('sample: held exactly when the injected random falls inside the sample', async () => {
    const bundled = makePrefix('sample');
    const r = { value: 0 };
    const sampled = await buildGateway({
      workers: ASYNC_WORKERS,
      prefix: bundled,
      keys,
      only: ['similar-cases'],
      random: () => r.value,
    });
    try {
      const run = async (value: number) => {
        r.value = value;
        const res = await sampled.call('POST', '/v1/models/similar-cases/jobs', keys.client, {
          input: { text: NOTES.routine },
        });
        assert.equal(res.status, 202, res.text);
        return (await waitForState(sampled, keys.client, res.body.id, ['awaiting_review', 'released'])).state;
      };
      assert.equal(await run(0), 'awaiting_review');
      assert.equal(await run(0.1999), 'awaiting_review');
      assert.equal(await run(0.2), 'released', 'the boundary is outside a 20% sample');
      assert.equal(await run(0.95), 'released');
      const list = await sampled.call('GET', '/v1/reviews?model=similar-cases', keys.reviewer);
      assert.equal(list.body.total, 2);
    } finally {
      await sampled.close();
      await deletePrefix(bundled);
    }
  });
});

describe('escalation of overdue holds', () => {
  const prefix = makePrefix('escalation');
  const clock = new TestClock();
  let gw: TestGateway;
  before(async () => {
    gw = await buildGateway({ workers: ASYNC_WORKERS, prefix, keys, only: ['note-triage'], now: clock.now });
  });
  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
  });

  test('a hold past its deadline is escalated once, counted once; a fresh hold is not', async () => {
    const escalations = async () =>
      metricValue(await scrape(gw), 'triage_review_escalations_total', { model: 'note-triage' }) ?? 0;
    const sweep = () => gw.gateway.workers?.maintenance?.sweep() ?? Promise.reject(new Error('no maintenance'));
    const old = await submitHeld(gw, 'note-triage', NOTES.urgent, false);
    await sweep();
    assert.equal(await escalations(), 0, 'not overdue yet');
    clock.advance(239 * 60_000);
    await sweep();
    assert.equal(await escalations(), 0, 'still inside the 240-minute deadline');

    clock.advance(2 * 60_000);
    const fresh = await submitHeld(gw, 'note-triage', NOTES.routine, false);
    await sweep();
    assert.equal(await escalations(), 1);
    const job = await gw.call('GET', `/v1/jobs/${old}`, keys.client);
    assert.equal(job.body.escalated, true);
    assert.equal(job.body.state, 'awaiting_review', 'escalation never releases');
    assert.equal(job.body.result, undefined);
    const freshJob = await gw.call('GET', `/v1/jobs/${fresh}`, keys.client);
    assert.equal(freshJob.body.escalated, undefined);
    const list = await gw.call('GET', '/v1/reviews', keys.reviewer);
    const byId = new Map(list.body.items.map((i: { id: string }) => [i.id, i]));
    const oldItem = byId.get(old) as { escalated: boolean; ageSeconds: number };
    const freshItem = byId.get(fresh) as { escalated: boolean; ageSeconds: number };
    assert.equal(oldItem.escalated, true);
    assert.equal(freshItem.escalated, false);
    // the age a reviewer sees is measured on the same clock as the deadline
    assert.ok(oldItem.ageSeconds >= 241 * 60, `age of the overdue hold: ${oldItem.ageSeconds} s`);
    assert.ok(
      freshItem.ageSeconds >= 0 && freshItem.ageSeconds < 60,
      `age of the fresh hold: ${freshItem.ageSeconds} s`,
    );
    const oldest = metricValue(await scrape(gw), 'triage_review_oldest_hold_age_seconds') ?? 0;
    assert.ok(oldest >= 241 * 60, `oldest hold age ${oldest}`);

    await sweep();
    await sweep();
    assert.equal(await escalations(), 1, 'a second sweep does not count it again');

    // once decided, the job shows its outcome, not the escalation
    assert.equal((await decide(gw, old, { decision: 'approve', reason: 'late but fine' })).status, 200);
    clock.advance(24 * 60 * 60_000);
    await sweep();
    assert.equal(await escalations(), 2, 'only the other, still-pending hold escalates');
  });
});

describe('bad input on the review and admin endpoints: a 4xx problem, nothing changes', () => {
  const prefix = makePrefix('review-bad');
  let gw: TestGateway;
  before(async () => {
    gw = await buildGateway({ workers: ASYNC_WORKERS, prefix, keys, only: ['note-triage'] });
  });
  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
  });

  test('table', async () => {
    const id = await submitHeld(gw, 'note-triage', NOTES.urgent);
    const decision = `/v1/reviews/${id}/decision`;
    const cases: Array<{
      name: string;
      method?: string;
      url: string;
      key?: string;
      body?: unknown;
      headers?: Record<string, string>;
      status: number;
      code: string;
    }> = [
      { name: 'limit=0', url: '/v1/reviews?limit=0', status: 400, code: 'invalid_request' },
      { name: 'limit=abc', url: '/v1/reviews?limit=abc', status: 400, code: 'invalid_request' },
      { name: 'limit=501', url: '/v1/reviews?limit=501', status: 400, code: 'invalid_request' },
      { name: 'limit=1.5', url: '/v1/reviews?limit=1.5', status: 400, code: 'invalid_request' },
      { name: 'limit empty', url: '/v1/reviews?limit=', status: 400, code: 'invalid_request' },
      { name: 'offset=-1', url: '/v1/reviews?offset=-1', status: 400, code: 'invalid_request' },
      { name: 'offset=1e3', url: '/v1/reviews?offset=1e3', status: 400, code: 'invalid_request' },
      { name: 'model=unknown', url: '/v1/reviews?model=unknown', status: 404, code: 'model_not_found' },
      { name: 'model=bad name', url: '/v1/reviews?model=..%2F*', status: 404, code: 'model_not_found' },
      { name: 'review id not a uuid', url: '/v1/reviews/not-a-uuid', status: 404, code: 'not_found' },
      { name: 'unknown review id', url: `/v1/reviews/${randomUUID()}`, status: 404, code: 'not_found' },
      {
        name: 'decision on an unknown review',
        method: 'POST',
        url: `/v1/reviews/${randomUUID()}/decision`,
        body: { decision: 'approve', reason: 'x' },
        status: 404,
        code: 'not_found',
      },
      {
        name: 'decision on a non-uuid review',
        method: 'POST',
        url: '/v1/reviews/not-a-uuid/decision',
        body: { decision: 'approve', reason: 'x' },
        status: 404,
        code: 'not_found',
      },
      {
        name: 'missing reason',
        method: 'POST',
        url: decision,
        body: { decision: 'approve' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'empty reason',
        method: 'POST',
        url: decision,
        body: { decision: 'approve', reason: '' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'blank reason',
        method: 'POST',
        url: decision,
        body: { decision: 'approve', reason: '   ' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'reason not a string',
        method: 'POST',
        url: decision,
        body: { decision: 'approve', reason: ['ok'] },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'reason over 2000 characters',
        method: 'POST',
        url: decision,
        body: { decision: 'approve', reason: 'r'.repeat(2001) },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'missing decision',
        method: 'POST',
        url: decision,
        body: { reason: 'ok' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'decision "maybe"',
        method: 'POST',
        url: decision,
        body: { decision: 'maybe', reason: 'ok' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'decision "APPROVE"',
        method: 'POST',
        url: decision,
        body: { decision: 'APPROVE', reason: 'ok' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'output with approve',
        method: 'POST',
        url: decision,
        body: { decision: 'approve', reason: 'ok', output: { category: 'no-action' } },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'output with reject',
        method: 'POST',
        url: decision,
        body: { decision: 'reject', reason: 'ok', output: { category: 'no-action' } },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'amend with an unknown category',
        method: 'POST',
        url: decision,
        body: { decision: 'amend', reason: 'ok', output: { category: 'whatever' } },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'unknown field',
        method: 'POST',
        url: decision,
        body: { decision: 'approve', reason: 'ok', reviewer: 'someone-else' },
        status: 400,
        code: 'invalid_request',
      },
      {
        name: 'body an array',
        method: 'POST',
        url: decision,
        body: [{ decision: 'approve' }],
        status: 400,
        code: 'invalid_request',
      },
      { name: 'body null', method: 'POST', url: decision, body: 'null', status: 400, code: 'invalid_request' },
      {
        name: 'malformed JSON',
        method: 'POST',
        url: decision,
        body: '{"decision": "approve", ',
        status: 400,
        code: 'malformed_json',
      },
      {
        name: 'wrong content type',
        method: 'POST',
        url: decision,
        body: 'decision=approve&reason=ok',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        status: 415,
        code: 'unsupported_media_type',
      },
      {
        name: 'no content type',
        method: 'POST',
        url: decision,
        body: JSON.stringify({ decision: 'approve', reason: 'ok' }),
        headers: { 'content-type': '' },
        status: 415,
        code: 'unsupported_media_type',
      },
      {
        name: 'audit after=garbage',
        url: '/v1/audit?after=garbage',
        key: keys.admin,
        status: 400,
        code: 'invalid_request',
      },
      { name: 'audit after=1-', url: '/v1/audit?after=1-', key: keys.admin, status: 400, code: 'invalid_request' },
      { name: 'audit limit=0', url: '/v1/audit?limit=0', key: keys.admin, status: 400, code: 'invalid_request' },
      { name: 'audit limit=1001', url: '/v1/audit?limit=1001', key: keys.admin, status: 400, code: 'invalid_request' },
      { name: 'audit limit=-5', url: '/v1/audit?limit=-5', key: keys.admin, status: 400, code: 'invalid_request' },
      {
        name: 'replay an unknown dead letter',
        method: 'POST',
        url: `/v1/callbacks/dead-letters/evt-${randomUUID()}-released/replay`,
        key: keys.admin,
        status: 404,
        code: 'not_found',
      },
      {
        name: 'replay a malformed event id',
        method: 'POST',
        url: '/v1/callbacks/dead-letters/evt-nope/replay',
        key: keys.admin,
        status: 404,
        code: 'not_found',
      },
      {
        name: 'replay the event of a job that never dead-lettered',
        method: 'POST',
        url: `/v1/callbacks/dead-letters/evt-${id}-released/replay`,
        key: keys.admin,
        status: 404,
        code: 'not_found',
      },
    ];
    for (const c of cases) {
      const res = await gw.call(c.method ?? 'GET', c.url, c.key ?? keys.reviewer, c.body, c.headers);
      assert.equal(res.status, c.status, `${c.name}: ${res.text}`);
      assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/, c.name);
      assert.equal(res.body.code, c.code, `${c.name}: ${res.text}`);
    }
    const record = await gw.gateway.services.store.get(id);
    assert.equal(record?.state, 'awaiting_review');
    assert.equal(record?.decision, undefined);
    const audit = (await allAudit(gw, keys.admin)).map((e) => e.action);
    assert.deepEqual(audit, ['job.hold'], 'no refused request left an audit entry');
    assert.equal((await gw.call('GET', '/v1/audit?after=0-0&limit=1', keys.admin)).status, 200);
    assert.equal((await decide(gw, id, { decision: 'approve', reason: 'r'.repeat(2000) })).status, 200);
  });
});
