/**
 * Faithful test doubles around the REAL onnx runtime: they count, delay, hold or break runs, but every answer (and
 * every failure: a truncated input makes onnxruntime itself throw) comes from a real session.
 */
import type { ModelRuntime } from '../../src/runtime/types.ts';
import { onnxRuntimeFactory, type RuntimeFactory } from '../../src/serving/runners.ts';
import { sleep } from './wait.ts';

/**
 * Wraps the REAL onnx runtime: every run is recorded, and while `armed` a run can be delayed (`delayMs`) or held
 * until `release()` (after `hold()`). Unarmed (e.g. during warm-up) it passes straight through.
 */
export class RuntimeControl {
  armed = false;
  delayMs = 0;
  /** the next armed run hands the real session a truncated input, so the real runtime fails */
  corruptNext = false;
  /** runs made while armed: model name and rows */
  readonly runs: Array<{ model: string; rows: number }> = [];
  #gate: Promise<void> | undefined;
  #open: (() => void) | undefined;
  #entered: Array<() => void> = [];

  constructor(options: { armed?: boolean; delayMs?: number } = {}) {
    this.armed = options.armed ?? false;
    this.delayMs = options.delayMs ?? 0;
  }

  hold(): void {
    this.#gate = new Promise((resolve) => {
      this.#open = resolve;
    });
  }

  release(): void {
    this.#open?.();
    this.#gate = undefined;
    this.#open = undefined;
  }

  /** resolves when the next armed run starts */
  nextRun(): Promise<void> {
    return new Promise((resolve) => this.#entered.push(resolve));
  }

  factory(): RuntimeFactory {
    const real = onnxRuntimeFactory(1);
    return async (model, version) => {
      const runtime = await real(model, version);
      // only the primary is counted and held: shadow versions (deterioration mirrors v2) run untouched
      if (version.version !== model.manifest.routing.primary) return runtime;
      const name = model.manifest.name;
      const wrapped: ModelRuntime = {
        kind: 'onnx-test-wrapper',
        run: async (input, rows) => {
          if (this.armed) {
            this.runs.push({ model: name, rows });
            for (const resolve of this.#entered.splice(0)) resolve();
            if (this.#gate) await this.#gate;
            if (this.delayMs > 0) await sleep(this.delayMs);
            if (this.corruptNext) {
              this.corruptNext = false;
              return runtime.run(input.subarray(0, 1), rows);
            }
          }
          return runtime.run(input, rows);
        },
        close: () => runtime.close(),
      };
      return wrapped;
    };
  }
}

type Mode = 'pass' | 'fail' | 'gate';

interface Gate {
  promise: Promise<void>;
  open: () => void;
}

function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/**
 * Wraps the REAL onnx runtime of every model version. Per `model@version` a run can pass straight through, be held
 * at a gate until `open()`, or fail: the real session is handed a truncated input, so onnxruntime itself throws.
 * Creating a version's runtime can also be held (to keep a reload in progress). Warm-up runs happen before any fault
 * is set, so they pass.
 */
export class VersionFaults {
  #modes = new Map<string, Mode>();
  #gates = new Map<string, Gate>();
  #creates = new Map<string, Gate>();
  /** runs that reached a fault (gate or fail), per model@version */
  readonly faulted = new Map<string, number>();
  /** runtimes created, per model@version */
  readonly created = new Map<string, number>();
  /** every run (warm-up included), per model@version */
  readonly runs = new Map<string, number>();

  #id(model: string, version: string): string {
    return `${model}@${version}`;
  }

  fail(model: string, version: string): void {
    this.#modes.set(this.#id(model, version), 'fail');
  }

  /** holds every run of the version from now on, until `open()` */
  hold(model: string, version: string): void {
    const id = this.#id(model, version);
    this.#modes.set(id, 'gate');
    if (!this.#gates.has(id)) this.#gates.set(id, gate());
  }

  /** lets held runs go and ends any fault on the version */
  open(model: string, version: string): void {
    const id = this.#id(model, version);
    this.#modes.set(id, 'pass');
    this.#gates.get(id)?.open();
    this.#gates.delete(id);
  }

  /** holds the creation of the version's runtime (e.g. during a reload) until `openCreate()` */
  holdCreate(model: string, version: string): void {
    this.#creates.set(this.#id(model, version), gate());
  }

  openCreate(model: string, version: string): void {
    const id = this.#id(model, version);
    this.#creates.get(id)?.open();
    this.#creates.delete(id);
  }

  /** opens every gate (for teardown) */
  openAll(): void {
    for (const g of [...this.#gates.values(), ...this.#creates.values()]) g.open();
    this.#gates.clear();
    this.#creates.clear();
    this.#modes.clear();
  }

  runsOf(model: string, version: string): number {
    return this.runs.get(this.#id(model, version)) ?? 0;
  }

  faultedRuns(model: string, version: string): number {
    return this.faulted.get(this.#id(model, version)) ?? 0;
  }

  factory(): RuntimeFactory {
    const real = onnxRuntimeFactory(1);
    return async (model, version) => {
      const id = this.#id(model.manifest.name, version.version);
      this.created.set(id, (this.created.get(id) ?? 0) + 1);
      const held = this.#creates.get(id);
      if (held) await held.promise;
      const runtime = await real(model, version);
      const wrapped: ModelRuntime = {
        kind: 'onnx-faults',
        run: async (input, rows, options) => {
          this.runs.set(id, (this.runs.get(id) ?? 0) + 1);
          const mode = this.#modes.get(id) ?? 'pass';
          if (mode !== 'pass') this.faulted.set(id, (this.faulted.get(id) ?? 0) + 1);
          if (mode === 'gate') await this.#gates.get(id)?.promise;
          if (mode === 'fail') return runtime.run(input.subarray(0, 1), rows, options);
          return runtime.run(input, rows, options);
        },
        close: () => runtime.close(),
      };
      return wrapped;
    };
  }
}
