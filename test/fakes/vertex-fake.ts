/**
 * A local Vertex AI PredictionService over real gRPC: `google.cloud.aiplatform.v1.PredictionService/Predict` loaded
 * with @grpc/proto-loader from the .proto files @google-cloud/aiplatform ships (its google/api and google/protobuf
 * imports from the copies google-gax ships), served by @grpc/grpc-js on an insecure port. Faults are set per test.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** `<package root>/build/protos` of a package whose main module lives under `build/src/`. */
function buildProtos(entry: string): string {
  return path.join(entry.slice(0, entry.lastIndexOf(`${path.sep}build${path.sep}`)), 'build', 'protos');
}
const aiplatformEntry = createRequire(import.meta.url).resolve('@google-cloud/aiplatform');
const AIPLATFORM_PROTOS = buildProtos(aiplatformEntry);
// google-gax as @google-cloud/aiplatform resolves it: the google/api and google/protobuf protos it imports
const GAX_PROTOS = buildProtos(createRequire(aiplatformEntry).resolve('google-gax'));

/** Plain JSON of a google.protobuf.Value, as proto-loader decodes it (with `oneofs: true`). */
type WireValue = {
  kind?: string;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  nullValue?: unknown;
  listValue?: { values?: WireValue[] };
  structValue?: { fields?: Record<string, WireValue> };
};

export function fromWire(v: WireValue | undefined): unknown {
  switch (v?.kind) {
    case 'numberValue':
      return v.numberValue;
    case 'stringValue':
      return v.stringValue;
    case 'boolValue':
      return v.boolValue;
    case 'listValue':
      return (v.listValue?.values ?? []).map(fromWire);
    case 'structValue':
      return Object.fromEntries(Object.entries(v.structValue?.fields ?? {}).map(([k, x]) => [k, fromWire(x)]));
    default:
      return null;
  }
}

export function toWire(v: unknown): WireValue {
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toWire) } };
  if (v && typeof v === 'object') {
    return { structValue: { fields: Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toWire(x)])) } };
  }
  return { nullValue: 'NULL_VALUE' };
}

let definition: protoLoader.PackageDefinition | undefined;
function predictionService(): grpc.ServiceDefinition {
  definition ??= protoLoader.loadSync('google/cloud/aiplatform/v1/prediction_service.proto', {
    includeDirs: [AIPLATFORM_PROTOS, GAX_PROTOS],
    keepCase: false,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  return definition['google.cloud.aiplatform.v1.PredictionService'] as grpc.ServiceDefinition;
}

export type Scorer = (rows: number[][]) => unknown[] | Promise<unknown[]>;

export type VertexFault =
  | { mode: 'ok' }
  | { mode: 'slow'; ms: number }
  | { mode: 'status'; code: 'UNAVAILABLE' | 'RESOURCE_EXHAUSTED' | 'INTERNAL' | 'INVALID_ARGUMENT' }
  /** predictions that are not numbers */
  | { mode: 'malformed' };

export interface RecordedPredict {
  endpoint: string;
  instances: unknown[];
  parameters: unknown;
  metadata: Record<string, unknown>;
  fault: VertexFault['mode'];
}

const sumScorer: Scorer = (rows) => rows.map((r) => r.reduce((a, b) => a + b, 0));

export class VertexFake {
  readonly requests: RecordedPredict[] = [];
  readonly queue: VertexFault[] = [];
  fault: VertexFault = { mode: 'ok' };
  scorer: Scorer;
  #server: grpc.Server | undefined;
  #port = 0;
  #timers = new Set<NodeJS.Timeout>();

  private constructor(scorer: Scorer | undefined) {
    this.scorer = scorer ?? sumScorer;
  }

  static async start(options: { scorer?: Scorer } = {}): Promise<VertexFake> {
    const fake = new VertexFake(options.scorer);
    await fake.#listen(0);
    return fake;
  }

  get port(): number {
    return this.#port;
  }

  get count(): number {
    return this.requests.length;
  }

  /** Shuts the server down at once: new connections are refused, calls in flight are cancelled. */
  async refuseConnections(): Promise<void> {
    this.#shutdown();
  }

  async acceptConnections(): Promise<void> {
    await this.#listen(this.#port);
  }

  async close(): Promise<void> {
    this.#shutdown();
  }

  #shutdown(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.#server?.forceShutdown();
    this.#server = undefined;
  }

  #listen(port: number): Promise<void> {
    const server = new grpc.Server();
    server.addService(predictionService(), {
      predict: (
        call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ) => {
        this.#predict(call, callback).catch((err: Error) =>
          callback({ code: grpc.status.INTERNAL, details: `fake failed: ${err.message}` }),
        );
      },
    });
    this.#server = server;
    return new Promise((resolve, reject) => {
      server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
        if (err) return reject(err);
        this.#port = bound;
        resolve();
      });
    });
  }

  async #predict(
    call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ): Promise<void> {
    const fault = this.queue.shift() ?? this.fault;
    const request = call.request as { endpoint?: string; instances?: WireValue[]; parameters?: WireValue };
    const instances = (request.instances ?? []).map(fromWire);
    this.requests.push({
      endpoint: request.endpoint ?? '',
      instances,
      parameters: request.parameters ? fromWire(request.parameters) : undefined,
      metadata: call.metadata.getMap(),
      fault: fault.mode,
    });
    if (fault.mode === 'status') {
      callback({ code: grpc.status[fault.code], details: `${fault.code} (fake)` });
      return;
    }
    if (fault.mode === 'malformed') {
      callback(null, { predictions: instances.map(() => toWire('high')), deployedModelId: 'fake' });
      return;
    }
    if (fault.mode === 'slow') {
      const settled = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => {
          this.#timers.delete(t);
          resolve(true);
        }, fault.ms);
        this.#timers.add(t);
        call.on('cancelled', () => {
          clearTimeout(t);
          this.#timers.delete(t);
          resolve(false);
        });
      });
      if (!settled || call.cancelled) return;
    }
    const predictions = await this.scorer(instances as number[][]);
    callback(null, { predictions: predictions.map(toWire), deployedModelId: 'fake', model: 'fake-model' });
  }
}

/**
 * A real PredictionServiceClient (gRPC) pointed at the fake. `sslCreds: createInsecure()` is google-gax's supported
 * override of channel credentials: it uses them as they are, with no Google auth attached (so no ADC lookup per
 * call); `universeDomain` is given so the client does not ask ADC for it either. Reconnects are quick, so a test that
 * reopens the port does not wait out gax's 1 s reconnect backoff.
 */
export async function vertexTestClient(fake: VertexFake, endpoint: string) {
  const { createVertexClient } = await import('../../src/runtime/vertex.ts');
  return createVertexClient(
    { endpoint, apiEndpoint: `127.0.0.1:${fake.port}` },
    {
      sslCreds: grpc.credentials.createInsecure(),
      universeDomain: 'googleapis.com',
      'grpc.initial_reconnect_backoff_ms': 50,
      'grpc.max_reconnect_backoff_ms': 100,
    },
  );
}
