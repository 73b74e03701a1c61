import type { LoadedModel } from '../registry/load.ts';
import type { ModelVersion, Tier } from '../registry/schema.ts';
import type { Submission } from '../runtime/batcher.ts';
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

/**
 * Runners of the job tiers (async, batch): a version's runtime is made on its first job and kept; every job is one
 * call. A runtime that fails to load is forgotten, so the next job tries again.
 */
export class JobRunners implements Runners {
  readonly #factory: RuntimeFactory;
  readonly #tier: Tier;
  readonly #observe: RunObserver | undefined;
  #runners = new Map<string, Promise<Runner>>();

  constructor(factory: RuntimeFactory, tier: Tier, observe?: RunObserver) {
    this.#factory = factory;
    this.#tier = tier;
    this.#observe = observe;
  }

  get(model: CatalogModel, version: string): Promise<Runner> | undefined {
    const spec = model.manifest.versions.find((v) => v.version === version);
    if (!spec) return undefined;
    const key = runtimeKey(model.loaded, spec);
    let runner = this.#runners.get(key);
    if (!runner) {
      runner = this.#factory(model.loaded, spec).then((runtime) => this.#runner(model.name, spec, runtime));
      runner.catch(() => this.#runners.delete(key));
      this.#runners.set(key, runner);
    }
    return runner;
  }

  #runner(model: string, spec: ModelVersion, runtime: ModelRuntime): Runner & { runtime: ModelRuntime } {
    const observe = this.#observe;
    const labels = { model, version: spec.version, tier: this.#tier };
    return {
      spec,
      runtime,
      submit(input, rows, deadlineAt) {
        const submission = directSubmit(runtime, input, rows, deadlineAt);
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
