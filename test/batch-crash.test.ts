/**
 * Exactly once across a crash, with REAL processes: a batch worker (`node --import tsx workers/main.ts batch`) is
 * SIGKILLed in the middle of a 200k-row run with many small chunks; a fresh worker process picks the run up (BullMQ
 * stalled-job recovery) and resumes it from its last committed chunk. The final output holds every input row once: no
 * gaps, no duplicates. And a scheduled slot re-triggered (the same job id, so the same run id) is not scored twice.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  buildGateway,
  deletePrefix,
  download,
  fireSlot,
  makeKeys,
  makePrefix,
  news2Row,
  outcomeRowId,
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
const prefix = makePrefix('batch-crash');
/** enough chunks (120) that a kill after the fifth lands mid-run */
const ROWS = 60_000;
const CHUNK = 500;
/** every BAD-th row is out of range: the error file must resume exactly too */
const BAD = 997;

let modelsDir: string;
let dataDir: string;
let gw: TestGateway;

interface WorkerProcess {
  child: ChildProcess;
  output: string[];
  exited: Promise<number | null>;
}
const started: WorkerProcess[] = [];

/** A real worker process, batch kind only, against this file's Redis prefix and directories. */
async function startWorker(): Promise<WorkerProcess> {
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
    TRIAGE_WORKERS: 'batch',
    TRIAGE_WORKER_LOCK_MS: '1000',
    TRIAGE_ONNX_THREADS: '1',
    TRIAGE_LOG_LEVEL: 'info',
  });
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/main.ts', 'batch'], {
    cwd: REPO_DIR,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const w: WorkerProcess = {
    child,
    output: [],
    exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
  };
  child.stdout?.on('data', (d: Buffer) => w.output.push(d.toString()));
  child.stderr?.on('data', (d: Buffer) => w.output.push(d.toString()));
  started.push(w);
  await waitFor(
    () => w.output.join('').includes('workers started') || child.exitCode !== null,
    'the worker process to start',
    30_000,
  );
  assert.equal(child.exitCode, null, `the worker process exited: ${w.output.join('')}`);
  return w;
}

async function stopWorker(w: WorkerProcess, signal: NodeJS.Signals): Promise<void> {
  if (w.child.exitCode !== null || w.child.signalCode !== null) return;
  w.child.kill(signal);
  const timeout = setTimeout(() => w.child.kill('SIGKILL'), 15_000);
  await w.exited;
  clearTimeout(timeout);
}

before(async () => {
  modelsDir = await tempModels({
    news2: (m) => {
      m.batch = { chunkSize: CHUNK };
    },
  });
  dataDir = await tempDir('crash-data');
  const lines: string[] = [];
  for (let i = 0; i < ROWS; i++) {
    const row: Record<string, unknown> = { id: `c-${i}`, ...news2Row(i) };
    if (i % BAD === 0) row.respirationRate = 500;
    lines.push(JSON.stringify(row));
  }
  // big: the client's own input (its data area); small: the operator's, read by a schedule
  await mkdir(path.join(dataDir, 'clients', 'client', 'inputs'), { recursive: true });
  await writeFile(path.join(dataDir, 'clients', 'client', 'inputs', 'big.ndjson'), `${lines.join('\n')}\n`);
  await mkdir(path.join(dataDir, 'inputs'), { recursive: true });
  await writeFile(
    path.join(dataDir, 'inputs', 'small.ndjson'),
    `${Array.from({ length: 40 }, (_, i) => JSON.stringify({ id: `s-${i}`, ...news2Row(i) })).join('\n')}\n`,
  );
  // the gateway: no workers in this process, the same prefix and directories as the worker processes
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: [] });
});

after(async () => {
  for (const w of started) await stopWorker(w, 'SIGTERM');
  await gw?.close();
  await deletePrefix(prefix);
  await removeDir(modelsDir);
  await removeDir(dataDir);
});

describe('a worker process SIGKILLed mid-run', () => {
  let runId: string;

  test('the run resumes in a new process: every row exactly once, no gaps, no duplicates', async () => {
    const first = await startWorker();
    const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
      input: { path: 'inputs/big.ndjson', format: 'ndjson' },
    });
    assert.equal(res.status, 202, res.text);
    runId = res.body.id;

    // some chunks committed, far from all of them
    await waitFor(
      async () => ((await gw.gateway.services.runs.get(runId))?.chunks ?? 0) >= 5,
      'the first worker to commit some chunks',
      30_000,
    );
    first.child.kill('SIGKILL');
    await first.exited;
    assert.equal(first.child.signalCode, 'SIGKILL');
    const atCrash = await gw.gateway.services.runs.get(runId);
    assert.equal(atCrash?.state, 'running');
    assert.ok((atCrash?.rowsDone ?? ROWS) < ROWS, `killed mid-run (${atCrash?.rowsDone} of ${ROWS} rows)`);
    assert.equal(atCrash?.rowsDone, (atCrash?.chunks ?? 0) * CHUNK, 'the checkpoint moves a whole chunk at a time');
    const status = await gw.call('GET', `/v1/batches/${runId}`, keys.client);
    assert.equal(status.status, 202, 'still in progress while no worker runs it');

    await startWorker();
    // a bound that only proves "never hangs": the rest of the run takes seconds quiet, far longer on busy cores
    const { final } = await waitForRun(gw, keys.client, runId, 180_000);
    assert.equal(final.status, 200, final.text);

    const bad = Math.ceil(ROWS / BAD);
    assert.equal(final.body.output[0].count, ROWS - bad);
    assert.equal(final.body.error[0].count, bad);
    assert.equal(final.body.extension.rowsRead, ROWS);
    assert.equal(final.body.extension.chunks, ROWS / CHUNK, 'each chunk committed once');
    const run = await gw.gateway.services.runs.get(runId);
    assert.equal(run?.startedAt, atCrash?.startedAt, 'the same run, resumed');
    assert.ok((run?.rowsDone ?? 0) > (atCrash?.rowsDone ?? 0));

    const output = await download(gw, keys.client, final.body.output[0].url);
    const errors = await download(gw, keys.client, final.body.error[0].url);
    assert.equal(output.length, final.body.output[0].count, 'the manifest counts the output lines');
    assert.equal(errors.length, final.body.error[0].count, 'and the error lines');
    const seen = new Uint8Array(ROWS);
    const mark = (id: string, expectBad: boolean) => {
      const match = /^c-(\d+)$/.exec(id);
      assert.ok(match, `unexpected row id ${id}`);
      const i = Number(match[1]);
      assert.equal(seen[i], 0, `row ${id} appears twice`);
      assert.equal(i % BAD === 0, expectBad, `row ${id} is in the wrong file`);
      seen[i] = 1;
    };
    for (const row of output) mark(row.id as string, false);
    for (const outcome of errors) mark(outcomeRowId(outcome), true);
    const missing = seen.indexOf(0);
    assert.equal(missing, -1, `row c-${missing} is missing`);
    // the output is in input order (a resumed run appends where the checkpoint left off)
    const order = output.map((row) => Number(String(row.id).slice(2)));
    for (let i = 1; i < order.length; i++) {
      const [a, b] = [order[i - 1] as number, order[i] as number];
      if (!(b > a)) assert.fail(`output out of order at line ${i + 1}: c-${a} then c-${b}`);
    }
  });

  test('the worker processes log no row ids', async () => {
    // logs are written in blocks, at least every 200 ms: the completion's line may follow the run's record
    const logs = () => started.flatMap((w) => w.output).join('');
    await waitFor(() => logs().includes('batch run completed'), 'the completion to be logged');
    const logged = logs();
    assert.ok(!/"c-\d+"/.test(logged));
  });
});

describe('a scheduled slot triggered twice', () => {
  test('the same slot (same job id, so the same run id) is scored once', async () => {
    const put = await gw.call('PUT', '/v1/schedules/crash-slot', keys.admin, {
      model: 'news2',
      cron: '0 0 1 1 *', // never fires during the test
      timezone: 'UTC',
      input: { path: 'inputs/small.ndjson', format: 'ndjson' },
      missed: 'skip',
      readers: ['client'],
    });
    assert.equal(put.status, 201, put.text);
    const queue = gw.gateway.services.queues.batch.for('news2');
    const slot = Math.floor(Date.now() / 1000) * 1000;
    const jobId = `repeat:crash-slot:${slot}`;
    let runId = '';
    const fire = async () => {
      const fired = await fireSlot(gw, 'news2', 'crash-slot', slot);
      const { job } = fired;
      runId = fired.runId;
      await waitFor(async () => (await job.getState()) === 'completed', `slot job ${jobId} to complete`, 30_000);
      return (await queue.getJob(jobId))?.returnvalue;
    };

    assert.equal(await fire(), 'completed');
    const run = await gw.gateway.services.runs.get(runId);
    assert.equal(run?.state, 'completed');
    assert.equal(run?.scheduleId, 'crash-slot');
    assert.equal(run?.scored, 40);
    const file = path.join(dataDir, run?.dir ?? '', 'output.ndjson');
    const bytes = await readFile(file);
    const mtime = (await stat(file)).mtimeMs;

    await (await queue.getJob(jobId))?.remove();
    assert.equal(await fire(), 'run completed', 'the second trigger finds the slot’s run done');
    assert.deepEqual(await gw.gateway.services.runs.get(runId), run);
    assert.deepEqual(await readFile(file), bytes);
    assert.equal((await stat(file)).mtimeMs, mtime, 'the output was not written again');

    const status = await gw.call('GET', `/v1/batches/${runId}`, keys.client);
    assert.equal(status.status, 200, status.text);
    assert.equal(status.body.output[0].count, 40);
    assert.equal((await gw.call('DELETE', '/v1/schedules/crash-slot', keys.admin)).status, 204);
  });
});
