/**
 * The cloud runtimes against local fakes that speak the real wire protocols: the real SageMakerRuntimeClient (SigV4
 * signed, verified by the fake) over HTTP, and the real PredictionServiceClient over gRPC against a PredictionService
 * built from the protos @google-cloud/aiplatform ships. No client method is stubbed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { type LoadedModel, loadModels } from '../src/registry/load.ts';
import { type ModelVersion, versionSchema } from '../src/registry/schema.ts';
import { decodePredictions, float32ToNumber } from '../src/runtime/codec.ts';
import { createRuntimeFactory, resiliencePolicyFor } from '../src/runtime/factory.ts';
import { createOnnxRuntime } from '../src/runtime/onnx.ts';
import { RemoteError, withResilience } from '../src/runtime/resilience.ts';
import { createSageMakerClient, createSageMakerRuntime, type SageMakerSpec } from '../src/runtime/sagemaker.ts';
import type { ModelRuntime } from '../src/runtime/types.ts';
import { createVertexRuntime, type PredictionServiceClient, type VertexSpec } from '../src/runtime/vertex.ts';
import { encodeInstances } from '../src/serving/features.ts';
import { inputWidth } from '../src/serving/inputs.ts';
import { shapePredictions } from '../src/serving/predictions.ts';
import { SageMakerFake, type Scorer, sagemakerTestClient, TEST_CREDENTIALS } from './fakes/sagemaker-fake.ts';
import { VertexFake, vertexTestClient } from './fakes/vertex-fake.ts';

const MODELS_DIR = fileURLToPath(new URL('../models/', import.meta.url));
const VERTEX_ENDPOINT = 'projects/triage-test/locations/europe-west2/endpoints/4242';

const NEWS2_PATIENTS = [
  // all normal: 0
  {
    respirationRate: 16,
    spo2: 97,
    onOxygen: false,
    systolicBP: 120,
    pulse: 70,
    consciousness: 'alert',
    temperature: 37.2,
  },
  // sick: RR 25 (3), SpO2 91 (3), oxygen (2), SBP 95 (2), pulse 125 (2), confusion (3), 39.4 (2) → 17
  {
    respirationRate: 25,
    spo2: 91,
    onOxygen: true,
    systolicBP: 95,
    pulse: 125,
    consciousness: 'confusion',
    temperature: 39.4,
  },
  // middling
  {
    respirationRate: 22,
    spo2: 95,
    onOxygen: false,
    systolicBP: 105,
    pulse: 95,
    consciousness: 'alert',
    temperature: 38.6,
  },
];

let models: LoadedModel[];
let news2: LoadedModel;
let deterioration: LoadedModel;
let localNews2: ModelRuntime;
/** the real NEWS2 ONNX graph as an endpoint's model server: per row {total, subscores, band} */
let news2Scorer: Scorer;

before(async () => {
  models = await loadModels(MODELS_DIR, 5_000);
  news2 = models.find((m) => m.manifest.name === 'news2') as LoadedModel;
  deterioration = models.find((m) => m.manifest.name === 'deterioration') as LoadedModel;
  localNews2 = await createOnnxRuntime(news2.artifacts.get('1') as string, inputWidth(news2.manifest), { threads: 1 });
  const width = inputWidth(news2.manifest);
  news2Scorer = async (rows) => {
    const out = await localNews2.run(Float32Array.from(rows.flat()), rows.length);
    const total = out.total?.data as Float32Array;
    const subscores = out.subscores?.data as Float32Array;
    const band = out.band?.data as Float32Array;
    const k = subscores.length / rows.length;
    assert.equal(rows[0]?.length, width);
    return rows.map((_, r) => ({
      total: total[r],
      subscores: Array.from(subscores.subarray(r * k, (r + 1) * k)),
      band: band[r],
    }));
  };
});

after(async () => {
  await localNews2?.close();
});

function news2Input(): Float32Array {
  return encodeInstances(news2.manifest.features, NEWS2_PATIENTS);
}

async function localPredictions() {
  const outputs = await localNews2.run(news2Input(), NEWS2_PATIENTS.length);
  return shapePredictions(news2.manifest.output, outputs, NEWS2_PATIENTS.length);
}

describe('payload', () => {
  test('float32 features go on the wire as the decimals the caller sent', () => {
    for (const v of [0, 1, 37.2, 0.1, 39.4, -12.75, 1e-7, 123456.5, 98.6]) {
      assert.equal(float32ToNumber(Math.fround(v)), v);
    }
  });

  test('predictions as numbers, lists or objects become tensors; anything else is malformed', () => {
    const score = deterioration.manifest.output;
    assert.deepEqual(decodePredictions([0.25, 0.5], 2, score, 'e'), {
      probability: { data: Float32Array.from([0.25, 0.5]), dims: [2] },
    });
    assert.deepEqual(decodePredictions([{ probability: 0.25 }, { probability: 0.5 }], 2, score, 'e').probability, {
      data: Float32Array.from([0.25, 0.5]),
      dims: [2],
    });
    const n2 = decodePredictions(
      [
        { total: 3, subscores: [1, 0, 0, 2, 0, 0, 0], band: 1 },
        { total: 0, subscores: [0, 0, 0, 0, 0, 0, 0], band: 0 },
      ],
      2,
      news2.manifest.output,
      'e',
    );
    assert.deepEqual(n2.subscores?.dims, [2, 7]);
    assert.deepEqual(Array.from(n2.total?.data ?? []), [3, 0]);
    const malformed = (predictions: unknown, rows = 2) =>
      assert.throws(
        () => decodePredictions(predictions, rows, news2.manifest.output, 'e'),
        (err: unknown) => err instanceof RemoteError && err.kind === 'malformed' && !err.retryable,
      );
    malformed({ total: 3 });
    malformed([{ total: 3, subscores: [1], band: 0 }]); // one prediction for two rows
    malformed([{ total: 3 }, { total: 4 }]); // the subscores and band the manifest shapes are missing
    malformed([
      { total: 3, subscores: [1, 2], band: 0 },
      { total: 3, subscores: [1], band: 0 },
    ]); // ragged
    malformed([
      { total: 'high', subscores: [1], band: 0 },
      { total: 3, subscores: [1], band: 0 },
    ]);
    malformed([null, null]);
  });
});

describe('SageMaker runtime (real SDK client, SigV4-verifying fake)', () => {
  let fake: SageMakerFake;
  let client: SageMakerRuntimeClient;
  const spec = (over: Partial<SageMakerSpec> = {}): SageMakerSpec => ({
    kind: 'sagemaker',
    endpointName: 'news2-v2',
    region: 'eu-west-2',
    endpointUrl: fake.url,
    contentType: 'application/json',
    ...over,
  });

  before(async () => {
    fake = await SageMakerFake.start({ region: 'eu-west-2', scorer: news2Scorer });
    client = await sagemakerTestClient(fake);
  });
  after(async () => {
    client?.destroy();
    await fake?.close();
  });

  test('a call returns the tensors the endpoint computed, shaped like the in-process model', async () => {
    fake.scorer = news2Scorer;
    const runtime = createSageMakerRuntime(spec(), news2.manifest, { client });
    const outputs = await runtime.run(news2Input(), NEWS2_PATIENTS.length);
    assert.deepEqual(outputs.subscores?.dims, [3, 7]);
    assert.deepEqual(outputs.total?.dims, [3]);
    const remote = shapePredictions(news2.manifest.output, outputs, NEWS2_PATIENTS.length);
    assert.deepEqual(remote, await localPredictions());
    assert.equal(remote[0]?.news2Total, 0);
    assert.equal(remote[1]?.news2Total, 17);

    const req = fake.requests.at(-1);
    assert.ok(req?.signatureValid, 'the fake recomputed the SigV4 signature and it matched');
    assert.equal(req.endpointName, 'news2-v2');
    assert.equal(req.contentType, 'application/json');
    assert.equal(req.accept, 'application/json');
    // rows in manifest feature order, the numbers the caller sent (no float32 noise)
    assert.deepEqual(JSON.parse(req.body), {
      instances: [
        [16, 97, 1, 0, 120, 70, 0, 37.2],
        [25, 91, 1, 1, 95, 125, 1, 39.4],
        [22, 95, 1, 0, 105, 95, 0, 38.6],
      ],
    });
    assert.match(
      String(req.headers.authorization),
      /^AWS4-HMAC-SHA256 Credential=AKIDTRIAGETEST000001\/\d{8}\/eu-west-2\/sagemaker\/aws4_request/,
    );
  });

  test('target model and variant travel as the SageMaker headers', async () => {
    const runtime = createSageMakerRuntime(
      spec({ targetModel: 'news2-2025.tar.gz', targetVariant: 'canary' }),
      news2.manifest,
      {
        client,
      },
    );
    await runtime.run(news2Input(), NEWS2_PATIENTS.length);
    const req = fake.requests.at(-1);
    assert.equal(req?.targetModel, 'news2-2025.tar.gz');
    assert.equal(req?.targetVariant, 'canary');
    assert.ok(req?.signatureValid, 'signature verified');
    const signed = /SignedHeaders=([^,]+)/.exec(String(req?.headers.authorization))?.[1]?.split(';') ?? [];
    assert.ok(
      signed.includes('x-amzn-sagemaker-target-model') && signed.includes('x-amzn-sagemaker-target-variant'),
      'the target headers are signed',
    );
  });

  test('text/csv: one row per line out, one score per line back', async () => {
    fake.scorer = (rows) => rows.map((r) => r.reduce((a, b) => a + b, 0));
    try {
      const runtime = createSageMakerRuntime(spec({ contentType: 'text/csv' }), deterioration.manifest, { client });
      const width = inputWidth(deterioration.manifest);
      const input = Float32Array.from({ length: 2 * width }, (_, i) => i + 0.5);
      const outputs = await runtime.run(input, 2);
      const req = fake.requests.at(-1);
      assert.equal(req?.contentType, 'text/csv');
      assert.equal(req?.body.split('\n').length, 2);
      assert.equal(req?.body.split('\n')[0], Array.from({ length: width }, (_, i) => i + 0.5).join(','));
      const sum = (row: number) =>
        Array.from({ length: width }, (_, i) => row * width + i + 0.5).reduce((a, b) => a + b, 0);
      assert.deepEqual(outputs.probability, { data: Float32Array.from([sum(0), sum(1)]), dims: [2] });
    } finally {
      fake.scorer = news2Scorer;
    }
  });

  test('a wrong secret is refused by the fake (403) and reported as rejected, not retried', async () => {
    const wrong = await sagemakerTestClient(fake, { ...TEST_CREDENTIALS, secretAccessKey: 'not-the-secret' });
    try {
      const before = fake.count;
      const runtime = withResilience(
        createSageMakerRuntime(spec(), news2.manifest, { client: wrong }),
        { timeoutMs: 2_000, retries: 3, breakerThreshold: 5, breakerHalfOpenAfterMs: 1_000 },
        { name: 'sm-wrong-secret' },
      );
      await assert.rejects(runtime.run(news2Input(), 3), (err: unknown) => {
        assert.ok(err instanceof RemoteError, String(err));
        assert.equal(err.kind, 'rejected');
        assert.equal(err.retryable, false);
        assert.match(err.message, /InvalidSignatureException \(HTTP 403\)/);
        return true;
      });
      assert.equal(fake.count - before, 1, 'one attempt: a rejected request is not retried');
      assert.equal(fake.requests.at(-1)?.signatureValid, false);
    } finally {
      wrong.destroy();
    }
  });

  test('a tampered body fails the signature check', async () => {
    // the same signed request, replayed by hand with another body: the fake must notice
    const runtime = createSageMakerRuntime(spec(), news2.manifest, { client });
    await runtime.run(news2Input(), 3);
    const signed = fake.requests.at(-1);
    assert.ok(signed?.signatureValid, 'signature verified');
    const headers = Object.fromEntries(
      Object.entries(signed.headers).filter(
        ([k, v]) => typeof v === 'string' && k !== 'content-length' && k !== 'connection',
      ),
    ) as Record<string, string>;
    const tampered = signed.body.replace('37.2', '35.0');
    const res = await fetch(`${fake.url}/endpoints/news2-v2/invocations`, { method: 'POST', headers, body: tampered });
    assert.equal(res.status, 403);
    assert.match(res.headers.get('x-amzn-errortype') ?? '', /^InvalidSignatureException/);
    assert.equal(((await res.json()) as { __type: string }).__type, 'InvalidSignatureException');
  });
});

describe('Vertex AI runtime (real gRPC PredictionServiceClient, PredictionService fake from the shipped protos)', () => {
  let fake: VertexFake;
  let client: PredictionServiceClient;
  const spec = (over: Partial<VertexSpec> = {}): VertexSpec => ({
    kind: 'vertex',
    endpoint: VERTEX_ENDPOINT,
    apiEndpoint: `127.0.0.1:${fake.port}`,
    ...over,
  });

  before(async () => {
    fake = await VertexFake.start({ scorer: news2Scorer });
    client = await vertexTestClient(fake, VERTEX_ENDPOINT);
  });
  after(async () => {
    await client?.close();
    await fake?.close();
  });

  test('predict returns the tensors the endpoint computed, shaped like the in-process model', async () => {
    const runtime = createVertexRuntime(spec({ parameters: { explain: false, sampleCount: 1 } }), news2.manifest, {
      client,
    });
    const outputs = await runtime.run(news2Input(), NEWS2_PATIENTS.length, { deadline: Date.now() + 5_000 });
    assert.deepEqual(outputs.subscores?.dims, [3, 7]);
    assert.deepEqual(shapePredictions(news2.manifest.output, outputs, 3), await localPredictions());

    const req = fake.requests.at(-1);
    assert.equal(req?.endpoint, VERTEX_ENDPOINT);
    // instances: one protobuf ListValue of numbers per row, manifest feature order
    assert.deepEqual(req?.instances, [
      [16, 97, 1, 0, 120, 70, 0, 37.2],
      [25, 91, 1, 1, 95, 125, 1, 39.4],
      [22, 95, 1, 0, 105, 95, 0, 38.6],
    ]);
    assert.deepEqual(req?.parameters, { explain: false, sampleCount: 1 });
    assert.equal(req?.metadata['x-goog-request-params'], `endpoint=${encodeURIComponent(VERTEX_ENDPOINT)}`);
    assert.equal(req?.metadata.authorization, undefined, 'insecure test channel: no Google auth attached');
  });

  test('a client that cannot get credentials → rejected calls, no crash (ADC, no insecure override)', async () => {
    const saved = process.env.GOOGLE_APPLICATION_CREDENTIALS;
    process.env.GOOGLE_APPLICATION_CREDENTIALS = '/nonexistent/triage-adc.json';
    const runtime = createVertexRuntime(spec(), deterioration.manifest); // its own client: TLS + ADC
    try {
      for (let i = 0; i < 2; i++) {
        await assert.rejects(runtime.run(new Float32Array(inputWidth(deterioration.manifest)), 1), (err: unknown) => {
          assert.ok(err instanceof RemoteError && err.kind === 'rejected', String(err));
          assert.match(err.message, /cannot start \(credentials or config\)/);
          return true;
        });
      }
    } finally {
      if (saved === undefined) delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
      else process.env.GOOGLE_APPLICATION_CREDENTIALS = saved;
      await runtime.close();
    }
  });

  test('bare-number predictions are the score tensor', async () => {
    fake.scorer = (rows) => rows.map((r) => r[0] as number);
    try {
      const runtime = createVertexRuntime(spec(), deterioration.manifest, { client });
      const width = inputWidth(deterioration.manifest);
      const input = Float32Array.from({ length: 2 * width }, (_, i) => (i % width === 0 ? i / 100 : 1));
      const outputs = await runtime.run(input, 2);
      assert.deepEqual(outputs.probability, { data: Float32Array.from([0, width / 100]), dims: [2] });
    } finally {
      fake.scorer = news2Scorer;
    }
  });
});

describe('runtime factory', () => {
  test('a remote version policy: its resilience section, the timeout defaulting to the model budget', () => {
    const remote = (resilience?: unknown) =>
      versionSchema.parse({
        version: 'r',
        runtime: { kind: 'sagemaker', endpointName: 'e', region: 'eu-west-2' },
        ...(resilience ? { resilience } : {}),
      });
    assert.deepEqual(resiliencePolicyFor(news2, remote()), {
      timeoutMs: 50, // news2's sync latency budget
      retries: 2,
      breakerThreshold: 5,
      breakerHalfOpenAfterMs: 10_000,
    });
    const noteTriage = models.find((m) => m.manifest.name === 'note-triage') as LoadedModel;
    assert.equal(resiliencePolicyFor(noteTriage, remote()).timeoutMs, 30_000, 'the async job timeout');
    assert.deepEqual(
      resiliencePolicyFor(
        news2,
        remote({ timeoutMs: 40, retries: 1, breakerThreshold: 3, breakerHalfOpenAfterMs: 500 }),
      ),
      { timeoutMs: 40, retries: 1, breakerThreshold: 3, breakerHalfOpenAfterMs: 500 },
    );
  });

  test('builds onnx, SageMaker and Vertex runtimes; remote ones resilient; clients cached per endpoint', async () => {
    const sm = await SageMakerFake.start({ scorer: news2Scorer });
    const vx = await VertexFake.start({ scorer: news2Scorer });
    const made: string[] = [];
    const vertexClient = await vertexTestClient(vx, VERTEX_ENDPOINT);
    const factory = createRuntimeFactory({
      onnxThreads: 1,
      sagemaker: {
        clientFor(s) {
          made.push(`sagemaker ${s.region} ${s.endpointUrl}`);
          return createSageMakerClient(s, { credentials: TEST_CREDENTIALS });
        },
      },
      vertex: {
        clientFor(s) {
          made.push(`vertex ${s.apiEndpoint}`);
          return vertexClient;
        },
      },
    });
    const version = (v: string, runtime: unknown): ModelVersion =>
      versionSchema.parse({ version: v, runtime, resilience: { timeoutMs: 5_000 } });
    const runtimes: ModelRuntime[] = [];
    try {
      const smSpec = { kind: 'sagemaker', endpointName: 'news2-a', region: 'eu-west-2', endpointUrl: sm.url };
      const a = await factory(news2, version('a', smSpec));
      const b = await factory(news2, version('b', { ...smSpec, endpointName: 'news2-b', targetVariant: 'v2' }));
      const c = await factory(
        news2,
        version('c', { kind: 'vertex', endpoint: VERTEX_ENDPOINT, apiEndpoint: `127.0.0.1:${vx.port}` }),
      );
      const d = await factory(
        news2,
        news2.manifest.versions.find((v) => v.version === news2.manifest.routing.primary) as ModelVersion,
      );
      runtimes.push(a, b, c, d);
      assert.deepEqual([a.kind, b.kind, c.kind, d.kind], ['sagemaker', 'sagemaker', 'vertex', 'onnx']);
      assert.deepEqual(
        made,
        [`sagemaker eu-west-2 ${sm.url}`, `vertex 127.0.0.1:${vx.port}`],
        'one client per endpoint',
      );
      const expected = await localPredictions();
      for (const runtime of [a, b, c, d]) {
        const outputs = await runtime.run(news2Input(), 3, { deadline: Date.now() + 5_000 });
        assert.deepEqual(shapePredictions(news2.manifest.output, outputs, 3), expected, runtime.kind);
      }
      assert.deepEqual(
        sm.requests.map((r) => [r.endpointName, r.targetVariant ?? null, r.signatureValid]),
        [
          ['news2-a', null, true],
          ['news2-b', 'v2', true],
        ],
      );
      assert.equal(vx.count, 1);
    } finally {
      for (const r of runtimes) await r.close();
      await factory.close();
      await sm.close();
      await vx.close();
    }
  });
});
