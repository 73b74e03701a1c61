import { helpers, type protos, v1 } from '@google-cloud/aiplatform';
import type { Manifest, RuntimeSpec } from '../registry/schema.ts';
import { inputWidth } from '../serving/inputs.ts';
import { decodePredictions, inputRows } from './codec.ts';
import { RemoteError, type RemoteErrorKind } from './resilience.ts';
import type { ModelRuntime, RunOptions } from './types.ts';

export type VertexSpec = Extract<RuntimeSpec, { kind: 'vertex' }>;
export type PredictionServiceClient = InstanceType<typeof v1.PredictionServiceClient>;
export type PredictionClientOptions = NonNullable<ConstructorParameters<typeof v1.PredictionServiceClient>[0]>;
type ProtoValue = protos.google.protobuf.IValue;

/**
 * Where the client connects: `spec.apiEndpoint` (`host` or `host:port`), else the endpoint's regional API
 * (`{location}-aiplatform.googleapis.com`, port 443), which Vertex AI requires for prediction.
 */
export function vertexAddress(spec: Pick<VertexSpec, 'endpoint' | 'apiEndpoint'>): { host: string; port: number } {
  if (spec.apiEndpoint) {
    const match = /^(.*?)(?::(\d+))?$/.exec(spec.apiEndpoint) as RegExpExecArray;
    return { host: match[1] as string, port: match[2] ? Number(match[2]) : 443 };
  }
  const location = spec.endpoint.split('/')[3] as string;
  return { host: `${location}-aiplatform.googleapis.com`, port: 443 };
}

/**
 * A PredictionServiceClient (gRPC) for a spec, with Application Default Credentials unless `overrides` say
 * otherwise. `overrides` is how tests reach a local insecure server: `{sslCreds: grpc.credentials.createInsecure()}`
 * makes google-gax use those channel credentials as they are, with no Google auth attached.
 */
export function createVertexClient(
  spec: Pick<VertexSpec, 'endpoint' | 'apiEndpoint'>,
  overrides: PredictionClientOptions = {},
): PredictionServiceClient {
  const { host, port } = vertexAddress(spec);
  return new v1.PredictionServiceClient({ apiEndpoint: host, port, ...overrides });
}

/** google.protobuf.Value (as protobufjs decodes it) → plain JSON. */
export function fromProtoValue(value: ProtoValue | null | undefined): unknown {
  if (!value) return null;
  if (value.numberValue !== undefined && value.numberValue !== null) return value.numberValue;
  if (value.listValue) return (value.listValue.values ?? []).map(fromProtoValue);
  if (value.structValue) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value.structValue.fields ?? {})) out[k] = fromProtoValue(v);
    return out;
  }
  if (value.stringValue !== undefined && value.stringValue !== null) return value.stringValue;
  if (value.boolValue !== undefined && value.boolValue !== null) return value.boolValue;
  return null;
}

/** gRPC status codes (stable numbers of the gRPC spec). */
const Status = {
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;
const STATUS_NAMES = new Map<number, string>(Object.entries(Status).map(([k, v]) => [v, k]));

/**
 * A predict failure → RemoteError by gRPC status: RESOURCE_EXHAUSTED → `throttled`; UNAVAILABLE, INTERNAL, ABORTED,
 * UNKNOWN, and DEADLINE_EXCEEDED or CANCELLED before our own deadline → `transient`; either at our deadline →
 * `timeout`; INVALID_ARGUMENT and every other status → `rejected`; no status at all (credentials,
 * configuration) → `rejected`.
 */
export function classifyVertexError(err: unknown, endpoint: string, deadline?: number): RemoteError {
  if (err instanceof RemoteError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const status = typeof code === 'number' ? code : undefined;
  const upstream = status === undefined ? 'no gRPC status' : (STATUS_NAMES.get(status) ?? `gRPC status ${status}`);
  let kind: RemoteErrorKind;
  switch (status) {
    case Status.RESOURCE_EXHAUSTED:
      kind = 'throttled';
      break;
    case Status.UNAVAILABLE:
    case Status.INTERNAL:
    case Status.ABORTED:
    case Status.UNKNOWN:
      kind = 'transient';
      break;
    case Status.DEADLINE_EXCEEDED:
      kind = deadline !== undefined && Date.now() >= deadline - 5 ? 'timeout' : 'transient';
      break;
    case Status.CANCELLED:
      // we cancel only through the signal (handled before); a cancel from the server or the connection is transient
      kind = deadline !== undefined && Date.now() >= deadline - 5 ? 'timeout' : 'transient';
      break;
    default:
      kind = 'rejected';
  }
  return new RemoteError(kind, `${endpoint}: ${kind}: ${upstream}`, { endpoint, upstream, cause: err });
}

/**
 * A Vertex AI endpoint as a ModelRuntime, called with PredictionServiceClient.predict (gRPC).
 *
 * Instances: each row is a protobuf ListValue of numbers, the features in the manifest's order (the same rows the
 * SageMaker runtime sends as JSON: one model server can serve both clouds). `parameters` come from the spec, as a
 * protobuf Value. Predictions: each a number, a list of numbers, or a Struct keyed by output tensor names (see
 * decodePredictions); anything else is a RemoteError `malformed`.
 *
 * The gRPC deadline of a call is `options.deadline` (else the client's default); `options.signal` abandons it.
 */
export function createVertexRuntime(
  spec: VertexSpec,
  manifest: Manifest,
  options: { client?: PredictionServiceClient } = {},
): ModelRuntime {
  const ownClient = !options.client;
  const client = options.client ?? createVertexClient(spec);
  const width = inputWidth(manifest);
  const endpoint = `vertex:${spec.endpoint}`;
  const parameters = spec.parameters ? (helpers.toValue(spec.parameters) as ProtoValue) : undefined;

  return {
    kind: 'vertex',
    async run(input: Float32Array, rows: number, runOptions: RunOptions = {}) {
      const instances = inputRows(input, rows, width).map((row) => helpers.toValue(row) as ProtoValue);
      const { deadline, signal } = runOptions;
      if (signal?.aborted) throw new RemoteError('timeout', `${endpoint}: cancelled`, { endpoint });
      // predict() starts initialize() itself and rethrows its failure from a detached .catch (an unhandled
      // rejection that would bring the process down); awaiting the (cached) initialization first keeps a
      // credentials or configuration failure a plain rejected call
      try {
        await client.initialize();
      } catch (err) {
        throw new RemoteError('rejected', `${endpoint}: rejected: the client cannot start (credentials or config)`, {
          endpoint,
          upstream: 'client initialization',
          cause: err,
        });
      }
      const call = client.predict(
        { endpoint: spec.endpoint, instances, ...(parameters ? { parameters } : {}) },
        deadline !== undefined ? { timeout: Math.max(1, deadline - Date.now()) } : {},
      );
      let onAbort: (() => void) | undefined;
      const aborted = new Promise<never>((_, reject) => {
        if (!signal) return;
        onAbort = () => reject(new RemoteError('timeout', `${endpoint}: cancelled`, { endpoint }));
        signal.addEventListener('abort', onAbort, { once: true });
      });
      call.catch(() => {}); // abandoned on abort: its late failure is nobody's business
      let response: protos.google.cloud.aiplatform.v1.IPredictResponse;
      try {
        [response] = await Promise.race([call, aborted]);
      } catch (err) {
        throw classifyVertexError(err, endpoint, deadline);
      } finally {
        if (onAbort) signal?.removeEventListener('abort', onAbort);
      }
      const predictions = (response.predictions ?? []).map(fromProtoValue);
      return decodePredictions(predictions, rows, manifest.output, endpoint);
    },
    async close() {
      // close() rethrows a failed initialization: nothing to release then
      if (ownClient) await client.close().catch(() => {});
    },
  };
}
