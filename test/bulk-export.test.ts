/**
 * FHIR Bulk Data exports as batch inputs, against a FHIR server fake on a real socket (test/fakes/bulk-fhir-fake.ts):
 * SMART Backend Services and static bearer tokens, kick-off at each level with its parameters, slow exports polled
 * as Retry-After says, files streamed in and scored like the same export read from a file, the export recorded in
 * the manifest, scheduled runs asking `_since` their last success, and each failure an OperationOutcome naming its
 * step. Credentials never reach a log line.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { outcomeCode } from '../src/fhir/operation-outcome.ts';
import { type BulkFake, startBulkFake } from './fakes/bulk-fhir-fake.ts';
import { AS_OF, P_FEVER, P_SEPSIS } from './fhir-support.ts';
import { buildIngressGateway, exportLines, smartKeyPair } from './ingress-support.ts';
import {
  captureLogs,
  deletePrefix,
  fireSlot,
  makeKeys,
  makePrefix,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForRun,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('bulk-export');
const STATIC_TOKEN = `static-${'s3cr3t'.repeat(4)}`;
let dataDir: string;
let modelsDir: string;
let gw: TestGateway;
let ehr: BulkFake; // SMART Backend Services
let lab: BulkFake; // a static bearer token
let stuck: BulkFake; // never finishes
let privatePem: string;
const { logger, lines: logLines } = captureLogs('debug');

before(async () => {
  modelsDir = await tempModels({ news2: null });
  dataDir = await tempDir('bulk-export');
  const files = await exportLines(dataDir);
  const pair = await smartKeyPair();
  privatePem = pair.privatePem;
  // what changed since the last export: the two admissions' added readings only
  const changed = files.Observation.flat().filter((l) => l.includes(P_SEPSIS) || l.includes(P_FEVER));
  ehr = await startBulkFake({
    auth: 'smart',
    clientId: 'triage-backend',
    publicKey: pair.publicKey,
    files: { ...files, Condition: [['{"resourceType":"Condition","id":"c1"}']] },
    changedFiles: { Observation: [changed] },
    groups: ['ward-7'],
  });
  lab = await startBulkFake({ auth: 'bearer', staticToken: STATIC_TOKEN, files, groups: ['ward-7'] });
  stuck = await startBulkFake({ auth: 'none', files });
  stuck.faults.pollsBeforeDone = 1_000_000;
  const fast = { pollSeconds: 0.1, maxPollSeconds: 5 };
  gw = await buildIngressGateway({
    prefix,
    keys,
    modelsDir,
    dataDir,
    logger,
    fhirServers: {
      servers: [
        {
          id: 'ehr',
          baseUrl: ehr.baseUrl,
          clients: ['client'],
          auth: {
            kind: 'smart-backend',
            tokenUrl: ehr.tokenUrl,
            clientId: 'triage-backend',
            privateKey: privatePem,
            keyId: 'triage-key-1',
            algorithm: 'RS384',
          },
          ...fast,
        },
        {
          id: 'lab',
          baseUrl: lab.baseUrl,
          clients: ['client'],
          auth: { kind: 'bearer', token: STATIC_TOKEN },
          ...fast,
        },
        {
          id: 'stuck',
          baseUrl: stuck.baseUrl,
          clients: ['client'],
          auth: { kind: 'none' },
          ...fast,
          timeoutMinutes: 0.02,
        },
      ],
    },
  });
});

after(async () => {
  await gw?.close();
  await Promise.all([ehr?.close(), lab?.close(), stuck?.close()]);
  await deletePrefix(prefix);
  await removeDir(dataDir);
  await removeDir(modelsDir);
});

async function exportRun(input: Record<string, unknown>, key = keys.client) {
  const res = await gw.call('POST', '/v1/models/news2/batches', key, { input, asOf: AS_OF });
  return res;
}

/** The reference: the same export read from files in the client's area. */
async function fileRunOutcomes() {
  const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
    input: { path: 'export/Observation.ndjson', format: 'fhir-ndjson' },
    asOf: AS_OF,
  });
  const { final } = await waitForRun(gw, keys.client, res.body.id);
  return final.body.extension.outcomes;
}

describe('a Bulk Data export as a batch input', () => {
  test('SMART Backend Services: kicked off, polled as Retry-After says, streamed in, scored like the file; the manifest names the export', async () => {
    ehr.faults.pollsBeforeDone = 2;
    ehr.faults.retryAfter = '1';
    const res = await exportRun({
      fhirServer: 'ehr',
      level: 'patient',
      types: ['Patient', 'Observation', 'Condition'],
    });
    assert.equal(res.status, 202, res.text);
    assert.equal(res.body.source.request.fhirServer, 'ehr');
    const progress: string[] = [];
    const { final } = await waitForRun(gw, keys.client, res.body.id, 60_000, (r) => {
      if (r.body.source?.progress) progress.push(r.body.source.progress);
    });
    assert.equal(final.status, 200, final.text);

    const kick = ehr.kickoffs.at(-1);
    assert.equal(kick?.path, '/fhir/Patient/$export');
    assert.equal(kick?.prefer, 'respond-async');
    assert.equal(kick?.query.get('_outputFormat'), 'application/fhir+ndjson');
    assert.equal(kick?.query.get('_type'), 'Patient,Observation,Condition');
    // Retry-After: 1 was honoured: no poll came sooner than a second after the one before
    const polls = ehr.polls.slice(-3);
    assert.equal(polls.length, 3);
    for (let i = 1; i < polls.length; i++)
      assert.ok((polls[i] as number) - (polls[i - 1] as number) >= 990, `poll ${i}`);
    assert.ok(
      progress.some((p) => /% exported/.test(p)),
      `X-Progress shown on the run: ${progress}`,
    );

    // every file of the types read was fetched with the token; Condition was skipped, not downloaded
    assert.deepEqual(ehr.fileRequests.map((f) => f.name).sort(), [
      'Observation-0.ndjson',
      'Observation-1.ndjson',
      'Patient-0.ndjson',
    ]);
    assert.ok(ehr.fileRequests.every((f) => f.authorized));
    assert.equal(ehr.released.length, 1, 'the export was released (DELETE) once staged');

    const source = final.body.extension.source;
    assert.equal(source.kind, 'fhir-bulk-export');
    assert.equal(source.state, 'downloaded');
    assert.match(source.transactionTime, /^\d{4}-\d{2}-\d{2}T/);
    assert.deepEqual(source.skippedTypes, ['Condition']);
    assert.deepEqual(
      source.files.map((f: { type: string }) => f.type),
      ['Patient', 'Observation', 'Observation'],
    );
    assert.deepEqual(final.body.extension.outcomes, await fileRunOutcomes());
    assert.ok(final.body.extension.outcomes.scored >= 2);
    // the staged copy is gone once the run is done
    assert.deepEqual(await readdir(path.join(dataDir, 'ingress')), []);
  });

  test('the access token is reused until it expires, and asked for again when the server refuses it', async () => {
    ehr.faults.pollsBeforeDone = 0;
    const before = ehr.tokenRequests;
    const first = await exportRun({ fhirServer: 'ehr' });
    assert.equal((await waitForRun(gw, keys.client, first.body.id)).final.status, 200);
    assert.equal(ehr.tokenRequests, before, 'the token of the previous run still stood');
    ehr.revokeTokens();
    const second = await exportRun({ fhirServer: 'ehr' });
    assert.equal((await waitForRun(gw, keys.client, second.body.id)).final.status, 200);
    assert.equal(ehr.tokenRequests, before + 1, 'one new token after the 401');
    // a token that expires within the safety margin is never reused
    ehr.faults.tokenExpiresIn = 20;
    ehr.revokeTokens();
    const third = await exportRun({ fhirServer: 'ehr' });
    assert.equal((await waitForRun(gw, keys.client, third.body.id)).final.status, 200);
    assert.ok(ehr.tokenRequests >= before + 4, `a fresh token for each step (${ehr.tokenRequests - before - 1})`);
    ehr.faults.tokenExpiresIn = 300;
  });

  test('a static bearer token, a Group export with _since and _typeFilter', async () => {
    const res = await exportRun({
      fhirServer: 'lab',
      level: 'group',
      group: 'ward-7',
      since: '2020-01-01T00:00:00Z',
      typeFilters: ['Observation?category=vital-signs'],
    });
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 200, final.text);
    const kick = lab.kickoffs.at(-1);
    assert.equal(kick?.path, '/fhir/Group/ward-7/$export');
    assert.equal(kick?.query.get('_since'), '2020-01-01T00:00:00Z');
    assert.deepEqual(kick?.query.getAll('_typeFilter'), ['Observation?category=vital-signs']);
    assert.ok(lab.fileRequests.every((f) => f.authorized));
    assert.equal(final.body.extension.source.since, '2020-01-01T00:00:00Z');
  });
});

describe('a nightly schedule asks only for what changed since its last successful run', () => {
  async function runSlot(scheduleId: string, slot: number) {
    const { job, runId } = await fireSlot(gw, 'news2', scheduleId, slot);
    await waitFor(async () => ['completed', 'failed'].includes(await job.getState()), `slot ${slot}`, 60_000);
    return gw.gateway.services.runs.get(runId);
  }

  test('the first slot exports everything; the next asks _since the first export, and a failed slot does not move it', async () => {
    const put = await gw.call('PUT', '/v1/schedules/ehr-nightly', keys.admin, {
      model: 'news2',
      cron: '0 0 1 1 *',
      timezone: 'UTC',
      input: { fhirServer: 'ehr', level: 'system', since: 'last-success' },
      readers: ['client'],
    });
    assert.equal(put.status, 201, put.text);
    const slot = Math.floor(Date.now() / 1000) * 1000;
    const first = await runSlot('ehr-nightly', slot);
    assert.equal(first?.state, 'completed', String(first?.error));
    assert.equal(ehr.kickoffs.at(-1)?.path, '/fhir/$export');
    assert.equal(ehr.kickoffs.at(-1)?.query.has('_since'), false);
    const since = first?.source?.transactionTime;

    ehr.faults.exportError = true;
    const failed = await runSlot('ehr-nightly', slot + 1000);
    assert.equal(failed?.state, 'failed');
    assert.equal(ehr.kickoffs.at(-1)?.query.get('_since'), since);
    ehr.faults.exportError = false;

    const second = await runSlot('ehr-nightly', slot + 2000);
    assert.equal(second?.state, 'completed', String(second?.error));
    assert.equal(ehr.kickoffs.at(-1)?.query.get('_since'), since, 'the failed slot did not move _since');
    assert.equal(second?.source?.since, since);
    // only the changed readings came: fewer patients than the full export
    assert.ok((second?.rowsDone ?? 0) < (first?.rowsDone ?? 0), `${second?.rowsDone} < ${first?.rowsDone}`);
    const view = await gw.call('GET', `/v1/batches/${second?.id}`, keys.client);
    assert.equal(view.status, 200, view.text);
    assert.equal(view.body.extension.source.request.since, 'last-success');
    await gw.call('DELETE', '/v1/schedules/ehr-nightly', keys.admin);
  });
});

describe('each failure fails the run with an OperationOutcome naming the step', () => {
  async function failedRun(input: Record<string, unknown>) {
    const kickoffs = ehr.kickoffs.length;
    const res = await exportRun(input);
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 500, final.text);
    assert.equal(final.body.resourceType, 'OperationOutcome');
    assert.equal(outcomeCode(final.body), 'run_failed');
    const run = await gw.gateway.services.runs.get(res.body.id);
    assert.equal(run?.state, 'failed');
    return { diagnostics: final.body.issue[0].diagnostics as string, kickoffs: ehr.kickoffs.length - kickoffs };
  }

  test('a 4xx kick-off, at once and without retries', async () => {
    ehr.faults.kickoffStatus = 403;
    const { diagnostics, kickoffs } = await failedRun({ fhirServer: 'ehr' });
    ehr.faults.kickoffStatus = undefined;
    assert.match(diagnostics, /step "kick-off" failed: the server answered 403, OperationOutcome forbidden/);
    assert.equal(kickoffs, 1, 'a 4xx is not asked again');
  });

  test('an unknown group', async () => {
    const { diagnostics } = await failedRun({ fhirServer: 'ehr', level: 'group', group: 'no-such-ward' });
    assert.match(diagnostics, /step "kick-off" failed: the server answered 404/);
  });

  test('an export that errors on the server', async () => {
    ehr.faults.exportError = true;
    const { diagnostics } = await failedRun({ fhirServer: 'ehr' });
    ehr.faults.exportError = false;
    assert.match(
      diagnostics,
      /step "status" failed: the export failed on the server \(500, OperationOutcome exception\)/,
    );
  });

  test('an expired file URL', async () => {
    ehr.faults.filesExpired = true;
    const { diagnostics } = await failedRun({ fhirServer: 'ehr' });
    ehr.faults.filesExpired = false;
    assert.match(diagnostics, /step "download" failed: a file URL has expired or is gone \(404\)/);
    assert.deepEqual(await readdir(path.join(dataDir, 'ingress')), [], 'nothing staged is left behind');
  });

  test('a file cut short: the patients it lost are not silently dropped, the run fails at the download', async () => {
    ehr.faults.filesCutShort = true;
    const { diagnostics, kickoffs } = await failedRun({ fhirServer: 'ehr' });
    ehr.faults.filesCutShort = false;
    assert.match(diagnostics, /step "download" failed: a \w+ file held \d+ resources, the manifest says \d+/);
    assert.equal(kickoffs, 1, 'the retries polled the same export');
  });

  test('the token endpoint refusing the client', async () => {
    ehr.faults.tokenError = 'invalid_client';
    ehr.revokeTokens();
    const { diagnostics } = await failedRun({ fhirServer: 'ehr' });
    ehr.faults.tokenError = undefined;
    assert.match(diagnostics, /step "token" failed: the token endpoint answered 401 \(invalid_client\)/);
  });

  test('an export that never completes, after the configured time', async () => {
    const res = await exportRun({ fhirServer: 'stuck' });
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 500, final.text);
    assert.match(final.body.issue[0].diagnostics, /step "status" failed: the export did not complete within/);
    assert.equal(stuck.released.length, 1, 'the abandoned export was released');
  });
});

describe('what a request may name', () => {
  test('only configured servers this client may use, never an address or a credential', async () => {
    const unknown = await exportRun({ fhirServer: 'nowhere' });
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(unknown.body.resourceType, 'OperationOutcome');
    const other = await exportRun({ fhirServer: 'ehr' }, keys.other);
    assert.equal(other.status, 404, "another client is not on the server's list");
    const address = await exportRun({ fhirServer: 'ehr', baseUrl: 'https://evil.example' });
    assert.equal(address.status, 400, address.text);
    const token = await exportRun({ fhirServer: 'ehr', token: 'x' });
    assert.equal(token.status, 400);
    const lastSuccess = await exportRun({ fhirServer: 'ehr', since: 'last-success' });
    assert.equal(lastSuccess.status, 400);
    const groupless = await exportRun({ fhirServer: 'ehr', level: 'group' });
    assert.equal(groupless.status, 400);
    const badFilter = await exportRun({ fhirServer: 'ehr', typeFilters: ['not a filter'] });
    assert.equal(badFilter.status, 400);
  });

  test('no token, private key, client assertion or status URL in any log line', () => {
    const text = logLines.join('\n');
    assert.ok(logLines.length > 0);
    assert.ok(!text.includes(STATIC_TOKEN));
    assert.ok(!text.includes('PRIVATE KEY') && !text.includes(privatePem.split('\n')[1] as string));
    assert.ok(!/eyJ[A-Za-z0-9_-]{10,}\./.test(text), 'no JWT');
    assert.ok(!text.includes('/fhir/status/') && !text.includes(ehr.baseUrl));
  });
});
