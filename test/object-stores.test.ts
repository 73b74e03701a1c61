/**
 * Batch inputs and outputs in S3 and GCS buckets, through the API, on real Redis, BullMQ, worker threads and
 * onnxruntime, against local servers that speak the real protocols (test/fakes/s3-fake.ts: S3 REST with SigV4
 * verified; test/fakes/gcs-fake.ts: the GCS JSON API with the service account's JWTs and V4 signed URLs verified).
 * The SDKs find their credentials through their own default chains (AWS_* variables; GOOGLE_APPLICATION_CREDENTIALS
 * naming a service account key made here). A run reads its input from a bucket and publishes its files there (an S3
 * multipart upload, GCS resumable chunks); the manifest lists them as signed URLs that download from the fakes and
 * expire; per-client prefixes refuse what is not the caller's with the local storage's own 404.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { parseObjectStores } from '../src/batch/bucket-config.ts';
import { StorageError } from '../src/batch/storage.ts';
import { GcsStore } from '../src/batch/stores/gcs.ts';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import { ConfigError } from '../src/platform/config.ts';
import { type BucketFakes, startBucketFakes } from './fakes/buckets.ts';
import type { GcsFake } from './fakes/gcs-fake.ts';
import type { S3Fake } from './fakes/s3-fake.ts';
import type { Reply } from './support/http.ts';
import {
  buildGateway,
  deletePrefix,
  download,
  makeKeys,
  makePrefix,
  news2Row,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
} from './support/index.ts';

const base = makeKeys();
/** `client` is granted the shared area `outreach`; `other-client` may use the S3 bucket only */
const keys = {
  ...base,
  store: new ApiKeyStore([
    { id: 'client', role: 'client', sha256: hashKey(base.client), models: ['*'], dataAreas: ['outreach'] },
    { id: 'other-client', role: 'client', sha256: hashKey(base.other), models: ['*'] },
    { id: 'admin', role: 'admin', sha256: hashKey(base.admin), models: ['*'] },
  ]),
};
const prefix = makePrefix('objstore');
const S3_BUCKET = 'triage-s3';
const GCS_BUCKET = 'triage-gcs';
const URL_SECONDS = 300;
/** rows whose output passes two S3 parts (8 MiB each): ids padded so each output line is ~250 bytes */
const BIG_ROWS = 40_000;

let s3: S3Fake;
let gcs: GcsFake;
let gw: TestGateway;
let modelsDir: string;
let dataDir: string;
let fakes: BucketFakes;

const row = (i: number) => `${JSON.stringify({ id: `pt-${String(i).padStart(140, '0')}`, ...news2Row(i) })}\n`;

function bigInputSize(): number {
  let size = 0;
  for (let i = 0; i < BIG_ROWS; i++) size += Buffer.byteLength(row(i));
  return size;
}

const submit = (body: unknown, key = keys.client) => gw.call('POST', '/v1/models/news2/batches', key, body);
const input = (path: string) => ({ input: { path, format: 'ndjson' } });

before(async () => {
  // each SDK's own default chain: environment variables, and a service account key file named by one
  fakes = await startBucketFakes([S3_BUCKET, 'not-configured'], [GCS_BUCKET]);
  ({ s3, gcs } = fakes);

  s3.putGenerated(S3_BUCKET, 'clients/client/in/big.ndjson', bigInputSize(), function* () {
    for (let i = 0; i < BIG_ROWS; i++) yield row(i);
  });
  const small = [0, 1, 2, 3, 4].map((i) => JSON.stringify({ id: `s-${i}`, ...news2Row(i) })).join('\n');
  s3.put(S3_BUCKET, 'clients/other-client/in/theirs.ndjson', `${small}\n`);
  s3.put(S3_BUCKET, 'shared/outreach/cohort.ndjson', `${small}\n`);
  s3.put(S3_BUCKET, 'shared/elsewhere/cohort.ndjson', `${small}\n`);
  s3.put('not-configured', 'clients/client/in/rows.ndjson', `${small}\n`);
  // one row out of range: the run has an error file too
  gcs.put(
    GCS_BUCKET,
    'clients/client/in/rows.ndjson',
    `${small}\n${JSON.stringify({ id: 'bad', ...news2Row(9), spo2: 400 })}\n`,
  );

  modelsDir = await tempModels({ news2: (m) => Object.assign(m, { batch: { chunkSize: 4096 } }) });
  dataDir = await tempDir('objstore-data');
  await mkdir(path.join(dataDir, 'clients/client'), { recursive: true });
  gw = await buildGateway({
    prefix,
    keys: keys as typeof base,
    keyStore: keys.store,
    modelsDir,
    dataDir,
    workers: ['batch'],
    config: {
      objectStores: JSON.stringify({
        s3: { region: s3.region, endpoint: s3.url, forcePathStyle: true },
        gcs: { apiEndpoint: gcs.url },
        buckets: [
          { url: `s3://${S3_BUCKET}`, clients: ['client', 'other-client'] },
          { url: `gs://${GCS_BUCKET}`, clients: ['client'] },
        ],
        // every run's predictions also land in a date-partitioned prefix no client area covers
        analytics: { url: `s3://${S3_BUCKET}/lake/predictions`, runs: 'all' },
      }),
      signedUrlSeconds: URL_SECONDS,
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

interface ManifestFile {
  type: string;
  url: string;
  count: number;
}

/**
 * The run's final answer. While it runs: 202; a 503 with Retry-After is Redis answering slowly on a machine whose
 * cores are busy (the gateway's own contract: retry), so it is asked again.
 */
async function finished(runId: string): Promise<Reply> {
  let last: Reply | undefined;
  await waitFor(
    async () => {
      last = await gw.call('GET', `/v1/batches/${runId}`, keys.client);
      return last.status !== 202 && !(last.status === 503 && last.headers.get('retry-after'));
    },
    () => `run ${runId} to finish (last: ${last?.status} ${last?.text.slice(0, 200)})`,
    180_000,
    50,
  );
  return last as Reply;
}

async function completed(runId: string) {
  const final = await finished(runId);
  assert.equal(final.status, 200, final.text.slice(0, 500));
  return final.body as {
    requiresAccessToken: boolean;
    output: ManifestFile[];
    error: ManifestFile[];
    extension: { location: string; urlExpiresInSeconds: number };
  };
}

describe('S3', () => {
  let runId: string;
  let manifest: Awaited<ReturnType<typeof completed>>;

  before(async () => {
    const res = await submit({
      ...input(`s3://${S3_BUCKET}/clients/client/in/big.ndjson`),
      output: `s3://${S3_BUCKET}/clients/client/results/`,
    });
    assert.equal(res.status, 202, res.text);
    assert.equal(res.body.output, `s3://${S3_BUCKET}/clients/client/results`);
    runId = res.body.id;
    manifest = await completed(runId);
  });

  test('a run reads its input from the bucket, streamed, and scores every row', async () => {
    const [output] = manifest.output;
    assert.equal(output?.count, BIG_ROWS);
    assert.ok(s3.requests.some((r) => r.op === 'GetObject' && r.key === 'clients/client/in/big.ndjson'));
  });

  test('its files are published under the output prefix, the output in a multipart upload', () => {
    const folder = manifest.extension.location.replace(`s3://${S3_BUCKET}/`, '');
    assert.match(folder, new RegExp(`^clients/client/results/${runId}\\.[0-9a-f]{32}/$`));
    assert.deepEqual(
      s3
        .keys(S3_BUCKET)
        .filter((k) => k.startsWith(folder))
        .sort(),
      [`${folder}manifest.json`, `${folder}output.ndjson`],
    );
    const multipart = s3.multipartCompleted.find((m) => m.key === `${folder}output.ndjson`);
    assert.ok(multipart && multipart.parts >= 2, `multipart: ${JSON.stringify(s3.multipartCompleted)}`);
    // marked as a run's output (never an input again)
    assert.equal(s3.object(S3_BUCKET, `${folder}output.ndjson`)?.metadata['triage-run'], runId);
    const published = JSON.parse(s3.object(S3_BUCKET, `${folder}manifest.json`)?.text ?? '{}');
    assert.equal(published.output[0].count, BIG_ROWS);
  });

  test('every request the gateway made was signed with the credentials of the default chain', () => {
    const fromGateway = s3.requests.filter((r) => r.signature !== 'presigned' && r.signature !== 'expired');
    assert.ok(fromGateway.length > 0);
    assert.deepEqual(
      fromGateway.filter((r) => r.signature !== 'valid'),
      [],
    );
  });

  test('the manifest lists presigned URLs that download the output, without a token, until they expire', async () => {
    assert.equal(manifest.requiresAccessToken, false);
    assert.equal(manifest.extension.urlExpiresInSeconds, URL_SECONDS);
    const url = new URL(manifest.output[0]?.url as string);
    assert.equal(url.origin, s3.url);
    assert.equal(url.searchParams.get('X-Amz-Expires'), String(URL_SECONDS));
    const res = await fetch(url);
    assert.equal(res.status, 200);
    const lines = (await res.text()).split('\n').filter(Boolean);
    assert.equal(lines.length, BIG_ROWS);
    // the same bytes as the run's own file, served by the API
    const viaApi = await download(gw, keys.client, `/v1/batches/${runId}/files/output.ndjson`);
    assert.deepEqual(
      lines.map((l) => JSON.parse(l).id),
      viaApi.map((r) => r.id),
    );
    // tampered with: refused
    const tampered = new URL(url);
    tampered.searchParams.set('X-Amz-Expires', String(URL_SECONDS * 2));
    assert.equal((await fetch(tampered)).status, 403);
    // past its expiry (the fake's clock moved on): refused
    s3.clockSkewMs = (URL_SECONDS + 1) * 1000;
    try {
      const expired = await fetch(url);
      assert.equal(expired.status, 403);
      assert.match(await expired.text(), /Request has expired/);
    } finally {
      s3.clockSkewMs = 0;
    }
  });

  test('a run output is never an input, even named inside the caller own prefix', async () => {
    const folder = manifest.extension.location;
    const res = await submit(input(`${folder}output.ndjson`));
    assert.equal(res.status, 404, res.text);
  });
});

describe('GCS', () => {
  let runId: string;
  let manifest: Awaited<ReturnType<typeof completed>>;

  before(async () => {
    const res = await submit({
      ...input(`gs://${GCS_BUCKET}/clients/client/in/rows.ndjson`),
      output: `gs://${GCS_BUCKET}/clients/client/out`,
      asOf: '2026-11-01T08:00:00Z',
    });
    assert.equal(res.status, 202, res.text);
    runId = res.body.id;
    manifest = await completed(runId);
  });

  test('a run reads from the bucket and publishes its output and error files through resumable uploads', () => {
    assert.equal(manifest.output[0]?.count, 5);
    assert.equal(manifest.error[0]?.count, 1);
    const folder = manifest.extension.location.replace(`gs://${GCS_BUCKET}/`, '');
    assert.deepEqual(
      gcs
        .names(GCS_BUCKET)
        .filter((n) => n.startsWith(folder))
        .sort(),
      [`${folder}errors.ndjson`, `${folder}manifest.json`, `${folder}output.ndjson`],
    );
    assert.equal(gcs.object(GCS_BUCKET, `${folder}output.ndjson`)?.metadata['triage-run'], runId);
    assert.ok(gcs.requests.some((r) => r.op === 'upload-start' && r.name === `${folder}output.ndjson`));
    // every API call carried a JWT signed with the service account's key
    assert.deepEqual(
      gcs.requests.filter((r) => r.auth === 'invalid'),
      [],
    );
  });

  test('the manifest lists V4 signed URLs that download the files until they expire', async () => {
    assert.equal(manifest.requiresAccessToken, false);
    const output = new URL(manifest.output[0]?.url as string);
    assert.equal(output.origin, gcs.url);
    assert.equal(output.searchParams.get('X-Goog-Algorithm'), 'GOOG4-RSA-SHA256');
    const res = await fetch(output);
    assert.equal(res.status, 200);
    const ids = (await res.text())
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l).id);
    assert.deepEqual(ids, ['s-0', 's-1', 's-2', 's-3', 's-4']);
    const errors = await fetch(manifest.error[0]?.url as string);
    assert.equal(errors.status, 200);
    assert.match(await errors.text(), /OperationOutcome/);
    const tampered = new URL(output);
    tampered.pathname = tampered.pathname.replace('output.ndjson', 'errors.ndjson');
    assert.equal((await fetch(tampered)).status, 403);
    gcs.clockSkewMs = (URL_SECONDS + 1) * 1000;
    try {
      const expired = await fetch(output);
      assert.equal(expired.status, 400);
      assert.match(await expired.text(), /ExpiredToken/);
    } finally {
      gcs.clockSkewMs = 0;
    }
  });

  test('its predictions land in the analytics sink, partitioned by day and model', () => {
    const key = `lake/predictions/dt=2026-11-01/model=news2/${runId}.ndjson`;
    const object = s3.object(S3_BUCKET, key);
    assert.ok(object, `${key} in ${s3.keys(S3_BUCKET).filter((k) => k.startsWith('lake/'))}`);
    const ids = object.text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l).id);
    assert.deepEqual(ids, ['s-0', 's-1', 's-2', 's-3', 's-4']);
    assert.equal(object.metadata['triage-run'], runId);
  });

  test('a large upload goes in resumable chunks, and reads back whole', async () => {
    const store = new GcsStore({ apiEndpoint: gcs.url });
    const big = Buffer.alloc(20 * 1024 * 1024, 'a');
    await store.upload(GCS_BUCKET, 'clients/client/out/chunked.ndjson', Readable.from([big]), 'run-x');
    assert.equal(gcs.chunks.get('clients/client/out/chunked.ndjson'), 3);
    assert.equal(gcs.object(GCS_BUCKET, 'clients/client/out/chunked.ndjson')?.text.length, big.length);
    await assert.rejects(store.openRead(GCS_BUCKET, 'clients/client/out/chunked.ndjson'), /run outputs are not inputs/);
  });

  test('an object replaced under the read fails it with a StorageError that names neither bucket nor key', async () => {
    // the key is client-chosen and names a patient; the read's failure ends up in the run record and the log
    const key = 'clients/client/in/Quackenbush-MRN-40711213.ndjson';
    gcs.put(GCS_BUCKET, key, '{"id":"a"}\n');
    const stream = await new GcsStore({ apiEndpoint: gcs.url }).openRead(GCS_BUCKET, key);
    gcs.put(GCS_BUCKET, key, '{"id":"b"}\n'); // a new generation: the checked one is gone (404 on the download)
    const failed = await (async () => {
      for await (const _ of stream);
    })().then(
      () => assert.fail('the read of a replaced generation succeeded'),
      (err: Error) => err,
    );
    assert.ok(failed instanceof StorageError, `a StorageError: ${failed.constructor.name}`);
    assert.equal(failed.reason, 'unreadable', 'retried as before: the next attempt reads the object again');
    for (const secret of [GCS_BUCKET, 'Quackenbush', '40711213']) {
      assert.ok(!failed.message.includes(secret), `the message names ${secret}: ${failed.message}`);
    }
  });
});

describe('per-client prefixes', () => {
  test('what is not the caller own is the same 404 as a missing local file', async () => {
    const local = await submit(input('no-such-file.ndjson'));
    assert.equal(local.status, 404);
    const refused: Array<[string, string, string?]> = [
      ['another client prefix', `s3://${S3_BUCKET}/clients/other-client/in/theirs.ndjson`],
      ['traversal out of its prefix', `s3://${S3_BUCKET}/clients/client/../other-client/in/theirs.ndjson`],
      ['encoded traversal', `s3://${S3_BUCKET}/clients/client/%2e%2e/other-client/in/theirs.ndjson`],
      ['encoded slash', `s3://${S3_BUCKET}/clients/client%2f..%2fother-client/in/theirs.ndjson`],
      ['an absolute key', `s3://${S3_BUCKET}//clients/other-client/in/theirs.ndjson`],
      ['a dot segment', `s3://${S3_BUCKET}/clients/./other-client/in/theirs.ndjson`],
      ['a backslash', `s3://${S3_BUCKET}/clients/client\\..\\other-client/in/theirs.ndjson`],
      ['a shared area not granted', `s3://${S3_BUCKET}/shared/elsewhere/cohort.ndjson`],
      ['outside every area', `s3://${S3_BUCKET}/cohort.ndjson`],
      ['the analytics sink', `s3://${S3_BUCKET}/lake/predictions/dt=2026-11-01/model=news2/x.ndjson`],
      ['a bucket not configured', 's3://not-configured/clients/client/in/rows.ndjson'],
      ['a missing object', `s3://${S3_BUCKET}/clients/client/in/missing.ndjson`],
      ['a bucket not configured for the key', `gs://${GCS_BUCKET}/clients/other-client/in/rows.ndjson`, base.other],
      ['a missing GCS object', `gs://${GCS_BUCKET}/clients/client/in/missing.ndjson`],
    ];
    for (const [why, url, key] of refused) {
      const res = await submit(input(url), key);
      assert.equal(res.status, 404, `${why}: ${res.status} ${res.text}`);
      assert.deepEqual(res.body, { ...local.body, ...pick(res.body) }, why);
      assert.equal(JSON.stringify(res.body).includes('other-client'), false, why);
    }
  });

  test('a granted shared prefix is readable', async () => {
    const res = await submit(input(`s3://${S3_BUCKET}/shared/outreach/cohort.ndjson`));
    assert.equal(res.status, 202, res.text);
    const final = await finished(res.body.id);
    assert.equal(final.status, 200, final.text);
  });

  test('outputs go only under the caller own or granted prefixes', async () => {
    const from = input(`s3://${S3_BUCKET}/shared/outreach/cohort.ndjson`);
    for (const output of [
      `s3://${S3_BUCKET}/clients/other-client/results`,
      `s3://${S3_BUCKET}/clients/client/../other-client`,
      `s3://${S3_BUCKET}/batches`,
      's3://not-configured/clients/client/results',
    ]) {
      const res = await submit({ ...from, output });
      assert.equal(res.status, 404, `${output}: ${res.text}`);
    }
    const notUrl = await submit({ ...from, output: 'https://example.org/bucket' });
    assert.equal(notUrl.status, 400);
  });

  test('an object deleted after the run was accepted fails the run with a clear reason', async () => {
    s3.put(S3_BUCKET, 'clients/client/in/vanishing.ndjson', row(1));
    const res = await submit(input(`s3://${S3_BUCKET}/clients/client/in/vanishing.ndjson`));
    assert.equal(res.status, 202, res.text);
    const reads = () =>
      s3.requests.filter((r) => r.op === 'GetObject' && r.key === 'clients/client/in/vanishing.ndjson').length;
    const atSubmit = reads();
    s3.delete(S3_BUCKET, 'clients/client/in/vanishing.ndjson');
    const final = await finished(res.body.id);
    assert.equal(final.body.resourceType, 'OperationOutcome', final.text);
    assert.match(final.text, /no such object in the bucket/);
    // it will not appear by asking again: one attempt, not three
    assert.equal(reads() - atSubmit, 1);
  });
});

/** the fields of a Problem or OperationOutcome that differ per request */
function pick(body: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(body).filter(([k]) => k === 'instance' || k === 'id' || k === 'meta'));
}

test('TRIAGE_OBJECT_STORES refuses plain http off loopback, bad bucket URLs and duplicates', () => {
  assert.throws(
    () => parseObjectStores(YAML.stringify({ s3: { endpoint: 'http://minio.internal:9000' } })),
    (e: Error) => e instanceof ConfigError && /s3\.endpoint/.test(e.message),
  );
  assert.throws(() => parseObjectStores(YAML.stringify({ buckets: [{ url: 'https://bucket' }] })), ConfigError);
  assert.throws(
    () => parseObjectStores(YAML.stringify({ buckets: [{ url: 's3://a-bucket' }, { url: 's3://a-bucket' }] })),
    /appears twice/,
  );
  assert.throws(
    () => parseObjectStores(YAML.stringify({ analytics: { url: 's3://lake/predictions' } })),
    /its bucket must be one of buckets/,
  );
  assert.equal(parseObjectStores(undefined).buckets.length, 0);
});
