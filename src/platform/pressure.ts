import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Gauge, type Registry } from 'prom-client';

/** Slots of the figures shared with worker threads: the delay p99 (µs) and the utilization (‰) of the last window. */
const DELAY_US = 0;
const UTILIZATION_PERMILLE = 1;

/**
 * Pressure on this process's event loop, the one bedside answers wait on: the event-loop delay (p99 over the last
 * sampling window). Work that can wait (shadow mirrors, in-process async jobs) yields while it is high, so nothing
 * else slows a bedside answer. The loop's utilization is published too, in a SharedArrayBuffer for batch worker
 * threads: their chunks wait while the loop is busy answering bedside requests (see workers/batch-thread-main.ts).
 */
export class Pressure {
  readonly #histogram: ReturnType<typeof monitorEventLoopDelay>;
  /** the last window's event-loop delay p99 and utilization (read by worker threads with Atomics) */
  readonly #shared = new Int32Array(new SharedArrayBuffer(8));
  #elu = performance.eventLoopUtilization();
  readonly #thresholdMs: number;
  readonly #batchPaceUtilization: number;
  readonly #listeners: Array<(busy: boolean) => void> = [];
  #busy = false;
  #timer: NodeJS.Timeout | undefined;
  readonly #lagListeners: Array<(lagMs: number) => void> = [];
  readonly #lagEveryMs: number;
  #lagTimer: NodeJS.Timeout | undefined;
  #lastLagTick = 0;
  #closed = false;

  constructor(options: {
    thresholdMs: number;
    batchPaceUtilization?: number;
    everyMs?: number;
    /** how often the loop's lag is read for `onLag` listeners (ms, default 20) */
    lagEveryMs?: number;
    registry?: Registry;
  }) {
    this.#thresholdMs = options.thresholdMs;
    this.#batchPaceUtilization = options.batchPaceUtilization ?? 1;
    this.#lagEveryMs = options.lagEveryMs ?? 20;
    this.#histogram = monitorEventLoopDelay({ resolution: 5 });
    this.#histogram.enable();
    this.#timer = setInterval(() => this.#sample(), options.everyMs ?? 250);
    this.#timer.unref();
    if (options.registry) {
      const pressure = this;
      new Gauge({
        name: 'triage_event_loop_delay_p99_seconds',
        help: 'Event-loop delay p99 over the last window: above the pressure threshold, deferrable work yields',
        registers: [options.registry],
        collect() {
          this.set(pressure.delayMs / 1000);
        },
      });
      new Gauge({
        name: 'triage_event_loop_utilization_ratio',
        help: 'Share of the last window the event loop was busy: above the batch pacing threshold, batch chunks wait',
        registers: [options.registry],
        collect() {
          this.set(pressure.utilization);
        },
      });
      new Gauge({
        name: 'triage_under_pressure',
        help: '1 while the event loop is under pressure (shadows shed, in-process async paused)',
        registers: [options.registry],
        collect() {
          this.set(pressure.busy ? 1 : 0);
        },
      });
    }
  }

  get busy(): boolean {
    return this.#busy;
  }

  get delayMs(): number {
    return Atomics.load(this.#shared, DELAY_US) / 1000;
  }

  /** the share (0-1) of the last window the event loop was busy */
  get utilization(): number {
    return Atomics.load(this.#shared, UTILIZATION_PERMILLE) / 1000;
  }

  /** For a worker thread: `pressureReader(buffer)` there reads the same figure. */
  get buffer(): SharedArrayBuffer {
    return this.#shared.buffer as SharedArrayBuffer;
  }

  get thresholdMs(): number {
    return this.#thresholdMs;
  }

  /** utilization above which batch chunks wait (1: never) */
  get batchPaceUtilization(): number {
    return this.#batchPaceUtilization;
  }

  /** Called when the pressure starts or stops. */
  onChange(listener: (busy: boolean) => void): void {
    this.#listeners.push(listener);
  }

  /**
   * Called every `lagEveryMs` with how late that tick's timer fired (ms): the event loop's lag right now, for
   * decisions that cannot wait for the 250 ms window (admission, src/platform/admission.ts). A timer fires late by
   * however long the loop was busy with other callbacks, so a lag that stays up means the loop has a standing backlog.
   * The tick starts with the first listener (or the first `lagNowMs`).
   */
  onLag(listener: (lagMs: number) => void): void {
    this.#startLagTick();
    this.#lagListeners.push(listener);
  }

  /**
   * The lag as it stands right now (ms): how much later than due the next tick already is, 0 while it is not due.
   * Read during a long turn of the loop (a burst of requests all handled in one go), it tells that the turn is long
   * before the tick can fire and say so.
   */
  lagNowMs(): number {
    this.#startLagTick();
    return Math.max(0, performance.now() - this.#lastLagTick - this.#lagEveryMs);
  }

  #startLagTick(): void {
    if (this.#lagTimer || this.#closed) return;
    this.#lastLagTick = performance.now();
    this.#lagTimer = setInterval(() => {
      const now = performance.now();
      const lagMs = Math.max(0, now - this.#lastLagTick - this.#lagEveryMs);
      this.#lastLagTick = now;
      for (const l of this.#lagListeners) l(lagMs);
    }, this.#lagEveryMs);
    this.#lagTimer.unref();
  }

  #sample(): void {
    // the histogram's floor is its resolution: what is above it is delay
    const p99Ms = Math.max(0, this.#histogram.percentile(99) / 1e6 - 5);
    this.#histogram.reset();
    Atomics.store(this.#shared, DELAY_US, Math.round(p99Ms * 1000));
    const elu = performance.eventLoopUtilization();
    const utilization = performance.eventLoopUtilization(elu, this.#elu).utilization;
    this.#elu = elu;
    Atomics.store(this.#shared, UTILIZATION_PERMILLE, Math.round(utilization * 1000));
    const busy = p99Ms > this.#thresholdMs;
    if (busy === this.#busy) return;
    this.#busy = busy;
    for (const listener of this.#listeners) listener(busy);
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    clearInterval(this.#lagTimer);
    this.#histogram.disable();
  }
}

/** The event-loop delay (ms) and utilization (0-1) a Pressure publishes, read from a worker thread. */
export function pressureReader(buffer: SharedArrayBuffer): { delayMs(): number; utilization(): number } {
  const view = new Int32Array(buffer);
  return {
    delayMs: () => Atomics.load(view, DELAY_US) / 1000,
    utilization: () => Atomics.load(view, UTILIZATION_PERMILLE) / 1000,
  };
}
