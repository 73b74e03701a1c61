/**
 * Bulk Data as the IG says, on FHIR runs: what the completion manifest lists, Expires, and errors as OperationOutcome
 * (kick-off, a failed run, a deleted run); a deterministic input failure is failed at once.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { RETENTION_MS } from '../src/batch/manifest.ts';
import { outcomeCode } from '../src/fhir/operation-outcome.ts';
import { fhirErrors } from './fhir-schema.ts';
import { AS_OF, writeExport } from './fhir-support.ts';
import {
  buildGateway,
  deletePrefix,
  makeKeys,
  makePrefix,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitForRun,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('bulk-data');
const idlePrefix = makePrefix('bulk-data-idle');
let dataDir: string;
let modelsDir: string;
let gw: TestGateway;
let idle: TestGateway; // no worker: its runs stay queued

before(async () => {
  modelsDir = await tempModels({ news2: null, deterioration: null });
  dataDir = await tempDir('fhir-data');
  await writeExport(dataDir);
  await writeFile(path.join(dataDir, 'clients', 'client', 'bad-header.csv'), 'id,"pulse\n1,70\n');
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: ['batch'] });
  idle = await buildGateway({ prefix: idlePrefix, keys, modelsDir, dataDir, workers: [] });
});

after(async () => {
  await gw?.close();
  await idle?.close();
  await deletePrefix(prefix);
  await deletePrefix(idlePrefix);
  await removeDir(dataDir);
  await removeDir(modelsDir);
});

describe('Bulk Data manifests', () => {
  test('a run that scored nobody lists no output file; every patient is in the error file', async () => {
    const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'export/Observation.ndjson', format: 'fhir-ndjson' },
      asOf: '2010-01-01T00:00:00.000Z',
    });
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 200, final.text);
    assert.deepEqual(final.body.output, []);
    assert.deepEqual(final.body.extension.outcomes, { scored: 0, insufficient: 7, failed: 0 });
    assert.equal(final.body.error[0].count, 7);
  });

  test('past its Expires, a run and its files are gone (404)', async () => {
    const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'export/Observation.ndjson', format: 'fhir-ndjson' },
      asOf: AS_OF,
    });
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 200, final.text);
    const file = final.body.output[0].url;
    assert.equal((await gw.call('GET', file, keys.client)).status, 200);
    // as if finished just over the retention ago
    await gw.gateway.services.runs.update(res.body.id, { finishedAt: Date.now() - RETENTION_MS - 1000 });
    const gone = await gw.call('GET', `/v1/batches/${res.body.id}`, keys.client);
    assert.equal(gone.status, 404);
    assert.equal(outcomeCode(gone.body), 'not_found');
    assert.equal((await gw.call('GET', file, keys.client)).status, 404);
  });
});

describe('Bulk Data errors', () => {
  test('a kick-off error is an OperationOutcome', async () => {
    const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'export/Observation.ndjson', format: 'parquet' },
    });
    assert.equal(res.status, 400);
    assert.equal(res.body.resourceType, 'OperationOutcome');
    assert.equal(outcomeCode(res.body), 'invalid_request');
    assert.deepEqual(fhirErrors(res.body), []);
    // a file that is not in the caller's data area is a 404, the same as one that does not exist
    const missing = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'nope.ndjson', format: 'fhir-ndjson' },
    });
    assert.equal(missing.status, 404);
    assert.equal(outcomeCode(missing.body), 'not_found');
    assert.deepEqual(fhirErrors(missing.body), []);
  });

  test('a malformed CSV header fails the run at once (one attempt), with an OperationOutcome', async () => {
    const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'bad-header.csv', format: 'csv' },
    });
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 500);
    assert.equal(outcomeCode(final.body), 'run_failed');
    assert.match(final.body.issue[0].diagnostics, /CSV header/);
    assert.deepEqual(fhirErrors(final.body), []);
    // the run's job, on its model's shard queue (found from the run id)
    const job = await gw.gateway.services.queues.batch.getJob(`run-${res.body.id}`);
    assert.equal(job?.attemptsMade, 1, 'not retried');
    assert.equal(await job?.getState(), 'failed');
  });

  test('a deleted run is 404 with an OperationOutcome, not 410', async () => {
    const res = await idle.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'export/Observation.ndjson', format: 'fhir-ndjson' },
      asOf: AS_OF,
    });
    assert.equal(res.status, 202, res.text);
    assert.equal((await idle.call('DELETE', `/v1/batches/${res.body.id}`, keys.client)).status, 202);
    const gone = await idle.call('GET', `/v1/batches/${res.body.id}`, keys.client);
    assert.equal(gone.status, 404);
    assert.equal(gone.headers.get('content-type'), 'application/fhir+json');
    assert.equal(outcomeCode(gone.body), 'not_found');
    assert.deepEqual(fhirErrors(gone.body), []);
  });
});
