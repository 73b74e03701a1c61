import { getPriority, setPriority } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Gauge, type Registry } from 'prom-client';

/**
 * Pressure on this process's event loop, the one bedside answers wait on: the event-loop delay (p99 over the last
 * sampling window). Work that can wait (shadow mirrors, batch chunks, in-process async jobs) yields while it is high,
 * so nothing else slows a bedside answer. Published in a SharedArrayBuffer too, for batch worker threads.
 */
export class Pressure {
  readonly #histogram: ReturnType<typeof monitorEventLoopDelay>;
  /** the last window's event-loop delay p99, µs (read by worker threads with Atomics) */
  readonly #shared = new Int32Array(new SharedArrayBuffer(4));
  readonly #thresholdMs: number;
  readonly #listeners: Array<(busy: boolean) => void> = [];
  #busy = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: { thresholdMs: number; everyMs?: number; registry?: Registry }) {
    this.#thresholdMs = options.thresholdMs;
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
        name: 'triage_under_pressure',
        help: '1 while the event loop is under pressure (shadows shed, batch chunks paced, in-process async paused)',
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
    return Atomics.load(this.#shared, 0) / 1000;
  }

  /** For a worker thread: `pressureReader(buffer)` there reads the same figure. */
  get buffer(): SharedArrayBuffer {
    return this.#shared.buffer as SharedArrayBuffer;
  }

  get thresholdMs(): number {
    return this.#thresholdMs;
  }

  /** Called when the pressure starts or stops. */
  onChange(listener: (busy: boolean) => void): void {
    this.#listeners.push(listener);
  }

  #sample(): void {
    // the histogram's floor is its resolution: what is above it is delay
    const p99Ms = Math.max(0, this.#histogram.percentile(99) / 1e6 - 5);
    this.#histogram.reset();
    Atomics.store(this.#shared, 0, Math.round(p99Ms * 1000));
    const busy = p99Ms > this.#thresholdMs;
    if (busy === this.#busy) return;
    this.#busy = busy;
    for (const listener of this.#listeners) listener(busy);
  }

  close(): void {
    clearInterval(this.#timer);
    this.#histogram.disable();
  }
}

/** The event-loop delay (ms) a Pressure publishes, read from a worker thread. */
export function pressureReader(buffer: SharedArrayBuffer): () => number {
  const view = new Int32Array(buffer);
  return () => Atomics.load(view, 0) / 1000;
}

/**
 * Lowers the calling thread's scheduling priority to `nice` (0-19; 0 leaves it). On Linux a nice value belongs to a
 * thread, and threads inherit it from the thread that makes them, so a batch thread that calls this first runs its
 * scoring, and the ONNX threads it makes, behind the gateway's: the kernel hands the cores to bedside work first and
 * to the batch whenever they are otherwise idle. Returns the thread's nice value now.
 */
export function lowerThreadPriority(nice: number): number {
  const current = getPriority();
  // only ever lower: a process already started nicer than asked keeps its own value
  if (nice <= current) return current;
  try {
    setPriority(nice);
    return nice;
  } catch {
    return current; // a platform that refuses it: the run goes on at the process's priority
  }
}
