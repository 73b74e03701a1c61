import {
  InvokeEndpointCommand,
  SageMakerRuntimeClient,
  type SageMakerRuntimeClientConfig,
} from '@aws-sdk/client-sagemaker-runtime';
import type { Manifest, RuntimeSpec } from '../registry/schema.ts';
import { inputWidth } from '../serving/inputs.ts';
import { decodePredictions, inputRows } from './codec.ts';
import { RemoteError } from './resilience.ts';
import type { ModelRuntime, RunOptions } from './types.ts';

export type SageMakerSpec = Extract<RuntimeSpec, { kind: 'sagemaker' }>;

// ---------------------------------------------------------------------------------------------------------------
// The wire payload, shared by the SageMaker and Vertex AI runtimes
// ---------------------------------------------------------------------------------------------------------------

/**
 * A SageMaker runtime client for a spec: its region, its endpoint override, the SDK's default credential chain
 * (unless `overrides.credentials`), and ONE attempt per send: retries are the gateway's policy (withResilience),
 * inside the caller's deadline, never the SDK's.
 */
export function createSageMakerClient(
  spec: Pick<SageMakerSpec, 'region' | 'endpointUrl'>,
  overrides: Partial<SageMakerRuntimeClientConfig> = {},
): SageMakerRuntimeClient {
  return new SageMakerRuntimeClient({
    region: spec.region,
    ...(spec.endpointUrl ? { endpoint: spec.endpointUrl } : {}),
    maxAttempts: 1,
    ...overrides,
  });
}

const CONNECTION_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_SOCKET',
]);
const THROTTLING = new Set([
  'ThrottlingException',
  'Throttling',
  'ThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'SlowDown',
]);

interface SdkErrorShape {
  name?: string;
  code?: string;
  message?: string;
  $fault?: 'client' | 'server';
  $metadata?: { httpStatusCode?: number };
  OriginalStatusCode?: number;
}

/**
 * An InvokeEndpoint failure → RemoteError: throttling (ThrottlingException, 429) → `throttled`; ModelError whose
 * container answered 5xx, ServiceUnavailable, InternalFailure, any 5xx, connection refused/reset and socket timeouts
 * → `transient`; ModelNotReadyException → `transient`; ValidationError, a bad signature, ModelError with a 4xx from
 * the container, any other 4xx → `rejected`; an aborted call → `timeout`.
 */
export function classifySageMakerError(err: unknown, endpoint: string): RemoteError {
  if (err instanceof RemoteError) return err;
  const e = (typeof err === 'object' && err !== null ? err : {}) as SdkErrorShape;
  const status = e.$metadata?.httpStatusCode;
  const name = e.name ?? 'Error';
  const upstream = status ? `${name} (HTTP ${status})` : (e.code ?? name);
  const make = (kind: ConstructorParameters<typeof RemoteError>[0]) =>
    new RemoteError(kind, `${endpoint}: ${kind}: ${upstream}`, { endpoint, upstream, cause: err });
  if (name === 'AbortError') return make('timeout');
  if (e.code && CONNECTION_ERRORS.has(e.code)) return make('transient');
  if (name === 'TimeoutError' || name === 'RequestTimeout') return make('transient');
  if (name === 'ModelNotReadyException') return make('transient');
  if (THROTTLING.has(name) || status === 429) return make('throttled');
  if (name === 'ModelError') {
    const original = e.OriginalStatusCode ?? 0;
    if (original === 429) return make('throttled');
    return make(original >= 500 || original === 0 ? 'transient' : 'rejected');
  }
  if ((status !== undefined && status >= 500) || e.$fault === 'server') return make('transient');
  if (status !== undefined && status >= 400) return make('rejected');
  // no HTTP status and no system error code: a failure before or outside the exchange (credentials, config)
  return make('rejected');
}

function parseCsv(text: string, endpoint: string): number[][] {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  return lines.map((line, i) => {
    const cells = line.split(',').map((c) => c.trim());
    const values = cells.map(Number);
    if (cells.some((c) => c === '') || values.some((v) => !Number.isFinite(v))) {
      throw new RemoteError('malformed', `${endpoint}: malformed reply: CSV line ${i + 1} is not numbers`, {
        endpoint,
        upstream: 'malformed',
      });
    }
    return values;
  });
}

/**
 * Parses an InvokeEndpoint reply body into the list of predictions. JSON (`{"predictions": [...]}`, or a bare array)
 * when the reply's content type says JSON or the body looks like JSON; CSV otherwise (one line per instance: one
 * score, or k comma-separated values).
 */
export function parseSageMakerReply(body: string, contentType: string | undefined, endpoint: string): unknown {
  const trimmed = body.trimStart();
  const looksJson = contentType ? /json/i.test(contentType) : trimmed.startsWith('{') || trimmed.startsWith('[');
  if (!looksJson) return parseCsv(body, endpoint).map((values) => (values.length === 1 ? values[0] : values));
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new RemoteError('malformed', `${endpoint}: malformed reply: not JSON`, { endpoint, upstream: 'malformed' });
  }
  if (Array.isArray(parsed)) return parsed;
  if (typeof parsed === 'object' && parsed !== null && 'predictions' in parsed) return parsed.predictions;
  throw new RemoteError('malformed', `${endpoint}: malformed reply: no "predictions"`, {
    endpoint,
    upstream: 'malformed',
  });
}

/**
 * A SageMaker real-time endpoint as a ModelRuntime, called with InvokeEndpoint.
 *
 * Request, by `spec.contentType`:
 * - `application/json`: `{"instances": [[f1, …, fF], …]}`, one list per row in the manifest's feature order;
 * - `text/csv`: one row per line, `f1,…,fF`, no header.
 * `Accept` is the same content type; `TargetModel` / `TargetVariant` are sent when the spec names them.
 * Reply: see parseSageMakerReply and decodePredictions.
 *
 * Errors are RemoteErrors (classifySageMakerError). A call honours `options.signal` and `options.deadline` (the SDK
 * request is aborted); retries, timeouts and the breaker are withResilience's business.
 */
export function createSageMakerRuntime(
  spec: SageMakerSpec,
  manifest: Manifest,
  options: { client?: SageMakerRuntimeClient } = {},
): ModelRuntime {
  const ownClient = !options.client;
  const client = options.client ?? createSageMakerClient(spec);
  const width = inputWidth(manifest);
  const endpoint = `sagemaker:${spec.region}/${spec.endpointName}`;
  const contentType = spec.contentType;
  const encoder = new TextEncoder();

  return {
    kind: 'sagemaker',
    async run(input: Float32Array, rows: number, runOptions: RunOptions = {}) {
      const values = inputRows(input, rows, width);
      const body =
        contentType === 'text/csv' ? values.map((r) => r.join(',')).join('\n') : JSON.stringify({ instances: values });
      const signals: AbortSignal[] = [];
      if (runOptions.signal) signals.push(runOptions.signal);
      if (runOptions.deadline !== undefined) {
        signals.push(AbortSignal.timeout(Math.max(0, runOptions.deadline - Date.now())));
      }
      const abortSignal =
        signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
      let reply: { body: string; contentType: string | undefined };
      try {
        const out = await client.send(
          new InvokeEndpointCommand({
            EndpointName: spec.endpointName,
            Body: encoder.encode(body),
            ContentType: contentType,
            Accept: contentType,
            ...(spec.targetModel ? { TargetModel: spec.targetModel } : {}),
            ...(spec.targetVariant ? { TargetVariant: spec.targetVariant } : {}),
          }),
          abortSignal ? { abortSignal } : {},
        );
        reply = { body: out.Body ? new TextDecoder().decode(out.Body) : '', contentType: out.ContentType };
      } catch (err) {
        throw classifySageMakerError(err, endpoint);
      }
      return decodePredictions(
        parseSageMakerReply(reply.body, reply.contentType, endpoint),
        rows,
        manifest.output,
        endpoint,
      );
    },
    async close() {
      if (ownClient) client.destroy();
    },
  };
}
