/**
 * Bedside first, for batch runs beside the gateway: a run's chunks wait while the gateway's event loop is busy (its
 * utilization over TRIAGE_BATCH_PACE_UTILIZATION), before bedside answers show any delay. A noisy neighbour holds the
 * loop most of the time: the run still completes (a chunk waits a second at most) and its waiting is counted.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../src/platform/config.ts';
import { Pressure, pressureReader } from '../src/platform/pressure.ts';
import {
  buildGateway,
  makeKeys,
  metricValue,
  news2Row,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForRun,
} from './support/index.ts';

/** Holds the event loop `busyMs` out of every `busyMs + 5` ms, until stopped: a loop busy, barely delayed. */
function noisyNeighbour(busyMs: number): () => void {
  const timer = setInterval(() => {
    const until = performance.now() + busyMs;
    while (performance.now() < until) {
      // busy: the event loop is held, as a stream of bedside requests holds it
    }
  }, 5);
  return () => clearInterval(timer);
}

describe('TRIAGE_BATCH_PACE_UTILIZATION', () => {
  it('0.8 by default, 0-1, anything else refused', () => {
    assert.equal(loadConfig({}).batchPaceUtilization, 0.8);
    assert.equal(loadConfig({ TRIAGE_BATCH_PACE_UTILIZATION: '1' }).batchPaceUtilization, 1);
    assert.throws(() => loadConfig({ TRIAGE_BATCH_PACE_UTILIZATION: '1.5' }));
    assert.throws(() => loadConfig({ TRIAGE_BATCH_PACE_UTILIZATION: 'busy' }));
  });
});

describe('the event loop utilization, as a batch thread reads it', () => {
  it('rises while the loop is held and falls once it is free', async () => {
    const pressure = new Pressure({ thresholdMs: 10_000, everyMs: 50 });
    const read = pressureReader(pressure.buffer);
    try {
      const stop = noisyNeighbour(20);
      try {
        await waitFor(() => read.utilization() > 0.5, 'the busy loop to show');
        assert.ok(read.delayMs() < 10_000, 'busy, not delayed past the threshold');
      } finally {
        stop();
      }
      await waitFor(() => read.utilization() < 0.5, 'the loop to be free again');
    } finally {
      pressure.close();
    }
  });
});

describe('a batch run beside a busy gateway', () => {
  const keys = makeKeys();
  const ROWS = 400;
  let gw: TestGateway;
  let modelsDir: string;
  let dataDir: string;

  before(async () => {
    modelsDir = await tempModels({
      news2: (m) => {
        m.batch = { chunkSize: 50 };
      },
    });
    dataDir = await tempDir('batch-pacing');
    const lines = Array.from({ length: ROWS }, (_, i) => JSON.stringify({ id: `p-${i}`, ...news2Row(i) }));
    await mkdir(path.join(dataDir, 'clients', 'client'), { recursive: true });
    await writeFile(path.join(dataDir, 'clients', 'client', 'paced.ndjson'), `${lines.join('\n')}\n`);
    // the delay threshold stays out of reach (the support's default): only the utilization can pace the run
    gw = await buildGateway({ keys, modelsDir, dataDir, workers: ['batch'], batchPaceUtilization: 0.3 });
  });

  after(async () => {
    await gw?.close();
    await removeDir(modelsDir);
    await removeDir(dataDir);
  });

  it('waits between chunks while the loop is busy, completes, and counts the wait', async () => {
    const stop = noisyNeighbour(20);
    try {
      const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
        input: { path: 'paced.ndjson', format: 'ndjson' },
      });
      assert.equal(res.status, 202, res.text);
      const { final } = await waitForRun(gw, keys.client, res.body.id);
      assert.equal(final.status, 200, final.text);
      assert.equal(final.body.output[0].count, ROWS, 'every row scored');
    } finally {
      stop();
    }
    const metrics = await gw.deps.metrics.registry.metrics();
    const waited = metricValue(metrics, 'triage_batch_yield_seconds_total', { model: 'news2' }) ?? 0;
    assert.ok(waited > 0.1, `chunks waited for the busy loop (${waited} s)`);
    assert.ok(metricValue(metrics, 'triage_event_loop_utilization_ratio') !== undefined, 'the utilization is exposed');
  });
});
