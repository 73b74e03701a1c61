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
  #scheduled = false;

  constructor(
    runtime: ModelRuntime,
    options: {
      featureCount: number;
      maxRows: number;
      maxWaitMs: number;
      observer?: BatchObserver;
      /** runs in flight at once: 1 for in-process ONNX (its run blocks the thread anyway), more for remote endpoints */
      maxConcurrentRuns?: number;
    },
  ) {
    this.#maxConcurrentRuns = options.maxConcurrentRuns ?? 1;
    this.#runtime = runtime;
    this.#featureCount = options.featureCount;
    this.#maxRows = options.maxRows;
    this.#maxWaitMs = options.maxWaitMs;
    this.#observer = options.observer;
  }

  submit(input: Float32Array, rows: number, deadline?: number): Submission {
    let entry!: Entry;
    const result = new Promise<Record<string, OutputTensor>>((resolve, reject) => {
      entry = { input, rows, deadline, cancelled: false, resolve, reject };
    });
    this.#queue.push(entry);
    this.#schedule(this.#queuedRows() >= this.#maxRows);
    return {
      result,
      cancel: () => {
        entry.cancelled = true;
      },
    };
  }

  #queuedRows(): number {
    let n = 0;
    for (const e of this.#queue) n += e.rows;
    return n;
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
        this.#queue.shift();
        next.reject(new BatchCancelled('withdrawn before it ran'));
        continue;
      }
      if (batch.length > 0 && rows + next.rows > this.#maxRows) break;
      this.#queue.shift();
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
      this.#observer?.onRun(rows, (performance.now() - started) / 1000, true);
      let offset = 0;
      for (const entry of batch) {
        entry.resolve(batch.length === 1 ? outputs : slice(outputs, offset, entry.rows, rows));
        offset += entry.rows;
      }
    } catch (err) {
      this.#observer?.onRun(rows, (performance.now() - started) / 1000, false);
      for (const entry of batch) entry.reject(err);
    } finally {
      this.#active--;
      if (this.#queue.length > 0) this.#schedule(this.#queuedRows() >= this.#maxRows);
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
