/**
 * Bedside first, by the kernel: a batch thread lowers its own nice value before it makes its runtimes, so its scoring
 * (and the ONNX threads it starts) gets the cores only when the gateway's threads leave them idle. On Linux the nice
 * value is per thread: the gateway's own threads must keep theirs.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { loadConfig } from '../src/platform/config.ts';

/** nice value of every thread of this process, by thread id (field 19 of /proc/<pid>/task/<tid>/stat) */
function threadNices(): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.set(tid, Number(fields[16]));
  }
  return out;
}

describe('batch thread priority', () => {
  it('TRIAGE_BATCH_NICE: 10 by default, 0-19, anything else refused', () => {
    assert.equal(loadConfig({}).batchNice, 10);
    assert.equal(loadConfig({ TRIAGE_BATCH_NICE: '19' }).batchNice, 19);
    assert.equal(loadConfig({ TRIAGE_BATCH_NICE: '0' }).batchNice, 0);
    assert.throws(() => loadConfig({ TRIAGE_BATCH_NICE: '-5' }));
    assert.throws(() => loadConfig({ TRIAGE_BATCH_NICE: '20' }));
  });

  it('lowers only the calling thread: the gateway thread keeps its priority', async () => {
    const before = getPriority();
    const thread = new Worker(new URL('../workers/batch-thread-entry.mjs', import.meta.url), {
      workerData: { module: new URL('./support/nice-thread.ts', import.meta.url).href, nice: 7 },
    });
    try {
      const { applied } = await new Promise<{ applied: number }>((resolve, reject) => {
        thread.once('message', resolve);
        thread.once('error', reject);
      });
      const expected = Math.max(before, 7);
      assert.equal(applied, expected);
      const nices = threadNices();
      const lowered = [...nices.values()].filter((n) => n === 7);
      if (before < 7) assert.equal(lowered.length, 1, `one thread at nice 7: ${JSON.stringify([...nices])}`);
      assert.equal(nices.get(String(process.pid)), before, 'the main thread keeps its nice value');
      assert.equal(getPriority(), before);
    } finally {
      await thread.terminate();
    }
  });
});
