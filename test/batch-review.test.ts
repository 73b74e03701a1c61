/**
 * Clinician-reviewed batch output (a model's `batch.review`), on a real gateway with the real BullMQ batch worker,
 * worker threads, onnxruntime and files: a whole run held until a reviewer approves it (the status URL keeps a Bulk
 * Data client polling, the files are refused), rejected output never served, one decision only (409 after), audited
 * with the named person (an API key and a bearer token), nobody decides their own run, other clients see nothing; and
 * the above-threshold hold, which releases the rows below the threshold at once and holds the rest.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { outcomeCode } from '../src/fhir/operation-outcome.ts';
import { TokenVerifier } from '../src/platform/oidc.ts';
import { FormClient } from './desk-support.ts';
import { Issuer, makeSigner, type Signer } from './security-support.ts';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  download,
  HANG_GUARD_MS,
  makeKeys,
  makePrefix,
  NEWS2_INSTANCE,
  placeDischarges,
  placeNews2Rows,
  REVIEW_HOLDS,
  type Reply,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('batch-review');
const AUDIENCE = 'triage-batch-review';
let modelsDir: string;
let dataDir: string;
let gw: TestGateway;
let issuer: Issuer;
let signer: Signer;

const NEWS2_ROWS = 120;

before(async () => {
  modelsDir = await tempModels(REVIEW_HOLDS);
  dataDir = await tempDir('batch-review');
  await placeDischarges(dataDir);
  await placeNews2Rows(dataDir, NEWS2_ROWS);
  // every row scores 0: nothing to hold
  const calm = Array.from({ length: 6 }, (_, i) => JSON.stringify({ id: `calm-${i}`, ...NEWS2_INSTANCE }));
  await writeFile(path.join(dataDir, 'clients', 'client', 'inputs', 'calm.ndjson'), `${calm.join('\n')}\n`);
  issuer = await Issuer.start();
  signer = await makeSigner('RS256');
  issuer.keys = [signer.publicJwk];
  // parsed as TRIAGE_OIDC_ISSUERS is, defaults included
  const tokens = TokenVerifier.parse(
    JSON.stringify({
      issuers: [
        {
          id: 'sso',
          issuer: issuer.url,
          audience: AUDIENCE,
          algorithms: ['RS256'],
          roleValues: { 'triage:reviewer': 'reviewer' },
          nameClaim: 'name',
        },
      ],
    }),
  );
  // on a real socket: the review desk's cookies and forms need one
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, tokens, workers: ['batch'], listen: true });
});

after(async () => {
  await gw?.close();
  await issuer?.close();
  await deletePrefix(prefix);
  await removeDir(modelsDir);
  await removeDir(dataDir);
});

const reviewerToken = (sub: string, name: string) =>
  signer.sign(
    { iss: issuer.url, aud: AUDIENCE, sub, name, scope: 'triage:reviewer triage:model:*' },
    { issuedAt: Math.floor(Date.now() / 1000), expiresIn: Math.floor(Date.now() / 1000) + 600 },
  );

async function submit(model: string, file: string, key = keys.client): Promise<string> {
  const res = await gw.call('POST', `/v1/models/${model}/batches`, key, {
    input: { path: `inputs/${file}`, format: 'ndjson' },
  });
  assert.equal(res.status, 202, res.text);
  return res.body.id as string;
}

/** Polls the status URL until the run has left queued/running; the first answer after that. */
async function settled(id: string, key = keys.client): Promise<Reply> {
  let last: Reply | undefined;
  await waitFor(
    async () => {
      last = await gw.call('GET', `/v1/batches/${id}`, key);
      return !(last.status === 202 && (last.body.state === 'queued' || last.body.state === 'running'));
    },
    () => `run ${id} to finish scoring (last: ${last?.status} ${last?.text.slice(0, 200)})`,
    60_000,
  );
  return last as Reply;
}

/** A manifest's absolute file URL as a path on this gateway (the test client adds its own origin). */
const pathOf = (url: string) => new URL(url).pathname;
const file = (id: string, name: string, key = keys.client) => gw.call('GET', `/v1/batches/${id}/files/${name}`, key);
const decide = (id: string, key: string, decision: string, reason = 'checked against the ward list') =>
  gw.call('POST', `/v1/batch-reviews/${id}/decision`, key, { decision, reason });

describe('a whole run held for review', { timeout: HANG_GUARD_MS }, () => {
  let runId: string;

  test('the status URL says awaiting_review (202, X-Progress) and every file is refused with 409', async () => {
    runId = await submit('readmission', 'discharges.ndjson');
    const status = await settled(runId);
    assert.equal(status.status, 202, status.text);
    assert.equal(status.body.state, 'awaiting_review');
    assert.match(
      status.headers.get('x-progress') ?? '',
      /^awaiting_review: 195 scored rows held for clinician review$/,
    );
    assert.equal(status.body.review.hold, 'run');
    assert.equal(status.body.review.heldRows, 195);
    for (const name of ['output.ndjson', 'errors.ndjson']) {
      const res = await file(runId, name);
      assert.equal(res.status, 409, `${name}: ${res.text}`);
      assert.equal(outcomeCode(res.body), 'awaiting_review');
    }
    assert.equal((await file(runId, 'output.held.ndjson')).status, 404, 'a whole-run hold has no held-rows file');
  });

  test('reviewers see it in their queue with its counts and a sample; other clients see nothing', async () => {
    const list = await gw.call('GET', '/v1/batch-reviews?model=readmission', keys.reviewer);
    assert.equal(list.status, 200, list.text);
    const item = list.body.items.find((i: { runId: string }) => i.runId === runId);
    assert.ok(item, 'the held run is listed');
    assert.equal(item.state, 'awaiting_review');
    assert.equal(item.requestedBy, 'api:client');
    const one = await gw.call('GET', `/v1/batch-reviews/${runId}`, keys.reviewer);
    assert.equal(one.status, 200);
    assert.equal(one.body.rows.scored, 195);
    assert.equal(one.body.rows.held, 195);
    // the held rows' own file, scored by the model: the count above the threshold is what the rows say
    assert.equal(one.body.sample.length, 10);
    for (const row of one.body.sample) assert.equal(row.model, 'readmission');
    const above = one.body.rows.aboveThreshold as number;
    assert.ok(above > 0 && above < 195, `some rows above the threshold (${above})`);

    assert.equal((await gw.call('GET', `/v1/batches/${runId}`, keys.other)).status, 404, "another client's run");
    assert.equal((await file(runId, 'output.ndjson', keys.other)).status, 404);
    assert.equal((await gw.call('GET', '/v1/batch-reviews', keys.other)).status, 403, 'clients are not reviewers');
    assert.equal((await gw.call('GET', `/v1/batch-reviews/${runId}`, keys.client)).status, 403);
    assert.equal((await decide(runId, keys.other, 'approve')).status, 403);
    assert.equal((await decide(runId, keys.client, 'approve')).status, 403, 'nor may the requester approve it');
  });

  test('a named person approves it (bearer token), once: the files are served; a second decision is 409', async () => {
    const token = await reviewerToken('prac-42', 'Dr Grace Hopper');
    const approved = await decide(runId, token, 'approve', 'outreach list checked');
    assert.equal(approved.status, 200, approved.text);
    assert.equal(approved.body.state, 'approved');
    assert.equal(approved.body.decision.by, 'sso:prac-42');
    assert.equal(approved.body.decision.bySubject, 'prac-42');
    assert.equal(approved.body.decision.byName, 'Dr Grace Hopper');
    const again = await decide(runId, keys.reviewer2, 'reject');
    assert.equal(again.status, 409);
    assert.equal(again.body.code, 'already_decided');

    const status = await gw.call('GET', `/v1/batches/${runId}`, keys.client);
    assert.equal(status.status, 200, status.text);
    assert.equal(status.body.extension.review.state, 'approved');
    assert.equal(status.body.extension.review.decision.by, 'sso:prac-42');
    const output = await download(gw, keys.client, pathOf(status.body.output[0].url));
    assert.equal(output.length, 195);
    const errors = await download(gw, keys.client, pathOf(status.body.error[0].url));
    assert.equal(errors.length, 5);
    const list = await gw.call('GET', '/v1/batch-reviews', keys.reviewer);
    assert.ok(!list.body.items.some((i: { runId: string }) => i.runId === runId), 'no longer waiting');

    const audit = (await allAudit(gw, keys.admin)).filter((e) => e.target === runId);
    assert.deepEqual(
      audit.map((e) => e.action),
      ['batch.submit', 'batch.hold', 'batch.review.approve'],
    );
    const decision = audit[2] as Record<string, unknown>;
    assert.equal(decision.actor, 'sso:prac-42');
    assert.equal(decision.actorSubject, 'prac-42');
    assert.equal(decision.actorName, 'Dr Grace Hopper');
    assert.equal(decision.reason, 'outreach list checked');
  });

  test('a rejected run is never served, and stays rejected', async () => {
    const id = await submit('readmission', 'discharges.ndjson');
    assert.equal((await settled(id)).body.state, 'awaiting_review');
    const rejected = await decide(id, keys.reviewer, 'reject', 'wrong discharge cohort');
    assert.equal(rejected.status, 200, rejected.text);
    assert.equal(rejected.body.state, 'rejected');
    const status = await gw.call('GET', `/v1/batches/${id}`, keys.client);
    assert.equal(status.status, 410);
    assert.equal(outcomeCode(status.body), 'output_rejected');
    for (const name of ['output.ndjson', 'errors.ndjson']) {
      const res = await file(id, name);
      assert.equal(res.status, 410, name);
      assert.equal(outcomeCode(res.body), 'output_rejected');
    }
    const late = await decide(id, keys.reviewer2, 'approve');
    assert.equal(late.status, 409, 'a rejection is final');
    assert.equal((await file(id, 'output.ndjson')).status, 410);
    const audit = (await allAudit(gw, keys.admin)).filter((e) => e.target === id && e.action.startsWith('batch.'));
    assert.deepEqual(
      audit.map((e) => [e.action, e.actor]),
      [
        ['batch.submit', 'client'],
        ['batch.hold', 'api:client'],
        ['batch.review.reject', 'reviewer'],
      ],
    );
  });

  test('nobody decides a run they requested (an admin who asked for a run included)', async () => {
    await placeDischarges(dataDir, 'admin');
    const id = await submit('readmission', 'discharges.ndjson', keys.admin);
    assert.equal((await settled(id, keys.admin)).body.state, 'awaiting_review');
    const own = await decide(id, keys.admin, 'approve');
    assert.equal(own.status, 403, own.text);
    assert.equal(own.body.code, 'forbidden');
    assert.equal((await decide(id, keys.reviewer, 'approve')).status, 200, 'another reviewer may');
  });

  test('bad decisions are 4xx problems', async () => {
    const cases: Array<[unknown, number, string]> = [
      [{ decision: 'amend', reason: 'x' }, 400, 'invalid_request'],
      [{ decision: 'approve' }, 400, 'invalid_request'],
      [{ decision: 'approve', reason: '   ' }, 400, 'invalid_request'],
      [{ decision: 'approve', reason: 'ok', extra: 1 }, 400, 'invalid_request'],
    ];
    for (const [body, status, code] of cases) {
      const res = await gw.call('POST', `/v1/batch-reviews/${runId}/decision`, keys.reviewer, body);
      assert.equal(res.status, status, JSON.stringify(body));
      assert.equal(res.body.code, code);
    }
    const missing = await decide('no-such-run', keys.reviewer, 'approve');
    assert.equal(missing.status, 404);
    assert.equal((await gw.call('GET', '/v1/batch-reviews/%2e%2e', keys.reviewer)).status, 404);
    assert.equal((await gw.call('GET', '/v1/batch-reviews?limit=0', keys.reviewer)).status, 400);
    assert.equal((await gw.call('GET', '/v1/batch-reviews?model=nope', keys.reviewer)).status, 404);
  });
});

describe('rows above the threshold held for review', { timeout: HANG_GUARD_MS }, () => {
  test('the rows below are released at once, the held ones only after approval', async () => {
    const id = await submit('news2', 'news2.ndjson');
    const status = await settled(id);
    assert.equal(status.status, 200, 'the released part is a completed run');
    const review = status.body.extension.review;
    assert.equal(review.hold, 'above-threshold');
    assert.equal(review.state, 'awaiting_review');
    assert.equal(status.body.output.length, 1, 'only the released rows are listed');
    const released = await download(gw, keys.client, pathOf(status.body.output[0].url));
    const held = review.heldRows as number;
    assert.ok(held > 0 && held < NEWS2_ROWS, `some rows held (${held})`);
    assert.equal(released.length + held, NEWS2_ROWS);
    // NEWS2's own total decides, not the gateway's flag: below 5 released, 5 or more held
    for (const row of released) {
      assert.ok((row.prediction as { news2Total: number }).news2Total < 5, `${row.id} is below the threshold`);
    }
    const refused = await file(id, 'output.held.ndjson');
    assert.equal(refused.status, 409);
    assert.equal(outcomeCode(refused.body), 'awaiting_review');

    const summary = await gw.call('GET', `/v1/batch-reviews/${id}`, keys.reviewer);
    assert.deepEqual(summary.body.rows, { scored: NEWS2_ROWS, aboveThreshold: held, held });
    for (const row of summary.body.sample) assert.ok(row.prediction.news2Total >= 5, 'the sample is of held rows');

    assert.equal((await decide(id, keys.reviewer, 'approve', 'escalations checked')).status, 200);
    const after = await gw.call('GET', `/v1/batches/${id}`, keys.client);
    assert.equal(after.body.extension.review.state, 'approved');
    const heldFile = after.body.output.find((o: { url: string }) => o.url.endsWith('/output.held.ndjson'));
    assert.ok(heldFile, 'the held rows are listed once approved');
    assert.equal(heldFile.count, held);
    const heldRows = await download(gw, keys.client, pathOf(heldFile.url));
    assert.equal(heldRows.length, held);
    for (const row of heldRows) assert.ok((row.prediction as { news2Total: number }).news2Total >= 5);
    const ids = new Set([...released, ...heldRows].map((r) => r.id));
    assert.equal(ids.size, NEWS2_ROWS, 'every row once, released or held');
  });

  test('a run with no row at or above the threshold holds nothing and waits for nobody', async () => {
    const id = await submit('news2', 'calm.ndjson');
    const status = await settled(id);
    assert.equal(status.status, 200);
    assert.equal(status.body.extension.review.state, 'nothing_held');
    assert.equal(status.body.extension.review.heldRows, 0);
    assert.equal((await download(gw, keys.client, pathOf(status.body.output[0].url))).length, 6);
    const list = await gw.call('GET', '/v1/batch-reviews?model=news2', keys.reviewer);
    assert.ok(!list.body.items.some((i: { runId: string }) => i.runId === id), 'not in the queue');
    assert.equal((await gw.call('GET', `/v1/batch-reviews/${id}`, keys.reviewer)).status, 404);
  });

  test('rejected: the released rows stay served, the held ones never are', async () => {
    const id = await submit('news2', 'news2.ndjson');
    await settled(id);
    assert.equal((await decide(id, keys.reviewer, 'reject', 'thresholds under review')).status, 200);
    assert.equal((await file(id, 'output.ndjson')).status, 200);
    const held = await file(id, 'output.held.ndjson');
    assert.equal(held.status, 410);
    assert.equal(outcomeCode(held.body), 'output_rejected');
    const status = await gw.call('GET', `/v1/batches/${id}`, keys.client);
    assert.equal(status.body.extension.review.state, 'rejected');
    assert.equal(status.body.output.length, 1);
  });
});

describe('held batch output on the review desk', { timeout: HANG_GUARD_MS }, () => {
  test('the queue lists it; its page shows the counts and a sample; the form decides it through the same service', async () => {
    const id = await submit('readmission', 'discharges.ndjson');
    assert.equal((await settled(id)).body.state, 'awaiting_review');
    const desk = new FormClient(gw.url);
    assert.equal((await desk.request('POST', '/desk/sign-in', { credential: keys.reviewer2 })).status, 303);
    const queue = await desk.request('GET', '/desk/reviews');
    assert.equal(queue.status, 200);
    assert.match(queue.text, /Batch output waiting for review \(\d+\)/);
    assert.ok(queue.text.includes(`href="/desk/batch-reviews/${id}"`), 'the held run is listed');
    const page = await desk.request('GET', `/desk/batch-reviews/${id}`);
    assert.equal(page.status, 200);
    assert.match(page.text, /195 scored, \d+ at or above the threshold, 195 held/);
    assert.equal((page.text.match(/<tr><td>/g) ?? []).length, 10, 'ten sample rows');
    const csrf = FormClient.csrfOf(page.text);
    const noToken = await desk.request('POST', `/desk/batch-reviews/${id}`, { decision: 'approve', reason: 'ok' });
    assert.equal(noToken.status, 403, 'no CSRF token, no decision');
    const sent = await desk.request('POST', `/desk/batch-reviews/${id}`, { decision: 'approve', reason: 'ok', csrf });
    assert.equal(sent.status, 303, sent.text);
    const hold = await gw.call('GET', `/v1/batch-reviews/${id}`, keys.reviewer);
    assert.equal(hold.body.state, 'approved');
    assert.equal(hold.body.decision.by, 'reviewer-2', 'the signed-in person decided');
    const again = await desk.request('POST', `/desk/batch-reviews/${id}`, { decision: 'reject', reason: 'no', csrf });
    assert.equal(again.status, 409);
    assert.match(again.text, /already decided/);
    assert.equal((await file(id, 'output.ndjson')).status, 200);
  });
});
