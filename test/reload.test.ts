/**
 * Manifest reload without a restart (POST /v1/admin/reload), on real Redis and real onnxruntime sessions: under a
 * load of concurrent predicts nothing is dropped and requests in flight finish on the version they started on (even a
 * version the new manifest removes); the concurrency bound stays true across the swap; manifest edits take effect
 * (and supersede routing changes made through the API against the old manifest, while changes still based on the
 * same manifest routing survive); a manifest broken on disk is refused with the loader's message while the previous
 * models keep serving; every reload is audited.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  editManifest,
  HANG_GUARD_MS,
  MODEL,
  makeKeys,
  makePrefix,
  pool,
  type Reply,
  removeDir,
  scoreOnnx,
  type TestGateway,
  tempModels,
  VersionFaults,
  type Vitals,
  waitFor,
} from './support/index.ts';

function gate() {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

const keys = makeKeys();
const VITALS: Vitals = {
  age: 58,
  respirationRate: 21,
  spo2: 94,
  systolicBP: 118,
  pulse: 97,
  temperature: 37.9,
  onOxygen: false,
};
/** the concurrency bound of the model in these tests: small, so a miscounted in-flight total shows as 503s */
const MAX_CONCURRENCY = 32;
const LOAD = 300;
const LANES = 16;
const HELD = 8;
const routingUrl = `/v1/models/${MODEL}/routing`;

describe('manifest reload', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('reload');
  const faults = new VersionFaults();
  let modelsDir: string;
  let gw: TestGateway;
  let scores: { v1: number; v2: number };
  /** subjects the canary split of the first manifest sends to v1 and to v2 */
  const toV1: string[] = [];
  const toV2: string[] = [];
  let successfulReloads = 0;

  before(async () => {
    modelsDir = await tempModels({
      [MODEL]: (m) => {
        delete m.routing.shadow;
        m.routing.canary = { version: '2', weight: 50 };
        m.sync.latencyBudgetMs = 5000;
        m.decisionWindowMs = 5000;
        m.sync.maxConcurrency = MAX_CONCURRENCY;
      },
    });
    gw = await buildGateway({ prefix, keys, modelsDir, faults, reload: true });
    const [v1] = await scoreOnnx('1', [VITALS]);
    const [v2] = await scoreOnnx('2', [VITALS]);
    scores = { v1: v1 as number, v2: v2 as number };
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  function predict(subject: string): Promise<Reply> {
    return gw.predict(MODEL, keys.client, [VITALS], { 'x-subject-key': subject });
  }

  /** the answer came from `version`: the header, the body and the score agree */
  function assertAnsweredBy(res: Reply, version: string) {
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.version, version);
    assert.equal(res.headers.get('x-model-version'), version);
    // v3 is v2's artifact under a new version id
    assert.equal(res.body.predictions[0].deteriorationRisk, version === '1' ? scores.v1 : scores.v2);
  }

  async function reload(key = keys.admin): Promise<Reply> {
    const res = await gw.call('POST', '/v1/admin/reload', key);
    if (res.status === 200) successfulReloads++;
    return res;
  }

  async function routing() {
    const res = await gw.call('GET', routingUrl, keys.admin);
    assert.equal(res.status, 200, res.text);
    return res.body.routing;
  }

  test('the first manifest splits subjects between v1 and v2', async () => {
    for (let i = 0; toV1.length < 100 || toV2.length < HELD; i++) {
      const subject = `subject-${i}`;
      const res = await predict(subject);
      assert.equal(res.status, 200, res.text);
      (res.body.version === '2' ? toV2 : toV1).push(subject);
    }
  });

  test('reload under load: nothing dropped, held requests finish on their version, the bound stays true', {
    timeout: 45_000,
  }, async () => {
    // 1. requests on v2 held inside the runtime: in flight across the whole reload
    faults.hold(MODEL, '2');
    const held = toV2.slice(0, HELD).map((s) => predict(s));
    const model = () => gw.gateway.deps.sync.status(MODEL);
    await waitFor(() => model()?.inFlight === HELD, 'the held requests to be in flight');

    // 2. the load: LOAD requests, LANES at a time, on subjects the split sends to v1, in three phases: the first
    //    third before the reload, the second while it is in progress, the last across and after the swap
    const permit = [gate(), gate()];
    let done = 0;
    const load = pool(LOAD, LANES, async (i) => {
      if (i >= LOAD / 3) await permit[0]?.promise;
      if (i >= (2 * LOAD) / 3) await permit[1]?.promise;
      const res = await predict(toV1[i % toV1.length] as string);
      done++;
      return res;
    });
    await waitFor(() => done === LOAD / 3, 'the first third of the load');

    // 3. a new manifest: no canary, v2 gone, a new v3 (v2's weights) that must be loaded and warmed before the
    //    swap; its runtime creation is held, so the reload stays in progress while the second third is answered
    await mkdir(path.join(modelsDir, MODEL, '3'));
    await copyFile(path.join(modelsDir, MODEL, '2', 'model.onnx'), path.join(modelsDir, MODEL, '3', 'model.onnx'));
    await editManifest(modelsDir, MODEL, (m) => {
      delete m.routing.canary;
      const v2 = m.versions.find((v: { version: string }) => v.version === '2');
      m.versions = m.versions.filter((v: { version: string }) => v.version !== '2');
      m.versions.push({
        ...v2,
        version: '3',
        description: 'v2 weights under a new version id',
        runtime: { ...v2.runtime, path: '3/model.onnx' },
        evidence: { ...v2.evidence, rollbackTarget: '1' },
      });
    });
    faults.holdCreate(MODEL, '3');
    const reloading = reload();
    await waitFor(() => (faults.created.get(`${MODEL}@3`) ?? 0) > 0, 'the reload to start loading v3');
    permit[0]?.open();
    await waitFor(() => done === (2 * LOAD) / 3, 'the second third, answered during the reload');
    assert.equal(faults.created.get(`${MODEL}@3`), 1, 'the reload is still in progress');

    // the last third: a full set of lanes held in v1's runtime at the swap, the rest after it
    faults.hold(MODEL, '1');
    permit[1]?.open();
    await waitFor(() => model()?.inFlight === HELD + LANES, 'every lane to be in flight');
    faults.openCreate(MODEL, '3');
    const reloaded = await reloading;
    assert.equal(reloaded.status, 200, reloaded.text);
    assert.deepEqual(reloaded.body, { reloaded: [`${MODEL}@1`] });
    assert.equal(done, (2 * LOAD) / 3, 'the held lanes are still in flight after the swap');
    faults.open(MODEL, '1');

    // 4. the held requests, started on v2 (now removed), finish on v2
    assert.equal(gw.gateway.deps.sync.versions(MODEL).includes('2'), false);
    faults.open(MODEL, '2');
    for (const res of await Promise.all(held)) assertAnsweredBy(res, '2');

    // 5. none of the load was dropped or refused
    const replies = await load;
    const statuses = new Map<number, number>();
    for (const r of replies) statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    assert.deepEqual([...statuses], [[200, LOAD]], replies.find((r) => r.status !== 200)?.text ?? '');
    for (const r of replies) assertAnsweredBy(r, '1');

    // 6. the in-flight count is true again once everything finished, and the whole bound is usable
    await waitFor(
      () => model()?.inFlight === 0,
      () => `in flight back to 0 (is ${model()?.inFlight})`,
    );
    faults.hold(MODEL, '1');
    const burst = Array.from({ length: MAX_CONCURRENCY }, (_, i) => predict(toV1[i] as string));
    await waitFor(() => model()?.inFlight === MAX_CONCURRENCY, 'a full bound of requests in flight');
    faults.open(MODEL, '1');
    for (const res of await Promise.all(burst)) assertAnsweredBy(res, '1');
  });

  test('after the reload the new manifest rules: no canary, subjects once on v2 now on v1, v3 loaded', async () => {
    assert.deepEqual(await routing(), { primary: '1' });
    for (const s of toV2.slice(0, 10)) assertAnsweredBy(await predict(s), '1');
    assert.deepEqual(gw.gateway.deps.sync.versions(MODEL).sort(), ['1', '3']);
  });

  test('a routing change made through the API survives a reload that leaves the manifest routing alone', async () => {
    const res = await gw.call('PUT', `${routingUrl}/canary`, keys.admin, {
      version: '3',
      weight: 100,
      reason: 'CR-2001: all subjects on v3',
    });
    assert.equal(res.status, 200, res.text);
    assertAnsweredBy(await predict('anyone'), '3');
    await editManifest(modelsDir, MODEL, (m) => {
      m.description = 'edited description, same routing';
    });
    const reloaded = await reload();
    assert.equal(reloaded.status, 200, reloaded.text);
    assert.deepEqual(await routing(), { primary: '1', canary: { version: '3', weight: 100 } });
    assert.equal(gw.gateway.deps.catalog.get(MODEL)?.manifest.description, 'edited description, same routing');
  });

  test('a manifest release that changes the routing supersedes earlier API changes: promote v3, shadow v1 at 25%', async () => {
    await editManifest(modelsDir, MODEL, (m) => {
      m.routing = { primary: '3', shadow: { versions: ['1'], sampleRate: 0.25 } };
    });
    const reloaded = await reload();
    assert.equal(reloaded.status, 200, reloaded.text);
    assert.deepEqual(reloaded.body, { reloaded: [`${MODEL}@3`] });
    assert.deepEqual(await routing(), { primary: '3', shadow: { versions: ['1'], sampleRate: 0.25 } });
    assertAnsweredBy(await predict('subject-0'), '3');
    const shadow = await gw.call('GET', `/v1/models/${MODEL}/shadow`, keys.client);
    assert.deepEqual(shadow.body.routing, { versions: ['1'], sampleRate: 0.25 });
  });

  test('a manifest broken on disk: the reload is refused with the loader’s message; the previous models serve on', async () => {
    const file = path.join(modelsDir, MODEL, 'model.yaml');
    const good = await readFile(file, 'utf8');
    try {
      for (const [what, text] of [
        ['not YAML', `${good}\nversions: [unclosed\n`],
        ['an unknown primary', good.replace(/primary: "?3"?/, 'primary: "7"')],
      ] as const) {
        assert.notEqual(text, good, what);
        await writeFile(file, text);
        const res = await reload();
        assert.ok(res.status >= 400 && res.status < 500, `${what}: ${res.status} ${res.text}`);
        assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/, what);
        assert.equal(res.status, 409, what);
        assert.equal(res.body.code, 'invalid_manifest', what);
        assert.match(res.body.detail, /deterioration\/model\.yaml/, `${what}: ${res.body.detail}`);
        // still serving what was loaded before
        assertAnsweredBy(await predict('subject-0'), '3');
        assert.deepEqual(await routing(), { primary: '3', shadow: { versions: ['1'], sampleRate: 0.25 } });
      }
    } finally {
      await writeFile(file, good);
    }
    const fixed = await reload();
    assert.equal(fixed.status, 200, fixed.text);
  });

  test('only admins reload; every successful reload is audited with who and what', async () => {
    for (const key of [keys.client, keys.reviewer]) {
      const res = await gw.call('POST', '/v1/admin/reload', key);
      assert.equal(res.status, 403, res.text);
    }
    const entries = (await allAudit(gw, keys.admin)).filter((e) => e.action === 'manifests.reload');
    assert.equal(entries.length, successfulReloads);
    assert.ok(successfulReloads >= 4);
    for (const e of entries) {
      assert.equal(e.actor, keys.adminId);
      assert.equal(e.role, 'admin');
      assert.match(e.detail ?? '', new RegExp(`^served ${MODEL}@[13]\n`));
      assert.ok(!Number.isNaN(Date.parse(e.at ?? '')));
    }
    assert.match(entries.at(-1)?.detail ?? '', new RegExp(`^served ${MODEL}@3\n`));
  });
});

describe('a reload reaches the in-process workers', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('reload-workers');
  let modelsDir: string;
  let gw: TestGateway;

  before(async () => {
    modelsDir = await tempModels({
      [MODEL]: (m) => {
        delete m.routing.shadow;
      },
    });
    gw = await buildGateway({ prefix, keys, modelsDir, reload: true, workers: ['inference'] });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  test('a job for a version that only the reloaded manifest has is scored by the worker, not failed', async () => {
    // v3 (v2's weights under a new id) becomes primary: jobs submitted after the reload carry version 3
    await mkdir(path.join(modelsDir, MODEL, '3'));
    await copyFile(path.join(modelsDir, MODEL, '2', 'model.onnx'), path.join(modelsDir, MODEL, '3', 'model.onnx'));
    await editManifest(modelsDir, MODEL, (m) => {
      const v2 = m.versions.find((v: { version: string }) => v.version === '2');
      m.versions.push({
        ...v2,
        version: '3',
        runtime: { ...v2.runtime, path: '3/model.onnx' },
        evidence: { ...v2.evidence, rollbackTarget: '1' },
      });
      m.routing.primary = '3';
    });
    const reloaded = await gw.call('POST', '/v1/admin/reload', keys.admin);
    assert.equal(reloaded.status, 200, reloaded.text);
    const submitted = await gw.predict(MODEL, keys.client, [VITALS], { prefer: 'respond-async' });
    assert.equal(submitted.status, 202, submitted.text);
    let job: { state?: string; version?: string; error?: string } = {};
    await waitFor(async () => {
      job = (await gw.call('GET', `/v1/jobs/${submitted.body.id}`, keys.client)).body;
      return job.state === 'released' || job.state === 'failed';
    }, 'the job to finish');
    assert.equal(job.version, '3');
    assert.equal(job.state, 'released', JSON.stringify(job));
  });
});
