/**
 * Every HTTP route through `app.request()` on a real app: real ONNX sessions on the bundled models, real Redis behind
 * /readyz, real metrics. Overload, deadlines and batching use the REAL runtime wrapped so its runs can be counted,
 * delayed or held (RuntimeControl in support.ts).
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import * as ort from 'onnxruntime-node';
import YAML from 'yaml';
import { NO_SCORE_ACTION } from '../src/serving/scorer.ts';
import {
  buildGateway,
  captureLogs,
  MODELS_DIR,
  metricValue,
  predict,
  problemBody,
  REDIS_URL,
  RuntimeControl,
  type TestGateway,
  waitFor,
} from './support/index.ts';

// ---------------------------------------------------------------------------------------------------------------
// Real vital signs: the official FHIR R4 example Observations, mapped to features by the LOINC codes in the manifest.

const FHIR_DIR = fileURLToPath(new URL('../../shared/data/fhir/', import.meta.url));

interface Coding {
  system?: string;
  code?: string;
}
interface Observation {
  code: { coding: Coding[] };
  valueQuantity?: { value: number };
  component?: Array<{ code: { coding: Coding[] }; valueQuantity?: { value: number } }>;
}

async function fhirVitalsByLoinc(): Promise<Map<string, number>> {
  const byLoinc = new Map<string, number>();
  const loinc = (codings: Coding[]) =>
    codings.filter((c) => c.system === 'http://loinc.org').map((c) => c.code as string);
  for (const file of (await readdir(FHIR_DIR)).filter((f) => f.startsWith('Observation-'))) {
    const obs = JSON.parse(await readFile(path.join(FHIR_DIR, file), 'utf8')) as Observation;
    if (obs.valueQuantity) for (const code of loinc(obs.code.coding)) byLoinc.set(code, obs.valueQuantity.value);
    for (const part of obs.component ?? []) {
      if (part.valueQuantity) for (const code of loinc(part.code.coding)) byLoinc.set(code, part.valueQuantity.value);
    }
  }
  return byLoinc;
}

/** Features of a model that carry a LOINC code, filled from the FHIR examples; fails if one is missing. */
async function fhirInstance(model: string): Promise<Record<string, number>> {
  const manifest = YAML.parse(await readFile(path.join(MODELS_DIR, model, 'model.yaml'), 'utf8')) as {
    features: Array<{ name: string; loinc?: string | string[] }>;
  };
  const vitals = await fhirVitalsByLoinc();
  const out: Record<string, number> = {};
  for (const f of manifest.features) {
    if (!f.loinc) continue;
    const codes = Array.isArray(f.loinc) ? f.loinc : [f.loinc];
    const value = codes.map((c) => vitals.get(c)).find((v) => v !== undefined);
    assert.ok(value !== undefined, `no FHIR example Observation carries ${f.name} (${codes.join(', ')})`);
    out[f.name] = value;
  }
  return out;
}

const JSON_TYPE = 'application/json';

/** The parts of GET /v1/models/{model} these tests read. */
interface ModelDetail {
  name: string;
  tier: string;
  tierReasons: string[];
  disclaimer?: string;
  warmupP99Ms?: number;
  input: {
    kind: string;
    features: Array<{
      name: string;
      type: string;
      unit?: string;
      loinc?: string | string[];
      min?: number;
      max?: number;
      required: boolean;
    }>;
  };
  output: { threshold: number };
  versions: Array<{
    version: string;
    role: string;
    runtime: string;
    sha256: string;
    evidence: { approvedThreshold: number; rollbackTarget: string | null; approvedBy: string } | null;
  }>;
}
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let NEWS2: Record<string, unknown>;
let DETERIORATION: Record<string, unknown>;

before(async () => {
  // FHIR examples: respiratory rate 26, SpO2 95, systolic 107, heart rate 44, temperature 36.5
  NEWS2 = { ...(await fhirInstance('news2')), onOxygen: false, consciousness: 'alert' };
  DETERIORATION = { ...(await fhirInstance('deterioration')), age: 70, onOxygen: false };
});

describe('predict, registry and ops routes', () => {
  let t: TestGateway;
  let logs: ReturnType<typeof captureLogs>;
  before(async () => {
    logs = captureLogs('info');
    t = await buildGateway({ logger: logs.logger });
  });
  after(() => t.close());

  it('scores the FHIR example vitals with NEWS2: values worked out by hand from RCP Chart 1', async () => {
    assert.deepEqual(NEWS2, {
      respirationRate: 26,
      spo2: 95,
      systolicBP: 107,
      pulse: 44,
      temperature: 36.5,
      onOxygen: false,
      consciousness: 'alert',
    });
    const res = await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type')?.split(';')[0], JSON_TYPE);
    const body = (await res.json()) as Record<string, unknown>;
    const requestId = res.headers.get('x-request-id');
    assert.match(requestId ?? '', UUID);
    assert.deepEqual(body, {
      model: 'news2',
      version: '1',
      tier: 'sync',
      owner: { team: 'Deteriorating Patient Programme', contact: 'news2-owners@example.org' },
      requestId,
      threshold: 5,
      predictions: [
        {
          // RR 26 → 3, SpO2 95 (scale 1) → 1, air → 0, systolic 107 → 1, pulse 44 → 1, alert → 0, 36.5 °C → 0
          news2Total: 6,
          verdict: 'urgent-response',
          aboveThreshold: true,
          subscores: {
            respirationRate: 3,
            spo2: 1,
            airOrOxygen: 0,
            systolicBP: 1,
            pulse: 1,
            consciousness: 0,
            temperature: 0,
          },
          clinicalRisk: 'medium',
        },
      ],
    });
    assert.equal(res.headers.get('x-model-name'), 'news2');
    assert.equal(res.headers.get('x-model-version'), '1');
    assert.equal(res.headers.get('x-model-tier'), 'sync');
    assert.equal(res.headers.get('x-model-owner'), 'Deteriorating Patient Programme');
  });

  it('scores several instances in one request, in order', async () => {
    const calm = { ...NEWS2, respirationRate: 16, spo2: 97, systolicBP: 120, pulse: 70, temperature: 37 };
    const res = await predict(
      t.app,
      'news2',
      { instances: [calm, NEWS2, { ...calm, consciousness: 'voice' }] },
      t.keys.client,
    );
    assert.equal(res.status, 200);
    const { predictions } = (await res.json()) as { predictions: Array<Record<string, unknown>> };
    assert.deepEqual(
      predictions.map((p) => [p.news2Total, p.verdict, p.clinicalRisk]),
      [
        [0, 'routine-monitoring', 'low'],
        [6, 'urgent-response', 'medium'],
        [3, 'routine-monitoring', 'low-medium'],
      ],
    );
  });

  it('scores deterioration with its primary version (1), exactly as the ONNX file does with the manifest column order', async () => {
    const res = await predict(t.app, 'deterioration', { instances: [DETERIORATION] }, t.keys.client);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { predictions: Array<Record<string, unknown>> } & Record<string, unknown>;
    assert.equal(body.model, 'deterioration');
    assert.equal(body.version, '1');
    assert.equal(body.tier, 'sync');
    assert.deepEqual(body.owner, { team: 'Clinical AI Platform', contact: 'clinical-ai@example.org' });
    assert.equal(body.threshold, 0.3);
    assert.equal(res.headers.get('x-model-owner'), 'Clinical AI Platform');
    assert.equal(body.requestId, res.headers.get('x-request-id'));

    const row = ['age', 'respirationRate', 'spo2', 'systolicBP', 'pulse', 'temperature', 'onOxygen'].map((k) =>
      Number(DETERIORATION[k]),
    );
    const direct = async (version: string) => {
      const session = await ort.InferenceSession.create(path.join(MODELS_DIR, 'deterioration', version, 'model.onnx'));
      const out = await session.run({ features: new ort.Tensor('float32', Float32Array.from(row), [1, row.length]) });
      await session.release();
      const probability = out.probability?.data[0];
      assert.equal(typeof probability, 'number');
      return Math.round((probability as number) * 1e6) / 1e6; // the gateway reports six decimals
    };
    const v1 = await direct('1');
    assert.notEqual(await direct('2'), v1, 'the two versions must disagree for this check to mean anything');
    const [p] = body.predictions;
    assert.equal(p?.deteriorationRisk, v1);
    assert.equal(p?.aboveThreshold, v1 >= 0.3);
    assert.equal(p?.verdict, v1 >= 0.3 ? 'escalate' : 'no-escalation');
    assert.deepEqual(Object.keys(p ?? {}).sort(), ['aboveThreshold', 'deteriorationRisk', 'verdict']);
  });

  it('echoes an incoming x-request-id that is a UUID and replaces anything else', async () => {
    const safe = '0b5e1a6c-3f4d-4e2a-9c1b-7d8e9f0a1b2c';
    let res = await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client, { 'x-request-id': safe });
    assert.equal(res.headers.get('x-request-id'), safe);
    assert.equal(((await res.json()) as { requestId: string }).requestId, safe);

    // free-form ids are where integrations put patient identifiers, and the request id is in every log line
    for (const unsafe of ['has spaces', '<script>', 'x'.repeat(129), 'a/b', 'ehr-42.req:7_A', 'MRN-99887766']) {
      res = await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client, { 'x-request-id': unsafe });
      const id = res.headers.get('x-request-id');
      assert.match(id ?? '', UUID, `unsafe ${JSON.stringify(unsafe)} must be replaced`);
      assert.equal(((await res.json()) as { requestId: string }).requestId, id);
    }
    // problems carry it too
    res = await predict(t.app, 'news2', '{', t.keys.client, { 'x-request-id': safe });
    assert.equal(res.headers.get('x-request-id'), safe);
    assert.equal((await problemBody(res)).requestId, safe);
    res = await t.app.request('/healthz', { headers: { 'x-request-id': safe } });
    assert.equal(res.headers.get('x-request-id'), safe);
  });

  it('GET /v1/models lists the models a key may see', async () => {
    const list = async (key: string) => {
      const res = await t.app.request('/v1/models', { headers: { authorization: `Bearer ${key}` } });
      assert.equal(res.status, 200);
      return ((await res.json()) as { models: Array<Record<string, unknown>> }).models;
    };
    // the registry may hold more models than these two: a key allowed `*` sees every one of them
    const registry = t.deps.catalog.list().map((m) => m.manifest.name);
    assert.ok(registry.includes('news2') && registry.includes('deterioration'));
    const all = await list(t.keys.client);
    assert.deepEqual(
      all.map((m) => m.name),
      registry,
    );
    const news2 = all.find((m) => m.name === 'news2');
    assert.deepEqual(news2, {
      name: 'news2',
      title: 'National Early Warning Score 2 (NEWS2)',
      owner: { team: 'Deteriorating Patient Programme', contact: 'news2-owners@example.org' },
      tier: 'sync',
      state: 'warm',
      version: '1',
      links: { self: '/v1/models/news2', predict: '/v1/models/news2/predict' },
    });
    assert.deepEqual(
      (await list(t.keys.news2Only)).map((m) => m.name),
      ['news2'],
    );
    assert.deepEqual(
      (await list(t.keys.reviewer)).map((m) => m.name),
      registry,
    );
    assert.equal((await t.app.request('/v1/models')).status, 401);
  });

  it('GET /v1/models/news2 shows features, versions with evidence and why it is sync', async () => {
    const res = await t.app.request('/v1/models/news2', { headers: { authorization: `Bearer ${t.keys.news2Only}` } });
    assert.equal(res.status, 200);
    const d = (await res.json()) as ModelDetail;
    assert.equal(d.name, 'news2');
    assert.equal(d.tier, 'sync');
    assert.deepEqual(d.tierReasons, ['decision window 2000 ms within the sync ceiling 5000 ms']);
    assert.match(d.disclaimer ?? '', /not validated for children/);
    assert.equal(d.input.kind, 'features');
    assert.deepEqual(
      d.input.features.map((f) => f.name),
      ['respirationRate', 'spo2', 'spo2Scale', 'onOxygen', 'systolicBP', 'pulse', 'consciousness', 'temperature'],
    );
    const pulse = d.input.features.find((f) => f.name === 'pulse');
    assert.deepEqual(
      {
        type: pulse?.type,
        unit: pulse?.unit,
        loinc: pulse?.loinc,
        min: pulse?.min,
        max: pulse?.max,
        required: pulse?.required,
      },
      { type: 'integer', unit: 'beats/min', loinc: '8867-4', min: 20, max: 250, required: true },
    );
    assert.equal(d.output.threshold, 5);
    assert.equal(typeof d.warmupP99Ms, 'number');
    assert.equal(d.versions.length, 1);
    const [v] = d.versions;
    assert.equal(v?.version, '1');
    assert.equal(v?.role, 'primary');
    assert.equal(v?.runtime, 'onnx');
    assert.match(v?.sha256 ?? '', /^[a-f0-9]{64}$/);
    assert.equal(v?.evidence?.approvedThreshold, 5);
    assert.equal(v?.evidence?.rollbackTarget, null);
    assert.match(v?.evidence?.approvedBy ?? '', /clinical safety officer/);

    const det = (await (
      await t.app.request('/v1/models/deterioration', { headers: { authorization: `Bearer ${t.keys.reviewer}` } })
    ).json()) as ModelDetail;
    assert.deepEqual(
      det.versions.map((x) => [x.version, x.role, x.evidence?.rollbackTarget]),
      [
        ['1', 'primary', null],
        ['2', 'candidate', '1'],
      ],
    );

    const forbidden = await t.app.request('/v1/models/deterioration', {
      headers: { authorization: `Bearer ${t.keys.news2Only}` },
    });
    assert.equal(forbidden.status, 403);
    assert.equal((await problemBody(forbidden)).code, 'forbidden');
    const missing = await t.app.request('/v1/models/nope', { headers: { authorization: `Bearer ${t.keys.client}` } });
    assert.equal(missing.status, 404);
    assert.equal((await problemBody(missing)).code, 'model_not_found');
  });

  it('refuses a sync call to every non-sync model of the registry with a pointer to its endpoint', async () => {
    for (const m of t.deps.catalog.list().filter((x) => x.tier !== 'sync')) {
      const res = await predict(t.app, m.manifest.name, { instances: [{}] }, t.keys.client);
      assert.equal(res.status, 409, m.manifest.name);
      const body = await problemBody(res);
      assert.equal(body.code, 'wrong_tier');
      assert.equal(body.endpoint, `/v1/models/${m.manifest.name}/${m.tier === 'async' ? 'jobs' : 'batches'}`);
    }
  });

  it('/healthz and /readyz (real Redis)', async () => {
    const health = await t.app.request('/healthz');
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok' });
    const ready = await t.app.request('/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready', checks: { redis: 'ok', models: 'warm' } });
  });

  it('/metrics labels request durations by model, never by patient values', async () => {
    const res = await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client);
    assert.equal(res.status, 200);
    const metrics = await t.app.request('/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await metrics.text();
    assert.ok(
      (metricValue(text, 'triage_http_request_duration_seconds_count', {
        route: '/v1/models/:model/predict',
        method: 'POST',
        status: '200',
        model: 'news2',
        version: '1',
        tier: 'sync',
      }) ?? 0) >= 1,
    );
    assert.ok((metricValue(text, 'triage_inference_batch_rows_count', { model: 'news2', version: '1' }) ?? 0) >= 1);
    assert.ok(
      metricValue(text, 'triage_model_warmup_p99_seconds', { model: 'deterioration', version: '1' }) !== undefined,
    );
  });

  it('keeps patient values out of logs and metrics, on success and on error', async () => {
    const instance = { ...NEWS2, pulse: 137, respirationRate: 23 };
    const instanceJson = JSON.stringify(instance);
    logs.lines.length = 0;
    const ok = await predict(t.app, 'news2', { instances: [instance] }, t.keys.client);
    assert.equal(ok.status, 200);
    const bad = await predict(t.app, 'news2', { instances: [{ ...instance, spo2: 'ninety-one' }] }, t.keys.client);
    assert.equal(bad.status, 400);
    const viaHeader = await t.app.request('/v1/models/news2/predict', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': t.keys.admin },
      body: JSON.stringify({ instances: [instance] }),
    });
    assert.equal(viaHeader.status, 200);

    // the access log did record the three requests (so the capture works) ...
    const entries = logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const access = entries.filter((e) => e.msg === 'request' && e.route === '/v1/models/:model/predict');
    assert.equal(access.length, 3);
    assert.deepEqual(
      access.map((e) => [e.status, e.model, e.principal]),
      [
        ['200', 'news2', 'client'],
        ['400', 'news2', 'client'],
        ['200', 'news2', 'admin'],
      ],
    );
    // ... and nothing of the body or the keys
    const logText = logs.lines.join('');
    for (const forbidden of [instanceJson, 'ninety-one', '"pulse"', 'respirationRate', t.keys.client, t.keys.admin]) {
      assert.ok(!logText.includes(forbidden), `logs contain ${forbidden}`);
    }
    const text = await (await t.app.request('/metrics')).text();
    assert.ok(!text.includes(instanceJson));
    assert.ok(!text.includes('ninety-one'));
    assert.doesNotMatch(text, /="(137|23)"/, 'no label carries a patient value');
    // a feature's name is a label only of the drift gauge (`feature`: from the manifest, bounded), never with a value
    assert.doesNotMatch(text.replaceAll(/feature="[A-Za-z0-9]+"/g, ''), /pulse|respirationRate/);
  });
});

// ---------------------------------------------------------------------------------------------------------------

interface BadRow {
  name: string;
  method?: string;
  /** the model segment of /v1/models/{model}/predict, or a whole path starting with / */
  model?: string;
  path?: string;
  /** null removes a default header */
  headers?: Record<string, string | null>;
  /** a string is sent as is; anything else as JSON */
  body?: unknown;
  status: number;
  code: string;
  /** JSON pointers expected in `errors` */
  pointers?: string[];
  /** submitted values that must not come back in the error body */
  secret?: string[];
  allow?: string;
}

describe('bad input gets a clear 4xx problem, never a 5xx', () => {
  let t: TestGateway;
  before(async () => {
    t = await buildGateway();
  });
  after(() => t.close());

  const valid = () => ({ ...NEWS2 });
  const withField = (k: string, v: unknown) => JSON.stringify({ instances: [{ ...valid(), [k]: v }] });
  const raw = (k: string, literal: string) =>
    JSON.stringify({ instances: [{ ...valid(), [k]: 0 }] }).replace(`"${k}":0`, `"${k}":${literal}`);
  const without = (k: string) => {
    const v: Record<string, unknown> = valid();
    delete v[k];
    return { instances: [v] };
  };

  const rows = (): BadRow[] => [
    { name: 'malformed JSON', body: '{"instances": [', status: 400, code: 'malformed_json' },
    { name: 'empty body', body: '', status: 400, code: 'malformed_json' },
    {
      name: 'text/plain',
      headers: { 'content-type': 'text/plain' },
      body: { instances: [valid()] },
      status: 415,
      code: 'unsupported_media_type',
    },
    {
      name: 'application/jsonp',
      headers: { 'content-type': 'application/jsonp' },
      body: { instances: [valid()] },
      status: 415,
      code: 'unsupported_media_type',
    },
    {
      name: 'no content type',
      headers: { 'content-type': null },
      body: new TextEncoder().encode(JSON.stringify({ instances: [valid()] })),
      status: 415,
      code: 'unsupported_media_type',
    },
    { name: 'NaN literal', body: raw('pulse', 'NaN'), status: 400, code: 'malformed_json' },
    { name: 'Infinity literal', body: raw('pulse', 'Infinity'), status: 400, code: 'malformed_json' },
    {
      name: '1e400 (parses to Infinity)',
      body: raw('pulse', '1e400'),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/pulse'],
    },
    {
      name: 'string for a number',
      body: withField('pulse', 'seventy-one'),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/pulse'],
      secret: ['seventy-one'],
    },
    {
      name: 'numeric string for a number',
      body: withField('systolicBP', '118'),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/systolicBP'],
      secret: ['118'],
    },
    {
      name: 'out of range',
      body: withField('pulse', 987),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/pulse'],
      secret: ['987'],
    },
    {
      name: 'below range',
      body: withField('spo2', 12),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/spo2'],
    },
    {
      name: 'non-integer for an integer',
      body: withField('pulse', 71.5),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/pulse'],
      secret: ['71.5'],
    },
    {
      name: 'missing required',
      body: without('pulse'),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/pulse'],
    },
    {
      name: 'null for a required feature',
      body: withField('temperature', null),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/temperature'],
    },
    {
      name: 'unknown feature',
      body: withField('heartRate', 70),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/heartRate'],
    },
    {
      name: '__proto__ key',
      body: withField('pulse', 70).replace('"pulse":70', '"pulse":70,"__proto__":{"polluted":"yes"}'),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/__proto__'],
      secret: ['polluted'],
    },
    {
      name: 'enum value not allowed',
      body: withField('consciousness', 'drowsy'),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/consciousness'],
      secret: ['drowsy'],
    },
    {
      name: 'enum value in another case',
      body: withField('consciousness', 'ALERT'),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/consciousness'],
    },
    {
      name: 'boolean as string',
      body: withField('onOxygen', 'false'),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/onOxygen'],
    },
    {
      name: 'boolean as 0/1',
      body: withField('onOxygen', 0),
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0/onOxygen'],
    },
    {
      name: 'instance not an object (number)',
      body: { instances: [42] },
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0'],
    },
    {
      name: 'instance not an object (array)',
      body: { instances: [valid(), [1, 2]] },
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/1'],
    },
    {
      name: 'instance null',
      body: { instances: [null] },
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/0'],
    },
    {
      name: 'second instance wrong, first fine',
      body: { instances: [valid(), { ...valid(), spo2: 101 }] },
      status: 400,
      code: 'invalid_input',
      pointers: ['/instances/1/spo2'],
    },
    { name: 'instances not an array', body: { instances: valid() }, status: 400, code: 'invalid_request' },
    { name: 'instances missing', body: {}, status: 400, code: 'invalid_request' },
    { name: 'body is an array', body: [valid()], status: 400, code: 'invalid_request' },
    { name: 'body is null', body: 'null', status: 400, code: 'invalid_request' },
    { name: 'body is a string', body: '"instances"', status: 400, code: 'invalid_request' },
    { name: 'empty instances', body: { instances: [] }, status: 400, code: 'invalid_request' },
    {
      name: 'more than maxInstances',
      body: { instances: Array.from({ length: 101 }, valid) },
      status: 400,
      code: 'batch_too_large',
    },
    {
      name: 'extra top-level field',
      body: { instances: [valid()], parameters: { explain: true } },
      status: 400,
      code: 'invalid_request',
    },
    { name: 'unknown model', model: 'sepsis', body: { instances: [valid()] }, status: 404, code: 'model_not_found' },
    {
      name: 'encoded traversal in the name',
      model: '..%2F..%2Fetc',
      body: { instances: [valid()] },
      status: 404,
      code: 'model_not_found',
    },
    {
      name: 'dot-dot traversal (normalised away)',
      path: '/v1/models/../news2/predict',
      body: { instances: [valid()] },
      status: 404,
      code: 'not_found',
    },
    { name: 'upper-case name', model: 'NEWS2', body: { instances: [valid()] }, status: 404, code: 'model_not_found' },
    {
      name: 'NUL in the name',
      model: 'news2%00',
      body: { instances: [valid()] },
      status: 404,
      code: 'model_not_found',
    },
    {
      name: 'very long name',
      model: 'n'.repeat(4000),
      body: { instances: [valid()] },
      status: 404,
      code: 'model_not_found',
    },
    { name: 'GET on predict', method: 'GET', body: undefined, status: 405, code: 'method_not_allowed', allow: 'POST' },
    {
      name: 'PUT on predict',
      method: 'PUT',
      body: { instances: [valid()] },
      status: 405,
      code: 'method_not_allowed',
      allow: 'POST',
    },
    {
      name: 'DELETE on the model',
      method: 'DELETE',
      path: '/v1/models/news2',
      status: 405,
      code: 'method_not_allowed',
      allow: 'GET, HEAD',
    },
    { name: 'unknown route', path: '/v1/nothing-here', method: 'GET', status: 404, code: 'not_found' },
    ...['abc', '0', '-5', '1.5', '1e3', '9999999'].map(
      (value): BadRow => ({
        name: `x-request-timeout-ms: ${value}`,
        headers: { 'x-request-timeout-ms': value },
        body: { instances: [valid()] },
        status: 400,
        code: 'invalid_header',
      }),
    ),
  ];

  it('answers every row of the table as expected', async () => {
    for (const row of rows()) {
      const method = row.method ?? 'POST';
      const target = row.path ?? `/v1/models/${row.model ?? 'news2'}/predict`;
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        authorization: `Bearer ${t.keys.client}`,
      };
      for (const [k, v] of Object.entries(row.headers ?? {})) {
        if (v === null) delete headers[k];
        else headers[k] = v;
      }
      const body =
        method === 'GET' || method === 'HEAD' || row.body === undefined
          ? undefined
          : typeof row.body === 'string' || row.body instanceof Uint8Array
            ? row.body
            : JSON.stringify(row.body);
      const res = await t.app.request(target, {
        method,
        headers,
        ...(body === undefined ? {} : { body: body as BodyInit }),
      });
      const label = `${row.name}: ${res.status}`;
      assert.ok(res.status < 500, label);
      assert.equal(res.status, row.status, label);
      const problem = await problemBody(res);
      assert.equal(problem.code, row.code, label);
      assert.equal(problem.status, row.status, label);
      assert.equal(typeof problem.title, 'string', label);
      assert.equal(problem.requestId, res.headers.get('x-request-id'), label);
      assert.equal(res.headers.get('cache-control'), 'no-store', label);
      if (row.allow) assert.equal(res.headers.get('allow'), row.allow, label);
      if (row.pointers) {
        const errors = problem.errors as Array<{ pointer: string; detail: string }>;
        assert.deepEqual(
          errors.map((e) => e.pointer),
          row.pointers,
          label,
        );
        for (const e of errors) assert.equal(typeof e.detail, 'string', label);
      } else {
        assert.equal(problem.errors, undefined, label);
      }
      const { requestId: _id, instance: _path, ...rest } = problem;
      for (const secret of row.secret ?? [])
        assert.ok(!JSON.stringify(rest).includes(secret), `${label} echoes ${secret}`);
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution');
  });

  it('reports every problem of a request (capped) with pointers, not just the first', async () => {
    const res = await predict(
      t.app,
      'news2',
      {
        instances: [
          { ...valid(), pulse: 'x', spo2: 300, extra: 1 },
          { ...valid(), temperature: undefined },
        ],
      },
      t.keys.client,
    );
    assert.equal(res.status, 400);
    const errors = (await problemBody(res)).errors as Array<{ pointer: string }>;
    assert.deepEqual(errors.map((e) => e.pointer).sort(), [
      '/instances/0/extra',
      '/instances/0/pulse',
      '/instances/0/spo2',
      '/instances/1/temperature',
    ]);
    const many = await predict(t.app, 'news2', { instances: Array.from({ length: 50 }, () => ({})) }, t.keys.client);
    assert.equal(((await problemBody(many)).errors as unknown[]).length, 20);
  });

  it('accepts an optional feature left out (spo2Scale defaults to 1) and a JSON media type with parameters', async () => {
    const res = await predict(t.app, 'news2', { instances: [valid()] }, t.keys.client, {
      'content-type': 'application/json; charset=utf-8',
    });
    assert.equal(res.status, 200);
    const explicit = await predict(t.app, 'news2', { instances: [{ ...valid(), spo2Scale: 1 }] }, t.keys.client);
    assert.deepEqual(
      ((await res.json()) as { predictions: unknown }).predictions,
      ((await explicit.json()) as { predictions: unknown }).predictions,
    );
  });

  describe('body size limit', () => {
    let small: TestGateway;
    before(async () => {
      small = await buildGateway({ maxBodyBytes: 2048 });
    });
    after(() => small.close());
    const big = () => JSON.stringify({ instances: Array.from({ length: 20 }, () => ({ ...NEWS2 })) });
    const send = (body: BodyInit, headers: Record<string, string> = {}) =>
      small.app.request('/v1/models/news2/predict', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${small.keys.client}`, ...headers },
        body,
        duplex: 'half',
      } as RequestInit);

    it('refuses a body over the limit, declared by content-length or streamed in chunks', async () => {
      const text = big();
      assert.ok(text.length > 2048);
      const declared = await send(text, { 'content-length': String(Buffer.byteLength(text)) });
      assert.equal(declared.status, 413);
      assert.equal((await problemBody(declared)).code, 'payload_too_large');

      const bytes = new TextEncoder().encode(text);
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < bytes.length; i += 256) controller.enqueue(bytes.subarray(i, i + 256));
          controller.close();
        },
      });
      const chunked = await send(stream);
      assert.equal(chunked.status, 413);
      assert.equal((await problemBody(chunked)).code, 'payload_too_large');
    });

    it('still serves a body under the limit, streamed or not', async () => {
      const text = JSON.stringify({ instances: [NEWS2] });
      assert.equal((await send(text)).status, 200);
      const bytes = new TextEncoder().encode(text);
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(bytes.subarray(0, 10));
          controller.enqueue(bytes.subarray(10));
          controller.close();
        },
      });
      const res = await send(stream);
      assert.equal(res.status, 200);
      assert.equal(
        ((await res.json()) as { predictions: Array<{ news2Total: number }> }).predictions[0]?.news2Total,
        6,
      );
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('auth matrix on predict', () => {
  let t: TestGateway;
  before(async () => {
    t = await buildGateway();
  });
  after(() => t.close());

  const call = (model: string, headers: Record<string, string>) =>
    t.app.request(`/v1/models/${model}/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ instances: [model === 'news2' ? NEWS2 : DETERIORATION] }),
    });

  it('401 without a key, with a wrong key or a malformed Authorization; www-authenticate says Bearer', async () => {
    for (const headers of [
      {} as Record<string, string>,
      { authorization: 'Bearer not-a-key' },
      { authorization: `Basic ${Buffer.from(`u:${t.keys.client}`).toString('base64')}` },
      { authorization: t.keys.client },
      { 'x-api-key': 'wrong' },
    ]) {
      const res = await call('news2', headers);
      assert.equal(res.status, 401, JSON.stringify(headers));
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="triage"');
      const body = await problemBody(res);
      assert.equal(body.code, 'unauthenticated');
      assert.ok(!JSON.stringify(body).includes(t.keys.client));
    }
  });

  it('403 for a reviewer and for a client outside its models; 200 for admin, a client, and a key in x-api-key', async () => {
    const reviewer = await call('news2', { authorization: `Bearer ${t.keys.reviewer}` });
    assert.equal(reviewer.status, 403);
    assert.equal((await problemBody(reviewer)).code, 'forbidden');

    const outside = await call('deterioration', { authorization: `Bearer ${t.keys.news2Only}` });
    assert.equal(outside.status, 403);
    assert.equal((await problemBody(outside)).code, 'forbidden');
    assert.equal((await call('news2', { authorization: `Bearer ${t.keys.news2Only}` })).status, 200);

    assert.equal((await call('deterioration', { authorization: `Bearer ${t.keys.admin}` })).status, 200);
    assert.equal((await call('deterioration', { authorization: `bearer ${t.keys.client}` })).status, 200);
    assert.equal((await call('news2', { 'x-api-key': t.keys.client })).status, 200);
    assert.equal((await call('news2', { 'x-api-key': t.keys.reviewer })).status, 403);
  });

  it('ops endpoints can be closed to all but admins', async () => {
    const closed = await buildGateway({ openOpsEndpoints: false });
    try {
      for (const route of ['/metrics', '/readyz', '/healthz']) {
        assert.equal((await closed.app.request(route)).status, 401, route);
        assert.equal(
          (await closed.app.request(route, { headers: { authorization: `Bearer ${closed.keys.client}` } })).status,
          403,
          route,
        );
        assert.equal(
          (await closed.app.request(route, { headers: { authorization: `Bearer ${closed.keys.admin}` } })).status,
          200,
          route,
        );
      }
    } finally {
      await closed.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('readiness follows Redis', () => {
  it('503 problem when redisReady says false or throws, or the real client is closed', async () => {
    let answer: () => Promise<boolean> = async () => false;
    const t = await buildGateway({ redisReady: () => answer() });
    const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false });
    redis.on('error', () => {});
    try {
      const check = async (expected: number) => {
        const res = await t.app.request('/readyz');
        assert.equal(res.status, expected);
        return res;
      };
      let res = await check(503);
      let body = await problemBody(res);
      assert.equal(body.code, 'not_ready');
      assert.deepEqual(body.checks, { redis: 'unreachable', models: 'warm' });

      answer = async () => {
        throw new Error('ECONNREFUSED');
      };
      assert.equal((await problemBody(await check(503))).code, 'not_ready');

      await redis.connect();
      answer = async () => (await redis.ping()) === 'PONG';
      await check(200);
      await redis.quit();
      res = await check(503);
      body = await problemBody(res);
      assert.deepEqual(body.checks, { redis: 'unreachable', models: 'warm' });
      // liveness does not depend on Redis
      assert.equal((await t.app.request('/healthz')).status, 200);
    } finally {
      redis.disconnect();
      await t.close();
    }
  });
  it('503 (not a hang) when Redis stops answering on an open connection', { timeout: 10_000 }, async () => {
    // a TCP proxy in front of the real Redis that can go silent: the connection stays open, nothing comes back
    const upstream = new URL(REDIS_URL);
    let silent = false;
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((client) => {
      const server = net.connect(Number(upstream.port || 6379), upstream.hostname);
      for (const s of [client, server]) {
        sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          client.destroy();
          server.destroy();
        });
      }
      client.on('data', (d) => {
        if (!silent) server.write(d);
      });
      server.on('data', (d) => client.write(d));
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const { port } = proxy.address() as net.AddressInfo;
    const t = await buildGateway({ redisUrl: `redis://127.0.0.1:${port}`, redisCommandTimeoutMs: 500 });
    try {
      assert.equal((await t.app.request('/readyz')).status, 200);
      silent = true;
      const res = await t.app.request('/readyz');
      assert.equal(res.status, 503);
      const body = await problemBody(res);
      assert.equal(body.code, 'not_ready');
      assert.deepEqual(body.checks, { redis: 'unreachable', models: 'warm' });
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => proxy.close(resolve));
      await t.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('tiers: a sync call to an async or batch model is refused with the right endpoint', () => {
  let dir: string;
  let t: TestGateway;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'triage-tiers-'));
    await cp(path.join(MODELS_DIR, 'news2'), path.join(dir, 'news2'), { recursive: true });
    await cp(path.join(MODELS_DIR, 'deterioration'), path.join(dir, 'deterioration'), { recursive: true });
    const edit = async (name: string, change: (m: Record<string, unknown>) => void) => {
      const file = path.join(dir, name, 'model.yaml');
      const m = YAML.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
      change(m);
      await writeFile(file, YAML.stringify(m));
    };
    // news2 as if its results needed human review → async
    await edit('news2', (m) => {
      m.tier = 'async';
      m.review = { policy: 'always' };
      delete m.sync;
    });
    // deterioration scored only on a schedule → batch
    await edit('deterioration', (m) => {
      m.tier = 'batch';
      m.schedules = [{ id: 'nightly', cron: '0 2 * * *', input: { path: 'vitals.ndjson', format: 'ndjson' } }];
      delete m.sync;
      delete m.decisionWindowMs;
    });
    t = await buildGateway({ modelsDir: dir });
  });
  after(async () => {
    await t?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('409 wrong_tier pointing at /jobs for async and /batches for batch', async () => {
    for (const [model, tier, endpoint] of [
      ['news2', 'async', '/v1/models/news2/jobs'],
      ['deterioration', 'batch', '/v1/models/deterioration/batches'],
    ] as const) {
      const res = await predict(
        t.app,
        model,
        { instances: [model === 'news2' ? NEWS2 : DETERIORATION] },
        t.keys.client,
      );
      assert.equal(res.status, 409);
      assert.equal(res.headers.get('link'), `<${endpoint}>; rel="alternate"`);
      const body = await problemBody(res);
      assert.equal(body.code, 'wrong_tier');
      assert.equal(body.tier, tier);
      assert.equal(body.endpoint, endpoint);
    }
  });

  it('lists the tiers, their reasons and endpoints; readiness does not wait for non-sync models', async () => {
    const res = await t.app.request('/v1/models', { headers: { authorization: `Bearer ${t.keys.client}` } });
    const { models } = (await res.json()) as {
      models: Array<{ name: string; tier: string; links: Record<string, string> }>;
    };
    assert.deepEqual(
      models.map((m) => [m.name, m.tier, m.links]),
      [
        ['deterioration', 'batch', { self: '/v1/models/deterioration', batches: '/v1/models/deterioration/batches' }],
        ['news2', 'async', { self: '/v1/models/news2', jobs: '/v1/models/news2/jobs' }],
      ],
    );
    const detail = (await (
      await t.app.request('/v1/models/news2', { headers: { authorization: `Bearer ${t.keys.client}` } })
    ).json()) as { tierReasons: string[] };
    assert.deepEqual(detail.tierReasons, ['review policy "always"']);
    assert.equal((await t.app.request('/readyz')).status, 200);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('overload: past maxConcurrency a request is refused at once', () => {
  const control = new RuntimeControl();
  let t: TestGateway;
  before(async () => {
    t = await buildGateway({
      runtimeFactory: control.factory(),
      sync: { news2: { maxConcurrency: 2 } },
    });
    control.armed = true;
  });
  after(async () => {
    control.release();
    await t.close();
  });

  it('503 overloaded with retry-after while 2 requests hold the slots; they answer 200 once the runtime is free', async () => {
    const shedBefore =
      metricValue(await t.deps.metrics.registry.metrics(), 'triage_shed_total', { model: 'news2' }) ?? 0;
    control.hold();
    const first = predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client);
    const second = predict(t.app, 'news2', { instances: [{ ...NEWS2, pulse: 70 }] }, t.keys.client);
    await waitFor(() => t.deps.sync.status('news2')?.inFlight === 2, 'two admitted requests');

    const third = await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client);
    assert.equal(third.status, 503);
    assert.equal(third.headers.get('retry-after'), '1');
    const problem = await problemBody(third);
    assert.equal(problem.code, 'overloaded');
    assert.equal(problem.predictions, undefined);

    // bad input is refused as bad input, not as overload: validation comes before admission
    const bad = await predict(t.app, 'news2', { instances: [{ ...NEWS2, pulse: 'x' }] }, t.keys.client);
    assert.equal(bad.status, 400);
    // another model is not affected by news2's bound (its runs are held too, so only check admission)
    assert.equal(t.deps.sync.status('deterioration')?.inFlight, 0);

    const text = await t.deps.metrics.registry.metrics();
    assert.equal(metricValue(text, 'triage_shed_total', { model: 'news2' }), shedBefore + 1);
    assert.equal(metricValue(text, 'triage_inference_in_flight', { model: 'news2' }), 2);

    control.release();
    const [r1, r2] = await Promise.all([first, second]);
    assert.equal(r1.status, 200);
    assert.equal(r2.status, 200);
    assert.equal(((await r1.json()) as { predictions: Array<{ news2Total: number }> }).predictions[0]?.news2Total, 6);
    assert.equal(((await r2.json()) as { predictions: Array<{ news2Total: number }> }).predictions[0]?.news2Total, 5);
    await waitFor(() => t.deps.sync.status('news2')?.inFlight === 0, 'slots released');
    assert.equal((await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client)).status, 200);
    assert.equal(
      metricValue(await t.deps.metrics.registry.metrics(), 'triage_inference_in_flight', { model: 'news2' }),
      0,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('deadlines: no score rather than a late one', () => {
  const control = new RuntimeControl();
  let t: TestGateway;
  before(async () => {
    // the manifests' own budget (50 ms); runs are delayed only once armed (after warm-up)
    t = await buildGateway({ runtimeFactory: control.factory(), realBudgets: true });
    assert.equal(t.deps.catalog.get('news2')?.manifest.sync?.latencyBudgetMs, 50);
    control.armed = true;
  });
  after(async () => {
    control.delayMs = 0;
    control.release();
    await t.close();
  });

  const expectDeadline = async (res: Response, deadlineMs: number) => {
    assert.equal(res.status, 504);
    const body = await problemBody(res);
    assert.equal(body.code, 'deadline_exceeded');
    assert.equal(body.action, NO_SCORE_ACTION);
    assert.equal(body.action, 'no score: follow the standard protocol');
    assert.equal(body.deadlineMs, deadlineMs);
    assert.equal(body.predictions, undefined);
    assert.equal(res.headers.get('x-model-name'), null, 'no model headers on a refusal');
  };

  it('with the access log off, a 504 writes no log line (it is counted; under overload a line each would cost a write)', async () => {
    const logs = captureLogs('info');
    const quiet = await buildGateway({
      runtimeFactory: control.factory(),
      realBudgets: true,
      accessLog: false,
      logger: logs.logger,
    });
    try {
      control.delayMs = 200;
      await expectDeadline(await predict(quiet.app, 'news2', { instances: [NEWS2] }, quiet.keys.client), 50);
      const lines = logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.deepEqual(
        lines.filter((e) => e.msg === 'request'),
        [],
      );
      const text = await quiet.deps.metrics.registry.metrics();
      assert.equal(metricValue(text, 'triage_deadline_exceeded_total', { model: 'news2' }), 1, 'counted instead');
    } finally {
      control.delayMs = 0;
      control.release();
      await quiet.close();
    }
  });

  it('504 deadline_exceeded when the runtime answers after the latency budget', async () => {
    control.delayMs = 200;
    const before =
      metricValue(await t.deps.metrics.registry.metrics(), 'triage_deadline_exceeded_total', { model: 'news2' }) ?? 0;
    await expectDeadline(await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client), 50);
    const text = await t.deps.metrics.registry.metrics();
    assert.equal(metricValue(text, 'triage_deadline_exceeded_total', { model: 'news2' }), before + 1);
    assert.ok(
      (metricValue(text, 'triage_http_request_duration_seconds_count', { status: '504', model: 'news2' }) ?? 0) >= 1,
    );
    // how late the 504 left is measured against its deadline, for the SLO "every 504 by deadline + 10 ms"
    assert.equal(metricValue(text, 'triage_deadline_overrun_seconds_count', { model: 'news2' }), before + 1);
    const overrun = metricValue(text, 'triage_deadline_overrun_seconds_sum', { model: 'news2' }) ?? -1;
    assert.ok(Number.isFinite(overrun) && overrun >= 0, `overrun sum ${overrun} s`);
  });

  it('after a 504 the slot stays taken until the runtime is really done (capacity is not over-committed)', async () => {
    control.delayMs = 0;
    const served = () => t.deps.sync.status('news2');
    await waitFor(() => served()?.inFlight === 0, 'earlier tests’ runs to drain');
    control.hold(); // the run starts and does not finish
    const started = control.nextRun();
    const answer = predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client);
    await started;
    await expectDeadline(await answer, 50);
    assert.equal(served()?.inFlight, 1, 'the caller has its 504, the runtime still works on the request');
    control.release();
    await waitFor(() => served()?.inFlight === 0, 'the slot freed once the run ends');
  });

  it('the caller can shorten the deadline with x-request-timeout-ms', async () => {
    control.delayMs = 30;
    await expectDeadline(
      await predict(t.app, 'deterioration', { instances: [DETERIORATION] }, t.keys.client, {
        'x-request-timeout-ms': '5',
      }),
      5,
    );
  });

  it('a header longer than the budget is clamped to it, never extends it', async () => {
    control.delayMs = 200;
    await expectDeadline(
      await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client, { 'x-request-timeout-ms': '100000' }),
      50,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('dynamic batching and queued deadlines (real runtime, counted and held)', () => {
  const control = new RuntimeControl();
  let t: TestGateway;
  before(async () => {
    t = await buildGateway({ runtimeFactory: control.factory() });
    control.armed = true;
  });
  after(async () => {
    control.release();
    await t.close();
  });

  type Body = { predictions: Array<Record<string, unknown>> };

  for (const model of ['deterioration', 'news2'] as const) {
    it(`${model}: 20 concurrent requests share runs, and each gets its own rows back`, async () => {
      const base = model === 'news2' ? NEWS2 : DETERIORATION;
      // distinct inputs; every fifth request carries two instances, to check the slicing offsets
      const requests = Array.from({ length: 20 }, (_, i) => {
        const one = {
          ...base,
          pulse: 40 + i * 7,
          respirationRate: 8 + i,
          ...(model === 'news2' ? { onOxygen: i % 3 === 0 } : {}),
        };
        return i % 5 === 0 ? [one, { ...one, systolicBP: 90 + i, temperature: 38.6 }] : [one];
      });
      control.runs.length = 0;
      const singles: Body[] = [];
      for (const instances of requests) {
        const res = await predict(t.app, model, { instances }, t.keys.client);
        assert.equal(res.status, 200);
        singles.push((await res.json()) as Body);
      }
      assert.equal(control.runs.length, 20, 'one run per request when they come one at a time');
      const distinct = new Set(singles.flatMap((s) => s.predictions.map((p) => JSON.stringify(p))));
      assert.ok(distinct.size >= 12, `inputs must give mostly distinct predictions (got ${distinct.size})`);

      control.runs.length = 0;
      control.hold();
      const pending = requests.map((instances) => predict(t.app, model, { instances }, t.keys.client));
      await waitFor(() => t.deps.sync.status(model)?.inFlight === 20, 'all 20 requests admitted');
      control.release();
      const responses = await Promise.all(pending);

      assert.ok(control.runs.length < 20, `${control.runs.length} runs for 20 requests`);
      // the first run is held while the rest queue: they all go in at most one more run
      assert.ok(control.runs.length <= 2, `${control.runs.length} runs`);
      assert.equal(
        control.runs.reduce((n, r) => n + r.rows, 0),
        24,
      );
      for (const [i, res] of responses.entries()) {
        assert.equal(res.status, 200);
        const body = (await res.json()) as Body;
        assert.deepEqual(body.predictions, singles[i]?.predictions, `request ${i}`);
      }
      const text = await t.deps.metrics.registry.metrics();
      assert.ok((metricValue(text, 'triage_inference_batch_rows_sum', { model }) ?? 0) > 0);
    });
  }

  it('a request whose deadline passes while queued is withdrawn: the runtime never runs it', async () => {
    control.runs.length = 0;
    control.hold();
    const entered = control.nextRun();
    const first = predict(t.app, 'deterioration', { instances: [DETERIORATION] }, t.keys.client);
    await entered; // the runtime is busy with the first request: the next one queues behind it
    // a deadline admission lets in (the runs so far were short, so the expected wait is well within it), and which
    // then passes while the held run keeps it queued
    const queued = await predict(
      t.app,
      'deterioration',
      { instances: [{ ...DETERIORATION, pulse: 120 }] },
      t.keys.client,
      {
        'x-request-timeout-ms': '1500',
      },
    );
    assert.equal(queued.status, 504);
    const body = await problemBody(queued);
    assert.equal(body.code, 'deadline_exceeded');
    assert.equal(body.action, NO_SCORE_ACTION);

    control.release();
    assert.equal((await first).status, 200);
    await waitFor(
      () => t.deps.sync.status('deterioration')?.inFlight === 0,
      'the withdrawn request to release its slot',
    );
    assert.deepEqual(control.runs, [{ model: 'deterioration', rows: 1 }]);
  });

  it('a failing runtime gives 500 inference_failed with the no-score action, and the model keeps serving', async () => {
    control.corruptNext = true;
    const res = await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client);
    assert.equal(res.status, 500);
    const body = await problemBody(res);
    assert.equal(body.code, 'inference_failed');
    assert.equal(body.action, NO_SCORE_ACTION);
    assert.equal(body.predictions, undefined);
    assert.equal((await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client)).status, 200);
  });
});
