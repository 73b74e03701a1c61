/**
 * Held batch output published to the requester's bucket as the clinician review releases it, on a real gateway with
 * the real BullMQ batch worker, worker threads, onnxruntime and files, against the S3 and GCS fakes that speak the
 * real protocols (test/fakes/). A whole run held for review reaches its bucket only once approved, and never once
 * rejected; an above-threshold run's released rows are published at completion and its held rows only on approval;
 * the analytics sink gets the same rows at the same moments; a publication whose uploads fail is retried by its job
 * and leaves the same objects as one that did not fail.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { batchRunView } from '../routes/batches.ts';
import { RunHoldStore } from '../src/batch/review-store.ts';
import type { BatchRun } from '../src/batch/runs.ts';
import { publishJobId } from '../workers/batch-queue.ts';
import { type BucketFakes, startBucketFakes } from './fakes/buckets.ts';
import type { GcsFake } from './fakes/gcs-fake.ts';
import type { S3Fake } from './fakes/s3-fake.ts';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  download,
  HANG_GUARD_MS,
  makeKeys,
  makePrefix,
  parseNdjson,
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
const prefix = makePrefix('review-publish');
const S3_BUCKET = 'review-s3';
const GCS_BUCKET = 'review-gcs';
const SINK = 'lake/predictions';
const NEWS2_ROWS = 120;
/** readmission's sample discharges: 195 rows scored, 5 in the error file */
const SCORED = 195;

let s3: S3Fake;
let gcs: GcsFake;
let gw: TestGateway;
let modelsDir: string;
let dataDir: string;
let fakes: BucketFakes;

before(async () => {
  fakes = await startBucketFakes([S3_BUCKET], [GCS_BUCKET]);
  ({ s3, gcs } = fakes);

  modelsDir = await tempModels(REVIEW_HOLDS);
  dataDir = await tempDir('review-publish');
  await placeDischarges(dataDir);
  await placeNews2Rows(dataDir, NEWS2_ROWS);
  gw = await buildGateway({
    prefix,
    keys,
    modelsDir,
    dataDir,
    workers: ['batch', 'maintenance'],
    config: {
      objectStores: JSON.stringify({
        s3: { region: s3.region, endpoint: s3.url, forcePathStyle: true },
        gcs: { apiEndpoint: gcs.url },
        buckets: [
          { url: `s3://${S3_BUCKET}`, clients: ['client'] },
          { url: `gs://${GCS_BUCKET}`, clients: ['client'] },
        ],
        analytics: { url: `s3://${S3_BUCKET}/${SINK}`, runs: 'all' },
      }),
      signedUrlSeconds: 300,
    },
  });
});

after(async () => {
  await gw?.close();
  await fakes?.close();
  await deletePrefix(prefix);
  await removeDir(modelsDir);
  await removeDir(dataDir);
});

async function submit(model: string, file: string, output: string): Promise<string> {
  const res = await gw.call('POST', `/v1/models/${model}/batches`, keys.client, {
    input: { path: `inputs/${file}`, format: 'ndjson' },
    output,
  });
  assert.equal(res.status, 202, res.text);
  return res.body.id as string;
}

/** The status URL's first answer once the run has left queued/running (a slow Redis's 503 is asked again). */
async function settled(id: string): Promise<Reply> {
  let last: Reply | undefined;
  await waitFor(
    async () => {
      last = await gw.call('GET', `/v1/batches/${id}`, keys.client);
      if (last.status === 503 && last.headers.get('retry-after')) return false;
      return !(last.status === 202 && (last.body.state === 'queued' || last.body.state === 'running'));
    },
    () => `run ${id} to finish scoring (last: ${last?.status} ${last?.text.slice(0, 200)})`,
    120_000,
  );
  return last as Reply;
}

const decide = (id: string, decision: string) =>
  gw.call('POST', `/v1/batch-reviews/${id}/decision`, keys.reviewer, { decision, reason: 'checked on the ward' });

const run = async (id: string) => (await gw.gateway.services.runs.get(id)) as BatchRun;

/** Waits until the decision's publish job has finished (completed, or failed for good). */
async function publishJobDone(id: string, model: string) {
  const queue = gw.gateway.services.queues.batch.for(model);
  let state = '';
  await waitFor(
    async () => {
      state = String(await (await queue.getJob(publishJobId(id)))?.getState());
      return state === 'completed' || state === 'failed';
    },
    () => `the publish job of ${id} (last: ${state})`,
    120_000,
  );
  return (await queue.getJob(publishJobId(id)))?.toJSON();
}

/** The run's folder in the bucket: `<prefix>/<run folder>/`. */
async function folderOf(id: string, under: string) {
  return `${under}/${(await run(id)).dir.split('/').pop()}/`;
}

const ndjsonIds = (text: string | undefined) => parseNdjson(text ?? '').map((r) => r.id as string);
const analyticsKeys = (id: string) => s3.keys(S3_BUCKET).filter((k) => k.startsWith(`${SINK}/`) && k.includes(id));

describe('a whole run held for review, with an S3 output location', { timeout: HANG_GUARD_MS }, () => {
  test('nothing reaches the bucket before approval; on approval the whole output is published', async () => {
    const id = await submit('readmission', 'discharges.ndjson', `s3://${S3_BUCKET}/clients/client/approved`);
    const held = await settled(id);
    assert.equal(held.status, 202, held.text);
    assert.equal(held.body.state, 'awaiting_review');
    assert.deepEqual(held.body.publication, { state: 'awaiting_review' });
    assert.ok(batchRunView.safeParse(held.body).success, 'the answer is as /openapi.json documents it');
    const folder = await folderOf(id, 'clients/client/approved');
    assert.deepEqual(
      s3.keys(S3_BUCKET).filter((k) => k.startsWith('clients/client/approved/')),
      [],
      'nothing in the bucket while the run waits for review',
    );
    assert.deepEqual(analyticsKeys(id), [], 'nor in the analytics sink');

    const approved = await decide(id, 'approve');
    assert.equal(approved.status, 200, approved.text);
    const job = await publishJobDone(id, 'readmission');
    assert.equal(job?.returnvalue, 'published', JSON.stringify(job));
    assert.deepEqual(
      s3
        .keys(S3_BUCKET)
        .filter((k) => k.startsWith('clients/client/approved/'))
        .sort(),
      [`${folder}errors.ndjson`, `${folder}manifest.json`, `${folder}output.ndjson`],
    );
    // the released content: the run's own files, as the API serves them now
    const viaApi = await download(gw, keys.client, `/v1/batches/${id}/files/output.ndjson`);
    assert.equal(viaApi.length, SCORED);
    assert.deepEqual(
      ndjsonIds(s3.object(S3_BUCKET, `${folder}output.ndjson`)?.text),
      viaApi.map((r) => r.id),
    );
    assert.equal(ndjsonIds(s3.object(S3_BUCKET, `${folder}errors.ndjson`)?.text).length, 5);
    assert.equal(s3.object(S3_BUCKET, `${folder}output.ndjson`)?.metadata['triage-run'], id);
    const manifest = JSON.parse(s3.object(S3_BUCKET, `${folder}manifest.json`)?.text ?? '{}');
    assert.equal(manifest.extension.review.state, 'approved');
    assert.equal(manifest.output[0].count, SCORED);
    // the analytics sink gets the approved rows too
    const [sinkKey, ...more] = analyticsKeys(id);
    assert.deepEqual(more, []);
    assert.match(sinkKey ?? '', new RegExp(`/model=readmission/${id}\\.ndjson$`));
    assert.equal(ndjsonIds(s3.object(S3_BUCKET, sinkKey as string)?.text).length, SCORED);

    // the run record says so, and its manifest now lists the bucket's files as signed URLs
    const status = await gw.call('GET', `/v1/batches/${id}`, keys.client);
    assert.equal(status.status, 200, status.text);
    assert.equal(status.body.extension.publication.state, 'published');
    assert.ok(Date.parse(status.body.extension.publication.at) > 0);
    assert.equal(status.body.requiresAccessToken, false);
    const signed = await fetch(status.body.output[0].url);
    assert.equal(signed.status, 200);
    assert.equal(ndjsonIds(await signed.text()).length, SCORED);
    // audited like the run's other events
    const audit = (await allAudit(gw, keys.admin)).filter((e) => e.target === id);
    assert.deepEqual(
      audit.map((e) => e.action),
      ['batch.submit', 'batch.hold', 'batch.review.approve', 'batch.publish'],
    );
    assert.match(String(audit[3]?.detail), /^published at s3:\/\/.+: 4 objects uploaded$/);
  });

  test('rejected: nothing is ever published', async () => {
    const id = await submit('readmission', 'discharges.ndjson', `s3://${S3_BUCKET}/clients/client/rejected`);
    assert.equal((await settled(id)).body.state, 'awaiting_review');
    assert.equal((await decide(id, 'reject')).status, 200);
    const job = await publishJobDone(id, 'readmission');
    assert.equal(job?.returnvalue, 'withheld', JSON.stringify(job));
    assert.equal((await run(id)).publishState, 'withheld');
    assert.deepEqual(
      s3.keys(S3_BUCKET).filter((k) => k.startsWith('clients/client/rejected/')),
      [],
    );
    assert.deepEqual(analyticsKeys(id), []);
    assert.ok(
      !s3.requests.some((r) => r.key.startsWith('clients/client/rejected/') || r.key.includes(id)),
      'not one request for the run was made to the bucket',
    );
  });

  test('a failing upload is retried by the publish job and leaves the objects whole', async () => {
    const id = await submit('readmission', 'discharges.ndjson', `s3://${S3_BUCKET}/clients/client/flaky`);
    assert.equal((await settled(id)).body.state, 'awaiting_review');
    // more failures than the SDK's own three attempts: the job's attempt fails, and the job tries again
    s3.failingWrites.set('clients/client/flaky/', 3);
    assert.equal((await decide(id, 'approve')).status, 200);
    const job = await publishJobDone(id, 'readmission');
    assert.equal(job?.returnvalue, 'published', JSON.stringify(job));
    assert.ok(Number(job?.attemptsMade) >= 2, `retried by BullMQ (${job?.attemptsMade} attempts)`);
    const folder = await folderOf(id, 'clients/client/flaky');
    const puts = s3.requests.filter((r) => r.op === 'PutObject' && r.key === `${folder}output.ndjson`);
    assert.ok(puts.length >= 4, `${puts.length} PutObject requests for the output`);
    assert.deepEqual(
      s3
        .keys(S3_BUCKET)
        .filter((k) => k.startsWith('clients/client/flaky/'))
        .sort(),
      [`${folder}errors.ndjson`, `${folder}manifest.json`, `${folder}output.ndjson`],
    );
    const viaApi = await download(gw, keys.client, `/v1/batches/${id}/files/output.ndjson`);
    assert.deepEqual(
      ndjsonIds(s3.object(S3_BUCKET, `${folder}output.ndjson`)?.text),
      viaApi.map((r) => r.id),
    );
    const record = await run(id);
    assert.equal(record.publishState, 'published');
    assert.equal(record.publishError, undefined, 'the error of the failed attempt is cleared');
    const publishes = (await allAudit(gw, keys.admin)).filter((e) => e.target === id && e.action === 'batch.publish');
    assert.equal(publishes.length, 1, 'one publication: the attempts that failed left nothing to record');
  });
});

test('a decision whose process stopped before queueing its publication is published by the maintenance sweep', {
  timeout: HANG_GUARD_MS,
}, async () => {
  const id = await submit('readmission', 'discharges.ndjson', `s3://${S3_BUCKET}/clients/client/orphaned`);
  assert.equal((await settled(id)).body.state, 'awaiting_review');
  // the decision's own atomic step (state, audit entry, outbox), as a process that stopped right after it leaves it
  const { redis, keyspace, audit, queues } = gw.gateway.services;
  const store = new RunHoldStore(redis, keyspace, audit);
  const decided = await store.decide(
    id,
    { outcome: 'approve', by: 'reviewer', reason: 'checked on the ward', at: Date.now() },
    { actor: 'reviewer', role: 'reviewer', action: 'batch.review.approve', target: id },
  );
  assert.deepEqual(decided, { ok: true });
  assert.equal(await queues.batch.for('readmission').getJob(publishJobId(id)), undefined, 'nothing queued');
  await gw.gateway.workers?.maintenance?.sweep();
  const job = await publishJobDone(id, 'readmission');
  assert.equal(job?.returnvalue, 'published', JSON.stringify(job));
  const folder = await folderOf(id, 'clients/client/orphaned');
  assert.ok(s3.object(S3_BUCKET, `${folder}output.ndjson`), 'published');
  assert.deepEqual(await store.toPublish(), [], 'the outbox is empty once queued');
});

describe('rows above the threshold held for review, with a GCS output location', { timeout: HANG_GUARD_MS }, () => {
  const score = (row: Record<string, unknown>) => (row.prediction as { news2Total: number }).news2Total;

  test('the rows below are published at completion, the held ones only on approval', async () => {
    const id = await submit('news2', 'news2.ndjson', `gs://${GCS_BUCKET}/clients/client/news2`);
    const status = await settled(id);
    assert.equal(status.status, 200, status.text);
    const heldRows = status.body.extension.review.heldRows as number;
    assert.ok(heldRows > 0 && heldRows < NEWS2_ROWS, `some rows held (${heldRows})`);
    const folder = await folderOf(id, 'clients/client/news2');
    const names = () =>
      gcs
        .names(GCS_BUCKET)
        .filter((n) => n.startsWith('clients/client/news2/'))
        .sort();
    assert.deepEqual(names(), [`${folder}manifest.json`, `${folder}output.ndjson`], 'the released rows only');
    const released = parseNdjson(gcs.object(GCS_BUCKET, `${folder}output.ndjson`)?.text ?? '');
    assert.equal(released.length, NEWS2_ROWS - heldRows);
    for (const row of released) assert.ok(score(row) < 5, `${row.id} is below the threshold`);
    const partial = JSON.parse(gcs.object(GCS_BUCKET, `${folder}manifest.json`)?.text ?? '{}');
    assert.deepEqual(
      partial.output.map((o: { url: string }) => o.url.split('/').pop()),
      ['output.ndjson'],
    );
    assert.equal(partial.extension.review.state, 'awaiting_review');
    assert.deepEqual(
      analyticsKeys(id).map((k) => k.split('/').pop()),
      [`${id}.ndjson`],
    );
    // the manifest signs what the bucket holds: the released rows
    assert.equal(status.body.extension.publication.state, 'partial');
    assert.equal(status.body.requiresAccessToken, false);
    assert.equal(new URL(status.body.output[0].url).origin, gcs.url);

    assert.equal((await decide(id, 'approve')).status, 200);
    const job = await publishJobDone(id, 'news2');
    assert.equal(job?.returnvalue, 'published', JSON.stringify(job));
    assert.deepEqual(names(), [`${folder}manifest.json`, `${folder}output.held.ndjson`, `${folder}output.ndjson`]);
    const held = parseNdjson(gcs.object(GCS_BUCKET, `${folder}output.held.ndjson`)?.text ?? '');
    assert.equal(held.length, heldRows);
    for (const row of held) assert.ok(score(row) >= 5, `${row.id} was held`);
    assert.equal(new Set([...released, ...held].map((r) => r.id)).size, NEWS2_ROWS, 'every row once');
    const approved = JSON.parse(gcs.object(GCS_BUCKET, `${folder}manifest.json`)?.text ?? '{}');
    assert.equal(approved.extension.review.state, 'approved');
    assert.ok(approved.output.some((o: { url: string }) => o.url.endsWith('/output.held.ndjson')));
    // the released rows were not sent again
    const starts = gcs.requests.filter((r) => r.op === 'upload-start' && r.name === `${folder}output.ndjson`);
    assert.equal(starts.length, 1);
    assert.deepEqual(
      analyticsKeys(id)
        .map((k) => k.split('/').pop())
        .sort(),
      [`${id}.held.ndjson`, `${id}.ndjson`],
    );
    const sinkHeld = analyticsKeys(id).find((k) => k.endsWith('.held.ndjson')) as string;
    assert.equal(ndjsonIds(s3.object(S3_BUCKET, sinkHeld)?.text).length, heldRows);
    const after = await gw.call('GET', `/v1/batches/${id}`, keys.client);
    assert.equal(after.body.extension.publication.state, 'published');
    const heldUrl = after.body.output.find((o: { url: string }) => new URL(o.url).pathname.includes('output.held'));
    assert.equal(new URL(heldUrl.url).origin, gcs.url, 'the held rows signed in the bucket');
  });

  test('rejected: the released rows stay, the held rows never reach the bucket', async () => {
    const id = await submit('news2', 'news2.ndjson', `gs://${GCS_BUCKET}/clients/client/news2-rejected`);
    await settled(id);
    const folder = await folderOf(id, 'clients/client/news2-rejected');
    assert.equal((await decide(id, 'reject')).status, 200);
    const job = await publishJobDone(id, 'news2');
    assert.equal(job?.returnvalue, 'partial', JSON.stringify(job));
    assert.deepEqual(
      gcs
        .names(GCS_BUCKET)
        .filter((n) => n.startsWith('clients/client/news2-rejected/'))
        .sort(),
      [`${folder}manifest.json`, `${folder}output.ndjson`],
    );
    const manifest = JSON.parse(gcs.object(GCS_BUCKET, `${folder}manifest.json`)?.text ?? '{}');
    assert.equal(manifest.extension.review.state, 'rejected', 'the manifest says the held rows will not come');
    assert.equal(manifest.output.length, 1);
    assert.ok(
      !gcs.requests.some((r) => r.name.startsWith(folder) && r.name.includes('output.held')),
      'the held file was never sent',
    );
    assert.deepEqual(
      analyticsKeys(id).map((k) => k.split('/').pop()),
      [`${id}.ndjson`],
    );
    assert.equal((await run(id)).publishState, 'partial');
  });
});
