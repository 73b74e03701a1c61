import type { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import type { Logger } from 'pino';
import type { Metrics } from '../platform/metrics.ts';
import type { LoadedModel } from '../registry/load.ts';
import type { ModelVersion } from '../registry/schema.ts';
import { inputWidth } from '../serving/inputs.ts';
import { createOnnxRuntime } from './onnx.ts';
import { BreakerRegistry, type ResilienceEvent, type ResiliencePolicy, withResilience } from './resilience.ts';
import type { SageMakerSpec } from './sagemaker.ts';
import type { ModelRuntime } from './types.ts';
import type { PredictionServiceClient, VertexSpec } from './vertex.ts';

/** Same shape as serving's RuntimeFactory (kept structural so this module does not import serving). */
export type RuntimeFactoryFn = (model: LoadedModel, version: ModelVersion) => Promise<ModelRuntime>;

export interface CloudRuntimeFactory extends RuntimeFactoryFn {
  /** the breakers of every remote endpoint this factory has wrapped (their states are a metric) */
  readonly breakers: BreakerRegistry;
  /** destroys the cached cloud clients (runtimes' close() leaves shared clients alone) */
  close(): Promise<void>;
}

export interface RuntimeFactoryOptions {
  onnxThreads: number;
  /** whose budget remote calls default to: a sync request's latency budget, or a job's timeout (async, batch) */
  caller?: 'request' | 'job';
  /** how SageMaker clients are made (tests: static credentials and an endpoint override); default: the SDK chain */
  sagemaker?: { clientFor?(spec: SageMakerSpec): SageMakerRuntimeClient };
  /** how Vertex AI clients are made (tests: insecure channel credentials); default: ADC over TLS */
  vertex?: { clientFor?(spec: VertexSpec): PredictionServiceClient };
  /** retry backoff of every remote runtime (the manifest does not set it) */
  backoff?: Pick<ResiliencePolicy, 'backoffInitialMs' | 'backoffMaxMs'>;
  /** retries, timeouts, breaker changes of remote runtimes, with the model and version (for metrics and logs) */
  onEvent?: (event: ResilienceEvent & { model: string; version: string }) => void;
  breakers?: BreakerRegistry;
}

const DEFAULT_REMOTE_TIMEOUT_MS = 60_000;

/**
 * The call policy of a remote version: its `resilience` section, with the timeout defaulting to the model's budget
 * (the sync latency budget for a sync model, else the async job timeout, else 60 s).
 */
export function resiliencePolicyFor(
  model: LoadedModel,
  version: ModelVersion,
  caller: 'request' | 'job' = 'request',
): ResiliencePolicy {
  const r = version.resilience;
  const { manifest } = model;
  // a job (async or batch) has no one waiting at a bedside: it gets the job budget, not the sync latency budget
  const budget =
    caller === 'request' && model.classification.tier === 'sync' && manifest.sync
      ? manifest.sync.latencyBudgetMs
      : (manifest.async?.timeoutMs ?? DEFAULT_REMOTE_TIMEOUT_MS);
  return {
    timeoutMs: r?.timeoutMs ?? budget,
    retries: r?.retries ?? 2,
    breakerThreshold: r?.breakerThreshold ?? 5,
    breakerHalfOpenAfterMs: r?.breakerHalfOpenAfterMs ?? 10_000,
  };
}

/** The endpoint a remote spec calls: names its breaker, its metrics and its errors. */
export function endpointName(spec: SageMakerSpec | VertexSpec): string {
  return spec.kind === 'sagemaker' ? `sagemaker:${spec.region}/${spec.endpointName}` : `vertex:${spec.endpoint}`;
}

/**
 * A RuntimeFactory for every runtime kind: in-process ONNX, and SageMaker / Vertex AI endpoints wrapped in
 * withResilience (the version's policy, one breaker per endpoint shared by every runtime of it). Cloud clients are
 * cached per connection (SageMaker: region + endpoint URL; Vertex: api endpoint) and shared; the cloud SDKs are
 * loaded only when a remote version is first built.
 */
export function createRuntimeFactory(options: RuntimeFactoryOptions): CloudRuntimeFactory {
  const breakers = options.breakers ?? new BreakerRegistry();
  const sagemakerClients = new Map<string, SageMakerRuntimeClient>();
  const vertexClients = new Map<string, PredictionServiceClient>();

  const factory = async (model: LoadedModel, version: ModelVersion): Promise<ModelRuntime> => {
    const spec = version.runtime;
    if (spec.kind === 'onnx') {
      const artifact = model.artifacts.get(version.version);
      if (!artifact) throw new Error(`${model.manifest.name}@${version.version}: no verified artifact`);
      return createOnnxRuntime(artifact, inputWidth(model.manifest), { threads: options.onnxThreads });
    }
    let runtime: ModelRuntime;
    if (spec.kind === 'sagemaker') {
      const { createSageMakerClient, createSageMakerRuntime } = await import('./sagemaker.ts');
      const key = `${spec.region}\u0000${spec.endpointUrl ?? ''}`;
      let client = sagemakerClients.get(key);
      if (!client) {
        client = options.sagemaker?.clientFor?.(spec) ?? createSageMakerClient(spec);
        sagemakerClients.set(key, client);
      }
      runtime = createSageMakerRuntime(spec, model.manifest, { client });
    } else {
      const { createVertexClient, createVertexRuntime, vertexAddress } = await import('./vertex.ts');
      const { host, port } = vertexAddress(spec);
      const key = `${host}:${port}`;
      let client = vertexClients.get(key);
      if (!client) {
        client = options.vertex?.clientFor?.(spec) ?? createVertexClient(spec);
        vertexClients.set(key, client);
      }
      runtime = createVertexRuntime(spec, model.manifest, { client });
    }
    const { onEvent } = options;
    const labels = { model: model.manifest.name, version: version.version };
    return withResilience(
      runtime,
      { ...resiliencePolicyFor(model, version, options.caller), ...options.backoff },
      {
        name: endpointName(spec),
        breakers,
        ...(onEvent ? { onEvent: (event: ResilienceEvent) => onEvent({ ...event, ...labels }) } : {}),
      },
    );
  };

  return Object.assign(factory, {
    breakers,
    async close() {
      for (const client of sagemakerClients.values()) client.destroy();
      await Promise.allSettled([...vertexClients.values()].map((client) => client.close()));
      sagemakerClients.clear();
      vertexClients.clear();
    },
  });
}
