/** The gateway's side of the shadow thread (shadow-thread.ts): a bounded queue, one message a tick. */
import { Worker as ThreadWorker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { OutputTensor } from '../runtime/types.ts';
import type { CatalogModel } from './catalog.ts';
import type { EncodedInput } from './deadline.ts';
import { inputWidth } from './inputs.ts';
import { runtimeKey } from './runners.ts';
import type { ShadowResults, ShadowRuntimeSpec, ShadowStop, ShadowThreadInput, ShadowWork } from './shadow-thread.ts';

// From the sources (tests, tsx) a worker thread on Node 20 does not inherit tsx's loader: it starts at the entry that
// registers tsx (the batch thread's, which loads any module named in workerData). The compiled build runs the JS.
const FROM_SOURCES = import.meta.url.endsWith('.ts');
const THREAD_MODULE = new URL(FROM_SOURCES ? './shadow-thread.ts' : './shadow-thread.js', import.meta.url).href;
const THREAD_ENTRY = FROM_SOURCES
  ? new URL('../../workers/batch-thread-entry.mjs', import.meta.url)
  : new URL(THREAD_MODULE);
/** After the thread stopped unexpectedly, how long before another is started (a thread that cannot start must not be
 * restarted on every request). */
const RESTART_AFTER_MS = 1000;

export type OffloadOutcome = { ms: number } & (
  | { outputs: Record<string, OutputTensor>; error?: undefined }
  | { error: string; outputs?: undefined }
);

interface Job {
  id: number;
  model: string;
  spec: ShadowRuntimeSpec;
  input: EncodedInput;
  done: (outcome: OffloadOutcome) => void;
}

/**
 * Scores in-process ONNX shadow versions in one low-priority worker thread, started on first use. The event loop only
 * queues a job (no copy, no timer); once a tick the queued rows are copied into one buffer and posted, and the
 * results come back as one message per batch of runs. At most `maxInFlight` jobs per model are queued or running:
 * past it `submit` refuses and the caller sheds the mirror, so a thread starved of CPU by bedside traffic costs
 * memory that is bounded and answers that are counted, never a slower primary.
 */
export class ShadowThread {
  readonly #nice: number;
  readonly #onnxThreads: number;
  readonly #maxInFlight: number;
  readonly #logger: Logger;
  #thread: ThreadWorker | undefined;
  #stoppedAt = Number.NEGATIVE_INFINITY;
  #restart: NodeJS.Timeout | undefined;
  #queued: Job[] = [];
  #posted = new Map<number, Job>();
  #inFlight = new Map<string, number>();
  /** per catalog model (a new object when its manifest or routing changes) and version: what the thread loads */
  #specs = new WeakMap<CatalogModel, Map<string, ShadowRuntimeSpec | undefined>>();
  #nextId = 1;
  #flushing = false;
  #closed = false;

  constructor(options: { nice: number; onnxThreads: number; maxInFlight: number; logger: Logger }) {
    this.#nice = options.nice;
    this.#onnxThreads = options.onnxThreads;
    this.#maxInFlight = options.maxInFlight;
    this.#logger = options.logger;
  }

  /** Whether the thread can score this version: an in-process ONNX version with a verified artifact. */
  serves(model: CatalogModel, version: string): boolean {
    return this.#spec(model, version) !== undefined;
  }

  #spec(model: CatalogModel, version: string): ShadowRuntimeSpec | undefined {
    let versions = this.#specs.get(model);
    if (!versions) {
      versions = new Map();
      this.#specs.set(model, versions);
    }
    if (versions.has(version)) return versions.get(version);
    const spec = model.manifest.versions.find((v) => v.version === version);
    const artifact = model.loaded.artifacts.get(version);
    const runtime =
      spec?.runtime.kind === 'onnx' && artifact
        ? { key: runtimeKey(model.loaded, spec), artifact, featureCount: inputWidth(model.manifest) }
        : undefined;
    versions.set(version, runtime);
    return runtime;
  }

  /**
   * Queues one shadow score; false when the model's shadows are at their bound (the caller sheds it). `done` gets the
   * outputs or the error, and the time of the session run that scored them.
   */
  submit(model: CatalogModel, version: string, input: EncodedInput, done: Job['done']): boolean {
    if (this.#closed) return false;
    const inFlight = this.#inFlight.get(model.name) ?? 0;
    if (inFlight >= this.#maxInFlight) return false;
    const spec = this.#spec(model, version);
    if (!spec) return false;
    this.#inFlight.set(model.name, inFlight + 1);
    this.#queued.push({ id: this.#nextId++, model: model.name, spec, input, done });
    if (!this.#flushing) {
      this.#flushing = true;
      setImmediate(() => this.#flush());
    }
    return true;
  }

  #flush(): void {
    this.#flushing = false;
    if (this.#closed || this.#queued.length === 0) return;
    const thread = this.#ensureThread();
    if (!thread) return; // a restart is scheduled: the queue waits for it, bounded by maxInFlight
    const jobs = this.#queued;
    this.#queued = [];
    let size = 0;
    for (const job of jobs) size += job.input.rows * job.spec.featureCount;
    const data = new Float32Array(size);
    const runtimes = new Map<string, ShadowRuntimeSpec>();
    const work: ShadowWork['jobs'] = [];
    let at = 0;
    for (const job of jobs) {
      const width = job.input.rows * job.spec.featureCount;
      data.set(job.input.data.subarray(0, width), at);
      at += width;
      runtimes.set(job.spec.key, job.spec);
      work.push({ id: job.id, key: job.spec.key, rows: job.input.rows });
      this.#posted.set(job.id, job);
    }
    thread.postMessage({ type: 'work', jobs: work, runtimes: [...runtimes.values()], data } satisfies ShadowWork, [
      data.buffer,
    ]);
  }

  #ensureThread(): ThreadWorker | undefined {
    if (this.#thread) return this.#thread;
    const wait = this.#stoppedAt + RESTART_AFTER_MS - performance.now();
    if (wait > 0) {
      this.#restart ??= setTimeout(() => {
        this.#restart = undefined;
        this.#flush();
      }, wait);
      this.#restart.unref();
      return undefined;
    }
    const thread = new ThreadWorker(THREAD_ENTRY, {
      workerData: {
        module: THREAD_MODULE,
        nice: this.#nice,
        onnxThreads: this.#onnxThreads,
      } satisfies ShadowThreadInput,
    });
    // best-effort work: the thread never keeps a process alive
    thread.unref();
    thread.on('message', (m: ShadowResults) => this.#settle(m));
    thread.on('error', (err: Error) => {
      this.#logger.warn({ err: { message: err.message } }, 'shadow thread failed');
    });
    thread.on('exit', (code) => {
      if (this.#thread !== thread) return;
      this.#thread = undefined;
      this.#stoppedAt = performance.now();
      if (this.#closed) return;
      this.#logger.warn({ code }, 'shadow thread stopped: its shadows in flight are recorded as errors');
      const lost = [...this.#posted.values()];
      this.#posted.clear();
      for (const job of lost) this.#finish(job, { error: `shadow thread stopped (exit code ${code})`, ms: 0 });
      if (this.#queued.length > 0) this.#flush();
    });
    this.#thread = thread;
    return thread;
  }

  #settle(message: ShadowResults): void {
    for (const result of message.results) {
      if ('error' in result) {
        for (const id of result.ids) {
          const job = this.#take(id);
          if (job) this.#finish(job, { error: result.error, ms: result.ms });
        }
        continue;
      }
      let row = 0;
      result.ids.forEach((id, i) => {
        const rows = result.rows[i] as number;
        const job = this.#take(id);
        if (job) this.#finish(job, { outputs: slice(result.outputs, row, rows), ms: result.ms });
        row += rows;
      });
    }
  }

  #take(id: number): Job | undefined {
    const job = this.#posted.get(id);
    this.#posted.delete(id);
    return job;
  }

  #finish(job: Job, outcome: OffloadOutcome): void {
    this.#inFlight.set(job.model, (this.#inFlight.get(job.model) ?? 1) - 1);
    try {
      job.done(outcome);
    } catch (err) {
      // recording a shadow must never take the gateway down (this runs in the thread's message handler)
      this.#logger.warn({ model: job.model, err: { message: (err as Error).message } }, 'shadow result not recorded');
    }
  }

  /**
   * Stops the thread; shadows not yet scored are forgotten (nothing is recorded for them). The thread is asked to stop
   * and exits by itself once its run in progress is over (see ShadowStop: terminating it mid-run aborts the process);
   * resolves with its exit code, or undefined when there was none or it did not exit within `graceMs` (it is then left
   * to the process's exit, keeping nothing alive).
   */
  async close(graceMs = 5000): Promise<number | undefined> {
    this.#closed = true;
    clearTimeout(this.#restart);
    this.#queued = [];
    this.#posted.clear();
    const thread = this.#thread;
    this.#thread = undefined;
    if (!thread) return undefined;
    const exited = new Promise<number>((resolve) => thread.once('exit', resolve));
    thread.postMessage({ type: 'stop' } satisfies ShadowStop);
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      exited,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), graceMs).unref();
      }),
    ]);
    clearTimeout(timer);
    if (code === undefined) this.#logger.warn({ graceMs }, 'shadow thread did not stop in time: left to the exit');
    return code;
  }
}

/** The rows [from, from + rows) of outputs whose first dimension is the batch. */
function slice(outputs: Record<string, OutputTensor>, from: number, rows: number): Record<string, OutputTensor> {
  const out: Record<string, OutputTensor> = {};
  for (const [name, t] of Object.entries(outputs)) {
    const total = t.dims[0] ?? 0;
    const width = total > 0 ? t.data.length / total : 0;
    out[name] = { data: t.data.subarray(from * width, (from + rows) * width), dims: [rows, ...t.dims.slice(1)] };
  }
  return out;
}
