import type { LoadedModel } from '../registry/load.ts';
import type { ModelVersion, Tier } from '../registry/schema.ts';
import { DynamicBatcher, type Submission } from '../runtime/batcher.ts';
import { createOnnxRuntime } from '../runtime/onnx.ts';
import type { ModelRuntime } from '../runtime/types.ts';
import type { CatalogModel } from './catalog.ts';
import { inputWidth } from './inputs.ts';

/** Makes the runtime of one version (ONNX in-process, or a cloud endpoint behind resilience). */
export type RuntimeFactory = (model: LoadedModel, version: ModelVersion) => Promise<ModelRuntime>;

/** One version, ready to take work: a dynamic batcher (sync) or the runtime itself (jobs). */
export interface Runner {
  readonly spec: ModelVersion;
  /** the warm-up p99 of a warmed in-process version: how much of a deadline its fallback role needs */
  readonly warmupP99Ms?: number;
  /** hands rows to the runtime; `deadlineAt` (epoch ms) bounds remote calls */
  submit(input: Float32Array, rows: number, deadlineAt: number): Submission;
  /** about how long before `rows` more rows would be scored (a batching runner knows its queue) */
  expectedWaitMs?(rows: number): number;
}

/** Where the scorer finds a version's runner. A process's tiers keep their own (sync: warm; jobs: made on use). */
export interface Runners {
  /** undefined when this process does not serve that version */
  get(model: CatalogModel, version: string): Runner | Promise<Runner> | undefined;
}

/** The identity of a version's runtime: a reload that leaves it unchanged keeps the runtime. */
export function runtimeKey(model: LoadedModel, version: ModelVersion): string {
  return `${model.manifest.name}@${version.version}:${JSON.stringify(version.runtime)}`;
}

/** A runtime's work as a submission: each call on its own (no batching), a throw turned into a rejection. */
export function directSubmit(runtime: ModelRuntime, input: Float32Array, rows: number, deadlineAt: number): Submission {
  let result: Submission['result'];
  try {
    result = runtime.run(input, rows, { deadline: deadlineAt });
  } catch (err) {
    result = Promise.reject(err);
  }
  return { result, cancel: () => {} };
}

export type RunObserver = (
  labels: { model: string; version: string; tier: Tier },
  seconds: number,
  ok: boolean,
) => void;

/** Rows at most in one shared run of jobs' in-process ONNX scorings (`coalesce`). */
export const COALESCED_MAX_ROWS = 256;

/**
 * Runners of the job tiers (async, batch): a version's runtime is made on its first job and kept. A runtime that
 * fails to load is forgotten, so the next job tries again. Every job is one call, unless `coalesce` (the async tier):
 * then the in-process ONNX scorings of jobs that reach the runner in the same event-loop turn, or while its run is
 * going on, share one run (a small model's run costs nearly the same for one row as for a few: it was the largest
 * share of a worker's CPU per job), each job answered with its own rows; a shared run that fails runs each job again
 * on its own, so no job fails for another. Remote versions keep one call per job (their timeouts and retries are a
 * job's own).
 */
export class JobRunners implements Runners {
  readonly #factory: RuntimeFactory;
  readonly #tier: Tier;
  readonly #observe: RunObserver | undefined;
  readonly #coalesce: boolean;
  #runners = new Map<string, Promise<Runner>>();

  constructor(factory: RuntimeFactory, tier: Tier, observe?: RunObserver, options: { coalesce?: boolean } = {}) {
    this.#factory = factory;
    this.#tier = tier;
    this.#observe = observe;
    this.#coalesce = options.coalesce ?? false;
  }

  get(model: CatalogModel, version: string): Promise<Runner> | undefined {
    const spec = model.manifest.versions.find((v) => v.version === version);
    if (!spec) return undefined;
    const key = runtimeKey(model.loaded, spec);
    let runner = this.#runners.get(key);
    if (!runner) {
      const width = inputWidth(model.manifest);
      runner = this.#factory(model.loaded, spec).then((runtime) => this.#runner(model.name, spec, runtime, width));
      runner.catch(() => this.#runners.delete(key));
      this.#runners.set(key, runner);
    }
    return runner;
  }

  #runner(model: string, spec: ModelVersion, runtime: ModelRuntime, width: number): Runner & { runtime: ModelRuntime } {
    const observe = this.#observe;
    const labels = { model, version: spec.version, tier: this.#tier };
    const batcher =
      this.#coalesce && spec.runtime.kind === 'onnx'
        ? new DynamicBatcher(runtime, {
            featureCount: width,
            maxRows: COALESCED_MAX_ROWS,
            maxWaitMs: 0,
            isolateFailures: true,
          })
        : undefined;
    return {
      spec,
      runtime,
      submit(input, rows, deadlineAt) {
        const submission = batcher
          ? batcher.submit(input, rows, deadlineAt)
          : directSubmit(runtime, input, rows, deadlineAt);
        if (observe) {
          const started = performance.now();
          const done = (ok: boolean) => observe(labels, (performance.now() - started) / 1000, ok);
          submission.result.then(
            () => done(true),
            () => done(false),
          );
        }
        return submission;
      },
    };
  }

  async close(): Promise<void> {
    const runners = [...this.#runners.values()];
    this.#runners.clear();
    await Promise.allSettled(
      runners.map(async (r) => ((await r) as Runner & { runtime: ModelRuntime }).runtime.close()),
    );
  }
}

/** In-process ONNX for every version (tests and tools; a real process uses the factory that reaches the clouds). */
export function onnxRuntimeFactory(threads: number): RuntimeFactory {
  return (model, version) =>
    createOnnxRuntime(model.artifacts.get(version.version) as string, inputWidth(model.manifest), { threads });
}
