/**
 * Open Inference Protocol v2 on a real app: real ONNX sessions on the bundled models, real Redis behind readiness.
 * An infer call answers what v1 predict answers for the same inputs, through the same checks.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { endpointClass } from '../src/platform/rate-limit.ts';
import { buildGateway, predict, problemBody, RuntimeControl, type TestGateway, waitFor } from './support/index.ts';

const PATIENTS = [
  {
    respirationRate: 22,
    spo2: 93,
    onOxygen: true,
    systolicBP: 105,
    pulse: 115,
    consciousness: 'alert',
    temperature: 38.5,
  },
  {
    respirationRate: 14,
    spo2: 97,
    onOxygen: false,
    systolicBP: 125,
    pulse: 72,
    consciousness: 'voice',
    temperature: 36.8,
    spo2Scale: 1,
  },
];

const DATATYPE: Record<string, string> = {
  respirationRate: 'INT32',
  spo2: 'INT32',
  spo2Scale: 'INT32',
  onOxygen: 'BOOL',
  systolicBP: 'INT32',
  pulse: 'INT32',
  consciousness: 'BYTES',
  temperature: 'FP32',
};

/** One tensor per feature, as a KServe or Triton client builds them from the model metadata. */
function tensors(rows: Record<string, unknown>[], names = Object.keys(rows[0] as object)) {
  return names.map((name) => ({
    name,
    shape: [rows.length],
    datatype: DATATYPE[name] ?? 'FP32',
    data: rows.map((r) => r[name] ?? 1),
  }));
}

describe('Open Inference Protocol v2', () => {
  let t: TestGateway;
  const call = (path: string, key: string | undefined, body?: unknown, headers: Record<string, string> = {}) =>
    Promise.resolve(
      t.app.request(path, {
        method: body === undefined ? 'GET' : 'POST',
        headers: {
          ...(key ? { authorization: `Bearer ${key}` } : {}),
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...headers,
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      }),
    );

  before(async () => {
    t = await buildGateway();
  });
  after(async () => {
    await t.close();
  });

  it('infer returns the same scores as v1 predict for the same inputs', async () => {
    const v1 = await predict(t.app, 'news2', { instances: PATIENTS }, t.keys.client);
    assert.equal(v1.status, 200);
    const { predictions, version } = (await v1.json()) as { predictions: Record<string, unknown>[]; version: string };

    const names = Object.keys(DATATYPE);
    const res = await call('/v2/models/news2/infer', t.keys.client, { id: 'req-1', inputs: tensors(PATIENTS, names) });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(res.headers.get('x-model-version'), version);
    const body = (await res.json()) as {
      model_name: string;
      model_version: string;
      id: string;
      parameters: Record<string, unknown>;
      outputs: { name: string; datatype: string; shape: number[]; data: unknown[] }[];
    };
    assert.equal(body.model_name, 'news2');
    assert.equal(body.model_version, version);
    assert.equal(body.id, 'req-1');
    assert.equal(body.parameters.owner, 'Deteriorating Patient Programme');
    assert.equal(body.parameters.threshold, 5);
    const out = Object.fromEntries(body.outputs.map((o) => [o.name, o]));
    assert.deepEqual(out.news2Total, {
      name: 'news2Total',
      datatype: 'FP32',
      shape: [2],
      data: predictions.map((p) => p.news2Total),
    });
    assert.deepEqual(
      out.verdict?.data,
      predictions.map((p) => p.verdict),
    );
    assert.deepEqual(
      out.aboveThreshold?.data,
      predictions.map((p) => p.aboveThreshold),
    );
    assert.deepEqual(
      out.clinicalRisk?.data,
      predictions.map((p) => p.clinicalRisk),
    );
    // a vector output: [N, columns], row-major, its column names in parameters
    const sub = out.subscores as unknown as { shape: number[]; data: number[]; parameters: { columns: string } };
    const columns = sub.parameters.columns.split(',');
    assert.deepEqual(sub.shape, [2, columns.length]);
    assert.deepEqual(
      sub.data,
      predictions.flatMap((p) => columns.map((c) => (p.subscores as Record<string, number>)[c])),
    );
    assert.ok((predictions[0]?.news2Total as number) > (predictions[1]?.news2Total as number));
  });

  it('infer on another model, [N, 1] shapes and nested data, only the outputs asked for', async () => {
    const meta = (await (await call('/v2/models/deterioration', t.keys.client)).json()) as {
      inputs: { name: string; datatype: string; shape: number[] }[];
    };
    const values: Record<string, number | boolean | string> = {};
    const detail = (await (await call('/v1/models/deterioration', t.keys.client)).json()) as {
      input: { features: { name: string; type: string; min?: number; max?: number; values?: string[] }[] };
    };
    for (const f of detail.input.features) {
      values[f.name] =
        f.type === 'boolean'
          ? true
          : f.type === 'enum'
            ? (f.values?.[0] as string)
            : Math.round(((f.min as number) + (f.max as number)) / 2);
    }
    const v1 = (await (await predict(t.app, 'deterioration', { instances: [values] }, t.keys.client)).json()) as {
      predictions: Record<string, number>[];
    };
    const inputs = meta.inputs.map((m) => ({
      name: m.name,
      datatype: m.datatype,
      shape: [1, 1],
      data: [[values[m.name]]],
    }));
    const res = await call('/v2/models/deterioration/infer', t.keys.client, {
      inputs,
      outputs: [{ name: 'deteriorationRisk' }],
    });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { outputs: { name: string; data: number[] }[] };
    assert.deepEqual(
      body.outputs.map((o) => o.name),
      ['deteriorationRisk'],
    );
    assert.deepEqual(body.outputs[0]?.data, [v1.predictions[0]?.deteriorationRisk]);
  });

  it("one [N, F] matrix in the model's feature order (booleans 0/1, enums by index) scores the same", async () => {
    const detail = (await (await call('/v1/models/news2', t.keys.client)).json()) as {
      input: { features: { name: string; type: string; values?: string[]; default?: number }[] };
    };
    const features = detail.input.features;
    const row = (p: Record<string, unknown>) =>
      features.map((f) =>
        f.type === 'boolean'
          ? Number(p[f.name])
          : f.type === 'enum'
            ? (f.values ?? []).indexOf(p[f.name] as string)
            : ((p[f.name] as number | undefined) ?? f.default),
      );
    const v1 = (await (await predict(t.app, 'news2', { instances: PATIENTS }, t.keys.client)).json()) as {
      predictions: Record<string, unknown>[];
    };
    const matrix = { name: 'features', datatype: 'FP32', shape: [2, features.length], data: PATIENTS.map(row) };
    const res = await call('/v2/models/news2/infer', t.keys.client, { inputs: [matrix] });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { outputs: { name: string; data: unknown[] }[] };
    const scores = body.outputs.find((o) => o.name === 'news2Total')?.data;
    assert.deepEqual(
      scores,
      v1.predictions.map((p) => p.news2Total),
    );
    // the sync tier's range check, pointed at the value in the matrix
    const spo2 = features.findIndex((f) => f.name === 'spo2');
    const bad = { ...matrix, data: PATIENTS.map(row).map((r, i) => (i === 1 ? r.with(spo2, 20) : r)) };
    const refused = await call('/v2/models/news2/infer', t.keys.client, { inputs: [bad] });
    assert.equal(refused.status, 400);
    const problem = await problemBody(refused);
    assert.equal(problem.code, 'invalid_input');
    assert.deepEqual(problem.errors, [
      { pointer: `/inputs/0/data/${features.length + spo2}`, detail: 'out of range: allowed 50..100 %' },
    ]);
  });

  it('model metadata: one typed input tensor per feature, outputs from the manifest', async () => {
    const res = await call('/v2/models/news2', t.keys.client);
    assert.equal(res.status, 200);
    const meta = (await res.json()) as {
      name: string;
      versions: string[];
      platform: string;
      inputs: { name: string; datatype: string; shape: number[] }[];
      outputs: { name: string; datatype: string; shape: number[] }[];
    };
    assert.equal(meta.name, 'news2');
    assert.equal(meta.platform, 'onnxruntime_onnx');
    assert.ok(meta.versions.includes('1'));
    assert.deepEqual(Object.fromEntries(meta.inputs.map((i) => [i.name, i.datatype])), DATATYPE);
    assert.ok(meta.inputs.every((i) => i.shape.length === 1 && i.shape[0] === -1));
    const outputs = Object.fromEntries(meta.outputs.map((o) => [o.name, o]));
    assert.equal(outputs.news2Total?.datatype, 'FP32');
    assert.equal(outputs.aboveThreshold?.datatype, 'BOOL');
    assert.equal(outputs.verdict?.datatype, 'BYTES');
    assert.equal(outputs.subscores?.shape.length, 2);
  });

  it('health and readiness: server live and ready, a warm sync model ready, an async model not (409)', async () => {
    assert.deepEqual(await (await call('/v2/health/live', undefined)).json(), { live: true });
    assert.deepEqual(await (await call('/v2/health/ready', undefined)).json(), { ready: true });
    assert.deepEqual(await (await call('/v2/models/news2/ready', t.keys.client)).json(), {
      name: 'news2',
      ready: true,
    });
    const server = (await (await call('/v2', t.keys.client)).json()) as { name: string };
    assert.equal(server.name, 'triage');
    const notReady = await call('/v2/models/note-triage/ready', t.keys.client);
    assert.equal(notReady.status, 409);
    const body = await problemBody(notReady);
    assert.equal(body.code, 'wrong_tier');
    assert.equal(body.endpoint, '/v1/models/note-triage/jobs');
    assert.equal(typeof body.error, 'string');
  });

  it('errors are problem+json with a stable code and the OIP `error` member', async () => {
    const expect = async (res: Response, status: number, code: string) => {
      assert.equal(res.status, status);
      const body = await problemBody(res);
      assert.equal(body.code, code);
      assert.equal(body.error, body.detail ?? body.title);
      return body;
    };
    const news2 = '/v2/models/news2/infer';
    const good = tensors([PATIENTS[0] as Record<string, unknown>]);
    await expect(await call(news2, undefined, { inputs: good }), 401, 'unauthenticated');
    // the model allowlist of the key applies
    await expect(await call('/v2/models/deterioration/infer', t.keys.news2Only, { inputs: good }), 403, 'forbidden');
    await expect(await call('/v2/models/nope/infer', t.keys.client, { inputs: good }), 404, 'model_not_found');
    await expect(await call('/v2/models/note-triage/infer', t.keys.client, { inputs: good }), 409, 'wrong_tier');
    const shape = await expect(
      await call(news2, t.keys.client, { inputs: [{ name: 'spo2' }] }),
      400,
      'invalid_request',
    );
    assert.match(String(shape.detail), /^inputs\.0\.shape: /);
    await expect(
      await call(news2, t.keys.client, { inputs: good }, { 'x-request-timeout-ms': 'soon' }),
      400,
      'invalid_header',
    );

    const unknown = await expect(
      await call(news2, t.keys.client, {
        inputs: [...good, { name: 'mrn', shape: [1], datatype: 'BYTES', data: ['x'] }],
      }),
      400,
      'invalid_input',
    );
    assert.deepEqual((unknown.errors as { pointer: string }[])[0]?.pointer, `/inputs/${good.length}/name`);
    const typed = good.map((g) => (g.name === 'onOxygen' ? { ...g, datatype: 'FP32', data: [1] } : g));
    await expect(await call(news2, t.keys.client, { inputs: typed }), 400, 'invalid_input');
    const twoRows = good.map((g) => ({ ...g, shape: [2, 1] }));
    await expect(await call(news2, t.keys.client, { inputs: twoRows }), 400, 'invalid_input');

    // the sync tier's own checks, pointed into the tensors
    const spo2 = good.findIndex((g) => g.name === 'spo2');
    const outOfRange = good.map((g) => (g.name === 'spo2' ? { ...g, data: [20] } : g));
    const range = await expect(await call(news2, t.keys.client, { inputs: outOfRange }), 400, 'invalid_input');
    assert.deepEqual(range.errors, [{ pointer: `/inputs/${spo2}/data/0`, detail: 'out of range: allowed 50..100 %' }]);
    const missing = await expect(
      await call(news2, t.keys.client, { inputs: good.filter((g) => g.name !== 'pulse') }),
      400,
      'invalid_input',
    );
    assert.deepEqual(missing.errors, [{ pointer: '/inputs', detail: 'tensor "pulse" is required' }]);
    const many = tensors(Array.from({ length: 1000 }, () => PATIENTS[0] as Record<string, unknown>));
    await expect(await call(news2, t.keys.client, { inputs: many }), 400, 'batch_too_large');
  });

  it('infer counts against the predict rate-limit class, as v1 predict does', () => {
    assert.equal(endpointClass('POST', '/v2/models/news2/infer', undefined), 'predict');
  });
});

describe('OIP v2 infer meets the sync tier: deadline and admission', () => {
  const control = new RuntimeControl();
  let t: TestGateway;
  before(async () => {
    t = await buildGateway({ runtimeFactory: control.factory(), sync: { news2: { maxConcurrency: 1 } } });
    control.armed = true;
  });
  after(async () => {
    control.release();
    await t.close();
  });

  const infer = () =>
    Promise.resolve(
      t.app.request('/v2/models/news2/infer', {
        method: 'POST',
        headers: { authorization: `Bearer ${t.keys.client}`, 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: tensors([PATIENTS[0] as Record<string, unknown>]) }),
      }),
    );

  it('a held runtime: 504 no score at the deadline, 503 while its run holds the only slot, 200 once free', async () => {
    control.hold();
    const late = await infer();
    assert.equal(late.status, 504);
    const deadline = await problemBody(late);
    assert.equal(deadline.code, 'deadline_exceeded');
    assert.equal(deadline.action, 'no score: follow the standard protocol');
    assert.equal(typeof deadline.error, 'string');
    // the abandoned run still occupies news2's one slot until the runtime lets it go
    await waitFor(() => t.deps.sync.status('news2')?.inFlight === 1, 'the held run in flight');
    const shed = await infer();
    assert.equal(shed.status, 503);
    assert.equal(shed.headers.get('retry-after'), '1');
    assert.equal((await problemBody(shed)).code, 'overloaded');
    control.release();
    await waitFor(() => t.deps.sync.status('news2')?.inFlight === 0, 'the slot released');
    assert.equal((await infer()).status, 200);
  });
});
