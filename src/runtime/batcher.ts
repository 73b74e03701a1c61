import type { ModelRuntime, OutputTensor } from './types.ts';

/** Why a submitted request got no score. */
export class BatchCancelled extends Error {
  override name = 'BatchCancelled';
}

interface Entry {
  input: Float32Array;
  rows: number;
  /** epoch ms: a remote runtime bounds its timeout and retries by the earliest deadline of the batch */
  deadline: number | undefined;
  cancelled: boolean;
  /** still waiting in the queue (counted in the pending rows) */
  queued: boolean;
  resolve: (out: Record<string, OutputTensor>) => void;
  reject: (err: unknown) => void;
}

export interface BatchObserver {
  onRun(rows: number, seconds: number, ok: boolean): void;
}

export interface Submission {
  result: Promise<Record<string, OutputTensor>>;
  /** Withdraws the request if it has not run yet (its deadline passed): it will never be scored. */
  cancel(): void;
}

/**
 * Dynamic batching: requests for the same model that arrive while the runtime is busy, or within `maxWaitMs`, share
 * one run of up to `maxRows` rows. onnxruntime-node's run is a native call of nearly constant cost for small
 * batches, so coalescing is what buys throughput under load. An in-process version runs one batch at a time (its run
 * occupies the thread anyway); a remote version keeps `maxConcurrentRuns` calls in flight.
 */
export class DynamicBatcher {
  readonly #runtime: ModelRuntime;
  readonly #featureCount: number;
  readonly #maxRows: number;
  readonly #maxWaitMs: number;
  readonly #observer: BatchObserver | undefined;
  #queue: Entry[] = [];
  #active = 0;
  readonly #maxConcurrentRuns: number;
  readonly #isolateFailures: boolean;
  #scheduled = false;
  /** rows waiting in the queue, withdrawn ones not counted */
  #pendingRows = 0;
  /** recent run duration, ms (moving average) */
  #runMs = 0;

  constructor(
    runtime: ModelRuntime,
    options: {
      featureCount: number;
      maxRows: number;
      maxWaitMs: number;
      observer?: BatchObserver;
      /** runs in flight at once: 1 for in-process ONNX (its run blocks the thread anyway), more for remote endpoints */
      maxConcurrentRuns?: number;
      /**
       * A failed run of several requests runs each again on its own, so that a request's failure is its own: jobs,
       * each retried or failed by itself, must not fail for a neighbour they happened to share a run with.
       */
      isolateFailures?: boolean;
    },
  ) {
    this.#maxConcurrentRuns = options.maxConcurrentRuns ?? 1;
    this.#isolateFailures = options.isolateFailures ?? false;
    this.#runtime = runtime;
    this.#featureCount = options.featureCount;
    this.#maxRows = options.maxRows;
    this.#maxWaitMs = options.maxWaitMs;
    this.#observer = options.observer;
  }

  submit(input: Float32Array, rows: number, deadline?: number): Submission {
    let entry!: Entry;
    const result = new Promise<Record<string, OutputTensor>>((resolve, reject) => {
      entry = { input, rows, deadline, cancelled: false, queued: true, resolve, reject };
    });
    this.#queue.push(entry);
    this.#pendingRows += rows;
    this.#schedule(this.#pendingRows >= this.#maxRows);
    return {
      result,
      cancel: () => {
        if (entry.cancelled) return;
        entry.cancelled = true;
        if (entry.queued) this.#pendingRows -= entry.rows;
      },
    };
  }

  /**
   * About how long, in ms, before `rows` more rows would be scored: the runs needed to clear what waits (in batches
   * of `maxRows`, `maxConcurrentRuns` at a time) and its own, behind the runs in progress, at the recent run
   * duration. What admission compares with a request's deadline. 0 when nothing is ahead of it (a request that would
   * run at once is never refused on an estimate) and until a run has been timed.
   */
  expectedWaitMs(rows: number): number {
    if (this.#runMs === 0 || (this.#pendingRows === 0 && this.#active < this.#maxConcurrentRuns)) return 0;
    const runsAhead =
      Math.ceil((this.#pendingRows + rows) / this.#maxRows) + (this.#active >= this.#maxConcurrentRuns ? 1 : 0);
    return (runsAhead * this.#runMs) / this.#maxConcurrentRuns + (this.#scheduled ? 0 : this.#maxWaitMs);
  }

  #take(entry: Entry): void {
    this.#queue.shift();
    if (!entry.cancelled) this.#pendingRows -= entry.rows;
    entry.queued = false;
  }

  #schedule(now: boolean): void {
    if (this.#active >= this.#maxConcurrentRuns || this.#scheduled) return;
    this.#scheduled = true;
    // setImmediate lets every request whose bytes arrived in this event-loop turn join the batch.
    if (now || this.#maxWaitMs === 0) setImmediate(() => this.#flush());
    else setTimeout(() => this.#flush(), this.#maxWaitMs);
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    const batch: Entry[] = [];
    let rows = 0;
    while (this.#queue.length > 0) {
      const next = this.#queue[0] as Entry;
      if (next.cancelled) {
        this.#take(next);
        next.reject(new BatchCancelled('withdrawn before it ran'));
        continue;
      }
      if (batch.length > 0 && rows + next.rows > this.#maxRows) break;
      this.#take(next);
      batch.push(next);
      rows += next.rows;
    }
    if (batch.length === 0) return;

    this.#active++;
    let deadline: number | undefined;
    for (const e of batch)
      if (e.deadline !== undefined && (deadline === undefined || e.deadline < deadline)) deadline = e.deadline;
    const started = performance.now();
    try {
      const input = batch.length === 1 ? (batch[0] as Entry).input : this.#concat(batch, rows);
      const outputs = await this.#runtime.run(input, rows, deadline !== undefined ? { deadline } : undefined);
      const ms = performance.now() - started;
      // a moving average: recent runs count most, one slow run does not shut the door
      this.#runMs = this.#runMs === 0 ? ms : 0.8 * this.#runMs + 0.2 * ms;
      this.#observer?.onRun(rows, ms / 1000, true);
      let offset = 0;
      for (const entry of batch) {
        entry.resolve(batch.length === 1 ? outputs : slice(outputs, offset, entry.rows, rows));
        offset += entry.rows;
      }
    } catch (err) {
      this.#observer?.onRun(rows, (performance.now() - started) / 1000, false);
      if (this.#isolateFailures && batch.length > 1) await this.#runEachAlone(batch);
      else for (const entry of batch) entry.reject(err);
    } finally {
      this.#active--;
      if (this.#queue.length > 0) this.#schedule(this.#pendingRows >= this.#maxRows);
    }
  }

  /** After a shared run failed: each request on its own, one after another, answered by its own run. */
  async #runEachAlone(batch: Entry[]): Promise<void> {
    for (const entry of batch) {
      const started = performance.now();
      try {
        const deadline = entry.deadline !== undefined ? { deadline: entry.deadline } : undefined;
        entry.resolve(await this.#runtime.run(entry.input, entry.rows, deadline));
        this.#observer?.onRun(entry.rows, (performance.now() - started) / 1000, true);
      } catch (err) {
        this.#observer?.onRun(entry.rows, (performance.now() - started) / 1000, false);
        entry.reject(err);
      }
    }
  }

  #concat(batch: Entry[], rows: number): Float32Array {
    const input = new Float32Array(rows * this.#featureCount);
    let offset = 0;
    for (const entry of batch) {
      input.set(entry.input, offset);
      offset += entry.input.length;
    }
    return input;
  }
}

function slice(
  outputs: Record<string, OutputTensor>,
  start: number,
  count: number,
  totalRows: number,
): Record<string, OutputTensor> {
  const out: Record<string, OutputTensor> = {};
  for (const [name, t] of Object.entries(outputs)) {
    const perRow = totalRows === 0 ? 0 : t.data.length / totalRows;
    out[name] = { data: t.data.subarray(start * perRow, (start + count) * perRow), dims: [count, ...t.dims.slice(1)] };
  }
  return out;
}
