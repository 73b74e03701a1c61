/**
 * One catalog: a routing change made through the API on the gateway is what a worker in ANOTHER process uses. A real
 * worker process (`node --import tsx workers/main.ts inference,batch`) shares the gateway's Redis prefix; the gateway
 * runs no workers. After a promotion through the API, the next scheduled batch slot scores with the promoted
 * version (it took the manifest's primary before), and async jobs score on it and mirror to the shadows set through
 * the API.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  buildGateway,
  deletePrefix,
  download,
  fireSlot,
  MODELS_DIR,
  makeKeys,
  makePrefix,
  REDIS_URL,
  REPO_DIR,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForRun,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('routing-follow');
let modelsDir: string;
let dataDir: string;
let gw: TestGateway;
let worker: { child: ChildProcess; output: string[]; exited: Promise<unknown> } | undefined;

/** Version 2 of a bundled model: the same artifact under a second version id, with release evidence of its own. */
// biome-ignore lint/suspicious/noExplicitAny: the manifest is edited as plain YAML data
function withVersion2(m: any): void {
  const v1 = m.versions.find((v: { version: string }) => v.version === '1');
  m.versions.push({
    ...v1,
    version: '2',
    description: 'the same weights, released again as version 2',
    evidence: { ...v1.evidence, approvedAt: '2026-11-29T10:00:00+00:00', rollbackTarget: '1' },
  });
}

before(async () => {
  modelsDir = await tempModels({
    'note-triage': withVersion2,
    readmission: withVersion2, // its nightly schedule (02:30) is replaced below by one that only the test fires
  });
  dataDir = await tempDir('routing-follow');
  await mkdir(path.join(dataDir, 'inputs'), { recursive: true });
  await copyFile(
    path.join(MODELS_DIR, 'readmission', 'sample-discharges.ndjson'),
    path.join(dataDir, 'inputs', 'discharges.ndjson'),
  );
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: [] });

  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('TRIAGE_') && !k.startsWith('NODE_TEST')) env[k] = v;
  }
  Object.assign(env, {
    TRIAGE_ENV: 'production',
    TRIAGE_REDIS_URL: REDIS_URL,
    TRIAGE_REDIS_PREFIX: prefix,
    TRIAGE_MODELS_DIR: modelsDir,
    TRIAGE_DATA_DIR: dataDir,
    TRIAGE_API_KEYS: keys.yaml,
    TRIAGE_WORKER_METRICS_PORT: '0',
    TRIAGE_ONNX_THREADS: '1',
    TRIAGE_LOG_LEVEL: 'info',
  });
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/main.ts', 'inference,batch'], {
    cwd: REPO_DIR,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  child.stdout?.on('data', (d: Buffer) => output.push(d.toString()));
  child.stderr?.on('data', (d: Buffer) => output.push(d.toString()));
  worker = { child, output, exited: new Promise((resolve) => child.once('exit', resolve)) };
  await waitFor(
    () => output.join('').includes('workers started') || child.exitCode !== null,
    'the worker process to start',
    30_000,
  );
  assert.equal(child.exitCode, null, `the worker process exited: ${output.join('')}`);
});

after(async () => {
  if (worker && worker.child.exitCode === null) {
    worker.child.kill('SIGTERM');
    await worker.exited;
  }
  await gw?.close();
  await deletePrefix(prefix);
  await removeDir(modelsDir);
  await removeDir(dataDir);
});

async function promote(model: string, version: string) {
  const res = await gw.call('POST', `/v1/models/${model}/routing/promote`, keys.admin, {
    version,
    reason: 'CAB-42: promote through the API',
  });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.routing.primary, version);
}

describe('a promotion through the API reaches workers in another process', () => {
  test('the next scheduled batch slot scores with the promoted version', async () => {
    const put = await gw.call('PUT', '/v1/schedules/follow-slot', keys.admin, {
      model: 'readmission',
      cron: '0 0 1 1 *', // never fires by itself during the test: the slot is fired below, as BullMQ fires it
      timezone: 'UTC',
      input: { path: 'inputs/discharges.ndjson', format: 'ndjson' },
      missed: 'catch-up',
    });
    assert.equal(put.status, 201, put.text);
    await promote('readmission', '2');

    const slot = Math.floor(Date.now() / 1000) * 1000;
    const { job, runId } = await fireSlot(gw, 'readmission', 'follow-slot', slot);
    await waitFor(async () => (await job.getState()) === 'completed', 'the slot to be scored', 60_000);
    const { final: reply } = await waitForRun(gw, keys.admin, runId);
    assert.equal(reply.status, 200, reply.text);
    assert.equal(reply.body.extension.version, '2', 'the run took the routing in force, not the manifest');
    const rows = await download(gw, keys.admin, reply.body.output[0].url);
    assert.ok(rows.length > 0);
    assert.ok(rows.every((r) => r.version === '2'));
  });

  test('async jobs score on the promoted version, and mirror to the shadows set through the API', async () => {
    await promote('note-triage', '2');
    const shadow = await gw.call('PUT', '/v1/models/note-triage/routing/shadow', keys.admin, {
      versions: ['1'],
      sampleRate: 1,
      reason: 'CAB-43: keep comparing with the old version',
    });
    assert.equal(shadow.status, 200, shadow.text);

    const submitted = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, {
      input: { text: 'Crushing central chest pain radiating to the left arm, troponin raised.' },
    });
    assert.equal(submitted.status, 202, submitted.text);
    const id = submitted.body.id as string;
    await waitFor(
      async () => (await gw.call('GET', `/v1/jobs/${id}`, keys.client)).body.state === 'awaiting_review',
      'the job to be scored and held',
      60_000,
    );
    const review = await gw.call('GET', `/v1/reviews/${id}`, keys.reviewer);
    assert.equal(review.body.version, '2');
    // the worker process flushes its shadow pairs once a second
    await waitFor(
      async () => {
        const report = await gw.call('GET', '/v1/models/note-triage/shadow', keys.client);
        return report.body.shadows.some((s: { version: string; pairs: number }) => s.version === '1' && s.pairs > 0);
      },
      'the worker process to record a shadow pair for version 1',
      30_000,
    );
  });
});
