/**
 * Scores in-process ONNX shadow versions off the gateway's event loop (src/serving/shadow-runner.ts feeds it).
 * onnxruntime-node runs a session on the calling thread, so a shadow scored on the event loop delays the next bedside
 * request by its whole run; here it delays nothing but other shadows. The thread runs at a lowered priority (its
 * ONNX threads inherit it), so when the cores are contended the kernel hands them to bedside work first.
 *
 * Work arrives as one message per gateway tick (the jobs in order, their rows back to back); what queued while a run
 * was going is scored together, one session run per version and up to MAX_ROWS rows, so a busy gateway costs the
 * thread few runs. Results go back in the order the jobs came. Nothing expires here: a starved thread's backlog is
 * bounded by the gateway's queue (it sheds past it), and a late pair compares the same input all the same.
 */

import { parentPort, workerData } from 'node:worker_threads';
import { lowerThreadPriority } from '../platform/priority.ts';
import { createOnnxRuntime } from '../runtime/onnx.ts';
import type { ModelRuntime, OutputTensor } from '../runtime/types.ts';

export interface ShadowThreadInput {
  module: string;
  /** this thread's nice value (0-19): its scoring yields the cores to bedside work */
  nice: number;
  onnxThreads: number;
}

/** A version's in-process runtime: the verified artifact and the width of its input. */
export interface ShadowRuntimeSpec {
  key: string;
  artifact: string;
  featureCount: number;
}

export interface ShadowWork {
  type: 'work';
  /** in submission order; each job's rows follow the previous job's in `data` */
  jobs: Array<{ id: number; key: string; rows: number }>;
  /** the runtimes the jobs name */
  runtimes: ShadowRuntimeSpec[];
  data: Float32Array;
}

/**
 * A run's outcome for the jobs it scored: the outputs cover their rows back to back, in the order of `ids`; `ms` is
 * the session run's own time (what the version costs, not the time it waited behind bedside work).
 */
export type ShadowResult = { ids: number[]; ms: number } & (
  | { rows: number[]; outputs: Record<string, OutputTensor> }
  | { error: string }
);

/**
 * The gateway is closing: the thread finishes the run it is in, closes its sessions and exits by itself. Never
 * terminated from outside: a thread terminated while onnxruntime scores for it aborts the whole process (the batch
 * threads' crash test saw `terminate called after throwing an instance of 'Napi::Error'`).
 */
export interface ShadowStop {
  type: 'stop';
}

export interface ShadowResults {
  type: 'results';
  results: ShadowResult[];
}

/** Most rows in one session run: enough to make a busy gateway's shadows cheap, small enough to stay responsive. */
const MAX_ROWS = 256;
/** Runtimes kept open: a reload that changes artifacts leaves the old ones to be closed as the least recently used. */
const MAX_RUNTIMES = 16;

interface QueuedJob {
  id: number;
  key: string;
  rows: number;
  data: Float32Array;
}

const input = workerData as ShadowThreadInput;
const port = parentPort;
if (!port) throw new Error('shadow-thread must run in a worker thread');
// before any session exists, so the intra-op threads ONNX makes inherit it
lowerThreadPriority(input.nice);

const specs = new Map<string, ShadowRuntimeSpec>();
const runtimes = new Map<string, Promise<ModelRuntime>>();
let queue: QueuedJob[] = [];
let draining: Promise<void> | undefined;

port.on('message', (work: ShadowWork | ShadowStop) => {
  if (work.type === 'stop') {
    void stop();
    return;
  }
  for (const spec of work.runtimes) specs.set(spec.key, spec);
  let offset = 0;
  for (const job of work.jobs) {
    const width = specs.get(job.key)?.featureCount ?? 0;
    queue.push({ ...job, data: work.data.subarray(offset, offset + job.rows * width) });
    offset += job.rows * width;
  }
  draining ??= drain();
});

/** After the run in progress (what is queued behind it is dropped: the gateway forgot it), the sessions close. */
async function stop(): Promise<void> {
  queue = [];
  await draining;
  const open = [...runtimes.values()];
  runtimes.clear();
  await Promise.all(open.map((r) => r.then((runtime) => runtime.close()).catch(() => {})));
  // nothing left to keep the thread's loop alive: it exits, code 0
  port?.close();
}

async function drain(): Promise<void> {
  try {
    while (queue.length > 0) {
      const jobs = queue;
      queue = [];
      const results: ShadowResult[] = [];
      for (const group of runs(jobs)) results.push(await score(group));
      port?.postMessage({ type: 'results', results } satisfies ShadowResults);
    }
  } finally {
    draining = undefined;
  }
}

/** Consecutive jobs of one version, up to MAX_ROWS rows a run. */
function* runs(jobs: QueuedJob[]): Generator<QueuedJob[]> {
  let group: QueuedJob[] = [];
  let rows = 0;
  for (const job of jobs) {
    if (group.length > 0 && (group[0]?.key !== job.key || rows + job.rows > MAX_ROWS)) {
      yield group;
      group = [];
      rows = 0;
    }
    group.push(job);
    rows += job.rows;
  }
  if (group.length > 0) yield group;
}

async function score(group: QueuedJob[]): Promise<ShadowResult> {
  const ids = group.map((j) => j.id);
  const started = performance.now();
  try {
    const runtime = await runtimeOf((group[0] as QueuedJob).key);
    const rows = group.map((j) => j.rows);
    const total = rows.reduce((a, b) => a + b, 0);
    let data: Float32Array;
    if (group.length === 1) data = (group[0] as QueuedJob).data;
    else {
      data = new Float32Array(group.reduce((n, j) => n + j.data.length, 0));
      let at = 0;
      for (const j of group) {
        data.set(j.data, at);
        at += j.data.length;
      }
    }
    const outputs = await runtime.run(data, total);
    return { ids, ms: performance.now() - started, rows, outputs };
  } catch (err) {
    return { ids, ms: performance.now() - started, error: (err as Error).message };
  }
}

function runtimeOf(key: string): Promise<ModelRuntime> {
  let runtime = runtimes.get(key);
  if (runtime) {
    // most recently used last: the first in the map is the one to close when too many are open
    runtimes.delete(key);
    runtimes.set(key, runtime);
    return runtime;
  }
  const spec = specs.get(key);
  if (!spec) return Promise.reject(new Error(`no runtime named ${key}`));
  runtime = createOnnxRuntime(spec.artifact, spec.featureCount, { threads: input.onnxThreads });
  runtime.catch(() => runtimes.delete(key));
  runtimes.set(key, runtime);
  if (runtimes.size > MAX_RUNTIMES) {
    const [oldest, closing] = runtimes.entries().next().value as [string, Promise<ModelRuntime>];
    runtimes.delete(oldest);
    specs.delete(oldest);
    closing.then((r) => r.close()).catch(() => {});
  }
  return runtime;
}
