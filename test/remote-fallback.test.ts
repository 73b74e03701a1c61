/**
 * A remote (SageMaker) primary through the whole gateway: the real SageMakerRuntimeClient (SigV4-signed, verified by
 * the fake) against the wire-protocol fake, the real ONNX fallback, requests through app.request().
 *
 * Models, copied from models/deterioration into a temp dir (manifests edited with the yaml package):
 * - `deterioration`: v3 on SageMaker (`deterioration-prod`), resilience {timeoutMs 1000, retries 1, breakerThreshold
 *   3, breakerHalfOpenAfterMs 300}, fallback "1", primary "3"; the shadow section is dropped (v2 stays a version);
 * - `deterioration-nofallback`: the same remote v3 (its own endpoint, timeoutMs 2000) without a fallback;
 * - `deterioration-defaulttimeout`: remote v3 with fallback "1" but no `timeoutMs` (the timeout is the whole budget);
 * - `deterioration-shadowed`: onnx v1 primary, remote v3 shadowing every request.
 * Every copy's sync latency budget is 4 s instead of 50 ms: the remote timeout and the fallback are what is tested,
 * and every margin (an attempt, a fallback run) is a second or more, so the assertions hold on a machine whose cores
 * are busy. A slow fault holds the reply far longer (SLOW_MS), so "never hangs" is clear. The tests about the open
 * window stop the breakers' clock (a mocked Date; cockatiel reads Date.now()) and move it themselves, so the window
 * lasts exactly as long as they say; elsewhere the short half-open delay only lets `recover` close a breaker soon.
 * Each model has its own fake (faults are per fake) and endpoint name (breakers are per endpoint).
 * The fakes score with the real deterioration v1 ONNX, so a remote answer equals v1's in-process answer.
 * Time bounds are generous upper bounds that only prove "never hangs", not performance.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, mock, test } from 'node:test';
import YAML from 'yaml';
import type { Manifest } from '../src/registry/schema.ts';
import { type CloudRuntimeFactory, createRuntimeFactory } from '../src/runtime/factory.ts';
import { createOnnxRuntime } from '../src/runtime/onnx.ts';
import type { ResilienceEvent } from '../src/runtime/resilience.ts';
import { createSageMakerClient } from '../src/runtime/sagemaker.ts';
import type { ModelRuntime } from '../src/runtime/types.ts';
import { encodeInstances } from '../src/serving/features.ts';
import { inputWidth } from '../src/serving/inputs.ts';
import { type Prediction, shapePredictions } from '../src/serving/predictions.ts';
import { NO_SCORE_ACTION } from '../src/serving/scorer.ts';
import { SageMakerFake, type Scorer, TEST_CREDENTIALS } from './fakes/sagemaker-fake.ts';
import {
  buildGateway,
  MODELS_DIR,
  metricValue,
  predict,
  problemBody,
  type TestGateway,
  waitFor,
} from './support/index.ts';

/** "never hangs": far above any deadline used here, far below a stuck test */
const SETTLES_WITHIN_MS = 8_000;
/** a slow fault: far beyond every deadline here */
const SLOW_MS = 30_000;
const REGION = 'eu-west-2';
const RESILIENCE = { timeoutMs: 1_000, retries: 1, breakerThreshold: 3, breakerHalfOpenAfterMs: 300 };
/** without a fallback, a failed attempt is the answer: room for an attempt on a loaded machine, and a retry */
const NO_FALLBACK_RESILIENCE = { ...RESILIENCE, timeoutMs: 2_000 };
const MAIN = 'deterioration';
const NO_FALLBACK = 'deterioration-nofallback';
const SHADOWED = 'deterioration-shadowed';
const DEFAULT_TIMEOUT = 'deterioration-defaulttimeout';
const BUDGET_MS = 4_000;

const PATIENTS = [
  { age: 45, respirationRate: 14, spo2: 98, systolicBP: 125, pulse: 72, temperature: 36.8, onOxygen: false },
  { age: 82, respirationRate: 27, spo2: 89, systolicBP: 92, pulse: 124, temperature: 39.1, onOxygen: true },
  { age: 67, respirationRate: 21, spo2: 94, systolicBP: 108, pulse: 98, temperature: 38.2, onOxygen: false },
];

let tmp: string;
let t: TestGateway;
let factory: CloudRuntimeFactory;
let v1: ModelRuntime;
let manifest: Manifest;
/** v1's in-process answer for PATIENTS */
let expected: Prediction[];
const fakes: Record<string, SageMakerFake> = {};
const events: Array<ResilienceEvent & { model: string; version: string }> = [];

const endpointOf = (model: string) => `sagemaker:${REGION}/${model}-prod`;

/** Copies models/deterioration to `<tmp>/<name>` and rewrites its manifest with `edit`. */
async function variant(name: string, edit: (doc: Record<string, unknown>) => void): Promise<void> {
  const dir = path.join(tmp, name);
  await cp(path.join(MODELS_DIR, 'deterioration'), dir, { recursive: true });
  const file = path.join(dir, 'model.yaml');
  const doc = YAML.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  doc.name = name;
  (doc.sync as Record<string, unknown>).latencyBudgetMs = BUDGET_MS;
  edit(doc);
  await writeFile(file, YAML.stringify(doc));
}

function remoteVersion(
  name: string,
  fake: SageMakerFake,
  fallback: string | undefined,
  resilience: Partial<typeof RESILIENCE> = RESILIENCE,
) {
  return {
    version: '3',
    description: 'the same model, served from a SageMaker endpoint',
    runtime: { kind: 'sagemaker', endpointName: `${name}-prod`, region: REGION, endpointUrl: fake.url },
    resilience,
    ...(fallback ? { fallback } : {}),
    evidence: {
      datasetVersion: 'illustrative-weights-2025-01 (no training data)',
      labelDefinition: 'Illustrative: unplanned ICU admission, cardiac arrest or death within 24 h',
      approvedBy: 'Clinical AI Platform model review board (test)',
      approvedAt: '2025-09-01T09:00:00+00:00',
      approvedThreshold: 0.3,
      rollbackTarget: '1',
    },
  };
}

async function call(model: string, headers: Record<string, string> = {}) {
  const started = performance.now();
  const res = await predict(t.app, model, { instances: PATIENTS }, t.keys.client, headers);
  const ms = performance.now() - started;
  assert.ok(ms < SETTLES_WITHIN_MS, `${model} answered in ${ms.toFixed(0)} ms: it must never hang`);
  assert.notEqual(res.status, 500, 'never a raw 500');
  return { res, ms };
}

async function okBody(model: string) {
  const { res, ms } = await call(model);
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return { body: JSON.parse(text) as Record<string, unknown>, res, ms };
}

/** A fallback answer: v1 answered, said so, with v1's in-process predictions. */
async function expectFallback(model = MAIN) {
  const { body, res, ms } = await okBody(model);
  assert.equal(body.version, '1');
  assert.equal(body.fallback, true);
  assert.equal(body.fallbackFrom, '3');
  assert.equal(res.headers.get('x-model-version'), '1');
  assert.deepEqual(body.predictions, expected);
  return { body, ms };
}

/** A remote answer: v3 answered, no fallback field, the endpoint's scores (v1's graph, run by the fake). */
async function expectRemote(model = MAIN) {
  const { body } = await okBody(model);
  assert.equal(body.version, '3');
  assert.equal('fallback' in body, false);
  assert.equal('fallbackFrom' in body, false);
  assert.deepEqual(body.predictions, expected);
  return body;
}

async function metrics(): Promise<string> {
  const res = await t.app.request('/metrics');
  assert.equal(res.status, 200);
  return res.text();
}

async function fallbacks(reason: string): Promise<number> {
  return metricValue(await metrics(), 'triage_fallback_total', { model: MAIN, version: '3', reason }) ?? 0;
}

/** fallbacks for any reason (on a loaded machine a failing attempt may also run out of time) */
async function allFallbacks(): Promise<number> {
  return (await fallbacks('upstream_failed')) + (await fallbacks('deadline_exceeded'));
}

async function deadlineMisses(model: string): Promise<number> {
  return metricValue(await metrics(), 'triage_deadline_exceeded_total', { model }) ?? 0;
}

/** The fake answers again and the endpoint's breaker is closed (waits out a half-open delay if it opened). */
async function recover(model: string): Promise<void> {
  const fake = fakes[model] as SageMakerFake;
  fake.queue.length = 0;
  fake.fault = { mode: 'ok' };
  await waitFor(
    async () => {
      const { res } = await call(model);
      const body = (await res.json()) as Record<string, unknown>;
      return res.status === 200 && body.version === '3' && factory.breakers.states()[endpointOf(model)] === 'closed';
    },
    `${model}: the remote version to recover`,
    RESILIENCE.breakerHalfOpenAfterMs + SETTLES_WITHIN_MS,
    50,
  );
}

before(async () => {
  v1 = await createOnnxRuntime(path.join(MODELS_DIR, 'deterioration', '1', 'model.onnx'), 7, { threads: 1 });
  /** the real deterioration v1 graph as the endpoint's model server: per row {probability} */
  const scorer: Scorer = async (rows) => {
    const out = await v1.run(Float32Array.from(rows.flat()), rows.length);
    return Array.from(out.probability?.data ?? [], (p) => ({ probability: p }));
  };
  for (const name of [MAIN, NO_FALLBACK, SHADOWED, DEFAULT_TIMEOUT])
    fakes[name] = await SageMakerFake.start({ region: REGION, scorer });

  tmp = await mkdtemp(path.join(tmpdir(), 'triage-remote-fallback-'));
  await variant(MAIN, (doc) => {
    (doc.versions as unknown[]).push(remoteVersion(MAIN, fakes[MAIN] as SageMakerFake, '1'));
    doc.routing = { primary: '3' };
  });
  await variant(NO_FALLBACK, (doc) => {
    (doc.versions as unknown[]).push(
      remoteVersion(NO_FALLBACK, fakes[NO_FALLBACK] as SageMakerFake, undefined, NO_FALLBACK_RESILIENCE),
    );
    doc.routing = { primary: '3' };
  });
  await variant(DEFAULT_TIMEOUT, (doc) => {
    const { timeoutMs: _, ...noTimeout } = RESILIENCE;
    (doc.versions as unknown[]).push(
      remoteVersion(DEFAULT_TIMEOUT, fakes[DEFAULT_TIMEOUT] as SageMakerFake, '1', noTimeout),
    );
    doc.routing = { primary: '3' };
  });
  await variant(SHADOWED, (doc) => {
    (doc.versions as unknown[]).push(remoteVersion(SHADOWED, fakes[SHADOWED] as SageMakerFake, undefined));
    doc.routing = { primary: '1', shadow: { versions: ['3'], sampleRate: 1 } };
  });

  factory = createRuntimeFactory({
    onnxThreads: 1,
    sagemaker: { clientFor: (spec) => createSageMakerClient(spec, { credentials: TEST_CREDENTIALS }) },
    backoff: { backoffInitialMs: 5, backoffMaxMs: 10 },
    onEvent: (event) => void events.push(event),
  });
  // about deadlines: the variants' own budgets (BUDGET_MS)
  t = await buildGateway({ modelsDir: tmp, runtimeFactory: factory, realBudgets: true });
  const served = t.deps.catalog.get(MAIN);
  assert.ok(served);
  manifest = served.manifest;
  assert.equal(served.version, '3');
  assert.equal(served.manifest.versions.find((v) => v.version === '3')?.runtime.kind, 'sagemaker');
  assert.ok(t.deps.sync.versions(MAIN).includes('3'));
  assert.equal(inputWidth(manifest), 7);
  const input = encodeInstances(manifest.features, PATIENTS);
  expected = shapePredictions(manifest.output, await v1.run(input, PATIENTS.length), PATIENTS.length);
  // the first SDK calls pay for lazy set-up: not what the deadlines below measure
  for (const name of [MAIN, NO_FALLBACK, DEFAULT_TIMEOUT]) await recover(name);
});

after(async () => {
  await t?.close();
  await factory?.close();
  for (const fake of Object.values(fakes)) await fake.close();
  await v1?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('a remote primary with an ONNX fallback', () => {
  // every test leaves the fake answering and the breaker closed, even when it fails
  afterEach(() => recover(MAIN));

  test('fake ok → 200 from version 3, no fallback field, a SigV4-valid request in feature order', async () => {
    const fake = fakes[MAIN] as SageMakerFake;
    const before = fake.count;
    const fallbacksBefore = await allFallbacks();
    const body = await expectRemote();
    assert.equal(body.model, MAIN);
    assert.equal(fake.count, before + 1, 'one call, no retry');
    const req = fake.requests.at(-1);
    assert.ok(req?.signatureValid, 'the fake recomputed the SigV4 signature and it matched');
    assert.equal(req.endpointName, `${MAIN}-prod`);
    assert.equal(req.fault, 'ok');
    assert.match(String(req.headers.authorization), /Credential=AKIDTRIAGETEST000001\/\d{8}\/eu-west-2\/sagemaker\//);
    assert.deepEqual(req.rows, [
      [45, 14, 98, 125, 72, 36.8, 0],
      [82, 27, 89, 92, 124, 39.1, 1],
      [67, 21, 94, 108, 98, 38.2, 0],
    ]);
    assert.equal(await allFallbacks(), fallbacksBefore);
  });

  test('concurrent requests share InvokeEndpoint calls, and each gets the answer for its own rows', async () => {
    const fake = fakes[MAIN] as SageMakerFake;
    fake.fault = { mode: 'slow', ms: 20 }; // calls overlap: requests arriving meanwhile wait for the next call
    const before = fake.count;
    const singles = PATIENTS.map((p, i) => ({ ...p, pulse: 60 + i * 11 }));
    const requests = Array.from({ length: 24 }, (_, i) => [singles[i % singles.length]]);
    const responses = await Promise.all(
      requests.map((instances) => predict(t.app, MAIN, { instances }, t.keys.client)),
    );
    fake.fault = { mode: 'ok' };
    const calls = fake.count - before;
    assert.ok(calls < requests.length, `${calls} calls for ${requests.length} requests: they must share calls`);
    const input = encodeInstances(manifest.features, singles);
    const direct = shapePredictions(manifest.output, await v1.run(input, singles.length), singles.length);
    for (const [i, res] of responses.entries()) {
      assert.equal(res.status, 200);
      const body = (await res.json()) as { version: string; predictions: Prediction[] };
      assert.equal(body.version, '3');
      // the fake scores with v1's graph: each request's row comes back to that request, not a neighbour's
      assert.deepEqual(body.predictions, [direct[i % singles.length]], `request ${i}`);
    }
  });

  test('fake 5xx, persistently → 200 from version 1 with fallback: true; counted in triage_fallback_total', async () => {
    const fake = fakes[MAIN] as SageMakerFake;
    const counted = await allFallbacks();
    const upstream = await fallbacks('upstream_failed');
    const before = fake.count;
    fake.fault = { mode: '5xx' };
    for (let i = 0; i < 3; i++) await expectFallback();
    fake.fault = { mode: '5xx', error: 'ServiceUnavailable' };
    await expectFallback();
    assert.equal(await allFallbacks(), counted + 4);
    assert.ok((await fallbacks('upstream_failed')) > upstream, 'counted with reason upstream_failed');
    const calls = fake.requests.slice(before);
    assert.ok(calls.length >= 1, 'the endpoint was called');
    assert.ok(calls.length <= 2 * 4, 'at most one retry per request');
    assert.ok(calls.every((r) => r.fault === '5xx' && r.signatureValid));
  });

  test('fake slower than the deadline → the fallback answers within the budget, never hangs', async () => {
    const fake = fakes[MAIN] as SageMakerFake;
    const counted = await fallbacks('deadline_exceeded');
    const misses = await deadlineMisses(MAIN);
    const before = fake.count;
    fake.fault = { mode: 'slow', ms: SLOW_MS };
    const { ms } = await expectFallback();
    assert.equal(await deadlineMisses(MAIN), misses, 'answered in time: not a 504');
    assert.ok(ms < SETTLES_WITHIN_MS, `answered in ${ms.toFixed(0)} ms`);
    assert.equal(await fallbacks('deadline_exceeded'), counted + 1);
    assert.equal(fake.count, before + 1, 'a timed-out attempt is not retried');
    assert.ok(
      events.some((e) => e.type === 'timeout' && e.model === MAIN && e.version === '3'),
      'the timeout was reported',
    );
  });

  test('connection refused → the breaker opens, calls stop reaching the endpoint, fallbacks continue; half-open probe returns to v3', async () => {
    const fake = fakes[MAIN] as SageMakerFake;
    const endpoint = endpointOf(MAIN);
    assert.equal(factory.breakers.states()[endpoint], 'closed');
    const seen = events.length;
    // the breaker's clock (cockatiel reads Date.now()) stands still until the test moves it: the open window lasts
    // exactly as long as the test says, however slow the machine
    mock.timers.enable({ apis: ['Date'], now: Date.now() });
    try {
      await fake.refuseConnections();
      try {
        // breakerThreshold (3) consecutive connection failures; a request makes at most 2 attempts
        for (let i = 0; i < 3; i++) await expectFallback();
        assert.equal(factory.breakers.states()[endpoint], 'open');
        assert.ok(events.slice(seen).some((e) => e.type === 'breaker' && e.state === 'open' && e.name === endpoint));
      } finally {
        await fake.acceptConnections();
      }
      // the endpoint is back, but the breaker is open: nothing reaches it until the half-open delay has passed
      const before = fake.count;
      mock.timers.tick(RESILIENCE.breakerHalfOpenAfterMs - 1);
      for (let i = 0; i < 3; i++) await expectFallback();
      assert.equal(factory.breakers.states()[endpoint], 'open', 'still inside the open window');
      assert.equal(fake.count, before, 'an open breaker fails fast without calling the endpoint');
      assert.ok(events.slice(seen).some((e) => e.type === 'short_circuit' && e.name === endpoint));

      mock.timers.tick(2);
      await expectRemote();
      assert.equal(fake.count, before + 1, 'the half-open probe went to the endpoint');
      assert.equal(factory.breakers.states()[endpoint], 'closed');
      assert.ok(events.slice(seen).some((e) => e.type === 'breaker' && e.state === 'closed' && e.name === endpoint));
    } finally {
      mock.timers.reset();
    }
  });

  test('malformed replies → fallback, never retried', async () => {
    const fake = fakes[MAIN] as SageMakerFake;
    const before = fake.count;
    for (const shape of ['not-json', 'wrong-count', 'non-numbers'] as const) {
      fake.fault = { mode: 'malformed', shape };
      await expectFallback();
    }
    assert.equal(fake.count, before + 3, 'one attempt each');
  });
});

describe('a remote primary with a fallback and no timeoutMs (the timeout defaults to the whole budget)', () => {
  afterEach(() => recover(DEFAULT_TIMEOUT));

  test('a slow endpoint still leaves the fallback time to answer within the budget, or a shorter caller deadline', async () => {
    const fake = fakes[DEFAULT_TIMEOUT] as SageMakerFake;
    fake.fault = { mode: 'slow', ms: SLOW_MS };
    for (const headers of [{}, { 'x-request-timeout-ms': '1000' }] as Array<Record<string, string>>) {
      const before = fake.count;
      const { res, ms } = await call(DEFAULT_TIMEOUT, headers);
      const body = (await res.json()) as Record<string, unknown>;
      assert.equal(res.status, 200, `${JSON.stringify(headers)}: ${JSON.stringify(body)}`);
      assert.equal(body.version, '1');
      assert.equal(body.fallback, true);
      assert.equal(body.fallbackFrom, '3');
      assert.deepEqual(body.predictions, expected);
      assert.ok(ms < SETTLES_WITHIN_MS);
      assert.equal(fake.count, before + 1, 'the endpoint was called (and given up on)');
    }
  });
});

describe('a remote primary without a fallback', () => {
  afterEach(() => recover(NO_FALLBACK));

  async function expectProblem(status: number, code: string) {
    const { res } = await call(NO_FALLBACK);
    assert.equal(res.status, status);
    const body = await problemBody(res);
    assert.equal(body.code, code);
    assert.equal(body.status, status);
    assert.equal(body.action, NO_SCORE_ACTION);
    assert.equal('predictions' in body, false);
    return body;
  }

  test('fake 5xx → 502 problem+json upstream_failed', async () => {
    const fake = fakes[NO_FALLBACK] as SageMakerFake;
    fake.fault = { mode: '5xx' };
    const body = await expectProblem(502, 'upstream_failed');
    assert.equal(body.upstream, 'transient');
    assert.doesNotMatch(JSON.stringify(body), /boom/, 'the upstream text is not echoed');
  });

  test('fake slower than the deadline → 504 deadline_exceeded, "no score: follow the standard protocol"', async () => {
    const fake = fakes[NO_FALLBACK] as SageMakerFake;
    const misses = await deadlineMisses(NO_FALLBACK);
    fake.fault = { mode: 'slow', ms: SLOW_MS };
    await expectProblem(504, 'deadline_exceeded');
    assert.equal(await deadlineMisses(NO_FALLBACK), misses + 1, 'a 504 is counted as a deadline miss');
  });

  test('throttled persistently → retried, then 502 upstream_failed', async () => {
    const fake = fakes[NO_FALLBACK] as SageMakerFake;
    const before = fake.count;
    fake.fault = { mode: 'throttled' };
    const body = await expectProblem(502, 'upstream_failed');
    assert.equal(body.upstream, 'throttled');
    const calls = fake.requests.slice(before);
    assert.ok(calls.length >= 1 && calls.length <= 2, `${calls.length} attempts: at most one retry`);
    assert.ok(calls.every((r) => r.fault === 'throttled'));
  });

  test('throttled once → retried within the deadline, answered by the remote version', async () => {
    const fake = fakes[NO_FALLBACK] as SageMakerFake;
    const before = fake.count;
    fake.queue.push({ mode: 'throttled' });
    await expectRemote(NO_FALLBACK);
    assert.deepEqual(
      fake.requests.slice(before).map((r) => r.fault),
      ['throttled', 'ok'],
    );
  });

  test('open breaker → 502 upstream_failed at once, the endpoint not called', async () => {
    const fake = fakes[NO_FALLBACK] as SageMakerFake;
    fake.fault = { mode: 'malformed', shape: 'not-json' };
    // the breaker's clock stands still: it is open for the whole test, however slow the machine
    mock.timers.enable({ apis: ['Date'], now: Date.now() });
    try {
      for (let i = 0; i < RESILIENCE.breakerThreshold; i++) await expectProblem(502, 'upstream_failed');
      assert.equal(factory.breakers.states()[endpointOf(NO_FALLBACK)], 'open');
      const before = fake.count;
      mock.timers.tick(RESILIENCE.breakerHalfOpenAfterMs - 1);
      const body = await expectProblem(502, 'upstream_failed');
      assert.equal(body.upstream, 'unavailable');
      assert.equal(fake.count, before);
    } finally {
      mock.timers.reset();
    }
  });
});

describe('a remote shadow that fails', () => {
  test('never changes the primary answer; its errors are counted', async () => {
    const fake = fakes[SHADOWED] as SageMakerFake;
    fake.fault = { mode: '5xx' };
    const errors = async () =>
      metricValue(await metrics(), 'triage_shadow_errors_total', { model: SHADOWED, version: '3' }) ?? 0;
    const before = await errors();
    const n = 5;
    for (let i = 0; i < n; i++) {
      const { body } = await okBody(SHADOWED);
      assert.equal(body.version, '1');
      assert.equal('fallback' in body, false);
      assert.deepEqual(body.predictions, expected);
    }
    await waitFor(async () => (await errors()) >= before + n, 'the shadow errors to be counted', SETTLES_WITHIN_MS);
    assert.equal(await errors(), before + n);
    assert.ok(fake.count >= 1, 'the shadow called the endpoint');
    await t.deps.shadow.flush();
    const res = await t.app.request(`/v1/models/${SHADOWED}/shadow`, {
      headers: { authorization: `Bearer ${t.keys.client}` },
    });
    assert.equal(res.status, 200);
    const report = (await res.json()) as { shadows: Array<{ version: string; pairs: number; shadowErrors: number }> };
    const shadow = report.shadows.find((s) => s.version === '3');
    assert.equal(shadow?.shadowErrors, n);
    assert.equal(shadow?.pairs, 0);
  });
});
