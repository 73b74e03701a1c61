/**
 * An accepted job survives a worker crash and finishes once. A REAL worker process (`workers/main.ts inference`)
 * takes the job and is SIGKILLed mid-job; another worker recovers it through BullMQ's stalled-job check.
 *
 * To crash it at an exact point of the job (the demonstration model scores in microseconds), the worker process
 * reaches Redis through a small TCP relay (test/support/relay.ts) that watches the commands going to Redis: once the worker
 * sends the transition that marks the point (e.g. the one setting `startedAt`), the relay passes that command on and
 * then stops relaying anything, so the worker is frozen right after that step, and is then killed. Nothing of the
 * worker or of Redis is stubbed.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  makeKeys,
  makePrefix,
  NOTES,
  queueIdle,
  Receiver,
  RedisRelay,
  removeDir,
  type TestGateway,
  tempModels,
  waitFor,
  waitForState,
} from './support/index.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const LOCK_MS = 500;

interface WorkerProcess {
  child: ChildProcess;
  output: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startWorkerProcess(env: Record<string, string>): WorkerProcess {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TRIAGE_')));
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/main.ts', 'inference'], {
    cwd: ROOT,
    env: { ...clean, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  child.stdout?.on('data', (d: Buffer) => output.push(d.toString()));
  child.stderr?.on('data', (d: Buffer) => output.push(d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, output, exited };
}

const keys = makeKeys();
const prefix = makePrefix('crash');
let modelsDir: string | undefined;
let receiver: Receiver;
/** the gateway: takes submissions, delivers callbacks, runs the maintenance sweep; no inference worker */
let front: TestGateway;
const children: ChildProcess[] = [];

before(async () => {
  modelsDir = await tempModels({
    'note-triage': (m) => {
      m.review = { policy: 'never' };
    },
  });
  receiver = await Receiver.start(keys.secrets.client);
  front = await buildGateway({ prefix, keys, modelsDir, workers: ['callbacks', 'maintenance'] });
});
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await front?.close();
  await receiver?.close();
  await deletePrefix(prefix);
  await removeDir(modelsDir);
});

/**
 * Starts a worker process through a fresh relay, submits one job (or waits for the stalled `existing` one to come
 * back to it), freezes the worker right after it sent the command containing `marker`, SIGKILLs it, and returns the
 * job id.
 */
async function crashMidJob(marker: string, existing?: string): Promise<{ id: string; logs: string }> {
  const local = new RedisRelay();
  await local.start();
  const frozen = local.freezeAfter(marker);
  const worker = startWorkerProcess({
    TRIAGE_ENV: 'production',
    TRIAGE_REDIS_URL: `redis://127.0.0.1:${local.port}`,
    TRIAGE_REDIS_PREFIX: prefix,
    TRIAGE_MODELS_DIR: modelsDir as string,
    TRIAGE_API_KEYS: keys.yaml,
    TRIAGE_WORKERS: 'inference',
    TRIAGE_WORKER_LOCK_MS: String(LOCK_MS),
    TRIAGE_LOG_LEVEL: 'info',
  });
  children.push(worker.child);
  try {
    await waitFor(
      () => worker.output.join('').includes('workers started') || worker.child.exitCode !== null,
      'the worker process to start',
      20_000,
    );
    assert.equal(worker.child.exitCode, null, `the worker process exited: ${worker.output.join('')}`);
    let id = existing;
    if (!id) {
      const res = await front.call('POST', '/v1/models/note-triage/jobs', keys.client, {
        input: { text: NOTES.urgent },
        callbackUrl: receiver.url('/crash'),
      });
      assert.equal(res.status, 202, res.text);
      id = res.body.id as string;
    }
    await Promise.race([
      frozen,
      worker.exited.then(() => Promise.reject(new Error(`worker exited: ${worker.output.join('')}`))),
    ]);
    worker.child.kill('SIGKILL');
    const exit = await worker.exited;
    assert.equal(exit.signal, 'SIGKILL');
    return { id, logs: worker.output.join('') };
  } finally {
    await local.close();
  }
}

async function callbacksSettled(): Promise<void> {
  await front.gateway.workers?.maintenance?.sweep();
  await waitFor(
    async () =>
      (await queueIdle(front.gateway.services.queues.callbacks)) && (await front.gateway.services.outbox.size()) === 0,
    'callbacks to settle',
  );
}

describe('a worker process killed mid-job', () => {
  test('killed right after marking the job running: another worker recovers it, it finishes once', async () => {
    const { id, logs } = await crashMidJob('startedAt');
    const record = await front.gateway.services.store.get(id);
    assert.equal(record?.state, 'running', 'the crash left the job running');
    const bull = await front.gateway.services.queues.inference.getJob(id);
    assert.equal(await bull?.getState(), 'active', 'BullMQ still holds it as active (locked by the dead worker)');
    assert.equal(receiver.deliveriesFor(id).length, 0);

    const second = await buildGateway({ prefix, keys, modelsDir, workers: ['inference'], workerLockMs: LOCK_MS });
    try {
      const job = await waitForState(front, keys.client, id, 'released', 20_000);
      assert.equal(job.result.output.predictions[0].category, 'urgent-follow-up');
      await waitFor(() => queueIdle(front.gateway.services.queues.inference), 'the inference queue to drain');
      const recovered = await front.gateway.services.queues.inference.getJob(id);
      assert.equal(await recovered?.getState(), 'completed');
      assert.equal(recovered?.stalledCounter, 1, 'recovered through the stalled-job check');
      assert.equal(recovered?.returnvalue, 'released');
    } finally {
      await second.close();
    }
    await waitFor(() => receiver.events.has(`evt-${id}-released`), 'the callback');
    await callbacksSettled();
    assert.deepEqual(
      receiver.deliveriesFor(id).map((d) => [d.id, d.verified]),
      [[`evt-${id}-released`, true]],
      'exactly one callback',
    );
    const audit = (await allAudit(front, keys.admin)).filter((e) => e.target === id);
    assert.deepEqual(
      audit.map((e) => e.action),
      ['job.release'],
    );
    assert.ok(!logs.includes(NOTES.urgent), 'the worker process logged no input text');
  });

  test('killed after releasing but before queueing the callback: the release stands, the callback goes once', async () => {
    const { id } = await crashMidJob('releasedAt');
    const record = await front.gateway.services.store.get(id);
    assert.equal(record?.state, 'released', 'the release was recorded before the crash');
    assert.equal(await front.gateway.services.outbox.has(id, 'released'), true);
    assert.equal(
      await front.gateway.services.queues.callbacks.getJob(`cb-${id}-released`),
      undefined,
      'not queued yet',
    );
    // BullMQ's completion leaves right behind the release, without waiting for it (workers/inference.ts, settle): the
    // relay may have passed it on with the release, and the job is complete; else it is still active and runs again
    const completedWithIt =
      (await (await front.gateway.services.queues.inference.getJob(id))?.getState()) === 'completed';

    const second = await buildGateway({ prefix, keys, modelsDir, workers: ['inference'], workerLockMs: LOCK_MS });
    try {
      await waitFor(
        async () => (await (await front.gateway.services.queues.inference.getJob(id))?.getState()) === 'completed',
        'the stalled job to be re-run',
        20_000,
      );
      const rerun = await front.gateway.services.queues.inference.getJob(id);
      if (completedWithIt) {
        assert.equal(rerun?.returnvalue, 'released');
        assert.equal(rerun?.stalledCounter, 0, 'completed by the worker that released it');
      } else {
        assert.equal(rerun?.stalledCounter, 1);
        assert.equal(rerun?.returnvalue, 'already released', 'the re-run did not score or release again');
      }
    } finally {
      await second.close();
    }
    // the outbox entry the crashed worker left is delivered by the maintenance sweep, once
    await callbacksSettled();
    await waitFor(() => receiver.events.has(`evt-${id}-released`), 'the recovered callback');
    await callbacksSettled();
    assert.equal(receiver.deliveriesFor(id).length, 1);
    const audit = (await allAudit(front, keys.admin)).filter((e) => e.target === id);
    assert.deepEqual(
      audit.map((e) => e.action),
      ['job.release'],
    );
    assert.equal(
      (await front.gateway.services.store.get(id))?.updatedAt,
      record?.updatedAt,
      'released once, not again',
    );
  });

  test('a job that kills every worker that takes it (3 times) ends failed, with one failed callback', async () => {
    const { id } = await crashMidJob('startedAt');
    // each new worker process recovers the stalled job through its own stalled-job check, takes it, and dies too
    await crashMidJob('startedAt', id);
    await crashMidJob('startedAt', id);
    assert.equal((await front.gateway.services.queues.inference.getJob(id))?.stalledCounter, 2);
    assert.equal((await front.gateway.services.store.get(id))?.state, 'running');

    const last = await buildGateway({ prefix, keys, modelsDir, workers: ['inference'], workerLockMs: LOCK_MS });
    try {
      // the third stall exceeds maxStalledCount: BullMQ fails the job without running it; the record must say so
      const job = await waitForState(front, keys.client, id, ['failed', 'released'], 20_000);
      assert.equal(job.state, 'failed');
      assert.match(job.error, /stalled/);
      assert.equal(job.result, undefined);
      assert.equal(await (await front.gateway.services.queues.inference.getJob(id))?.getState(), 'failed');
    } finally {
      await last.close();
    }
    await waitFor(() => receiver.events.has(`evt-${id}-failed`), 'the failed callback');
    await callbacksSettled();
    assert.deepEqual(
      receiver.deliveriesFor(id).map((d) => d.id),
      [`evt-${id}-failed`],
    );
    assert.equal(receiver.events.get(`evt-${id}-failed`)?.type, 'org.triage.job.failed');
    const audit = (await allAudit(front, keys.admin)).filter((e) => e.target === id);
    assert.deepEqual(
      audit.map((e) => e.action),
      ['job.fail'],
    );
  });
});
