/**
 * The registry loader against temp copies of the bundled model folders (real manifests, real ONNX files, edited one
 * fact at a time), the tier classifier, and the warm-up policy on real sessions.
 */
import assert from 'node:assert/strict';
import { appendFile, cp, mkdir, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import YAML from 'yaml';
import { classifyTier } from '../src/registry/classify.ts';
import { loadModels, ManifestError } from '../src/registry/load.ts';
import { type Manifest, manifestSchema } from '../src/registry/schema.ts';
import {
  buildGateway,
  captureLogs,
  MODELS_DIR,
  metricValue,
  predict,
  problemBody,
  RuntimeControl,
  SYNC_CEILING_MS,
} from './support/index.ts';

// biome-ignore lint/suspicious/noExplicitAny: manifests are edited as free-form YAML documents
type Doc = Record<string, any>;

const temps: string[] = [];
after(async () => {
  await Promise.all(temps.map((d) => rm(d, { recursive: true, force: true })));
});

/** A fresh `<tmp>/models/` holding copies of the given bundled models (folder name → source model). */
async function modelsCopy(folders: Record<string, string>): Promise<string> {
  const root = await mkdtemp(path.join(tmpdir(), 'triage-registry-'));
  temps.push(root);
  const models = path.join(root, 'models');
  await mkdir(models);
  for (const [folder, source] of Object.entries(folders)) {
    await cp(path.join(MODELS_DIR, source), path.join(models, folder), { recursive: true });
  }
  return models;
}

async function editManifest(models: string, folder: string, change: (m: Doc) => void): Promise<void> {
  const file = path.join(models, folder, 'model.yaml');
  const m = YAML.parse(await readFile(file, 'utf8')) as Doc;
  change(m);
  await writeFile(file, YAML.stringify(m));
}

/** A copy of news2 with one change to its manifest. */
async function news2With(change: (m: Doc) => void): Promise<string> {
  const models = await modelsCopy({ news2: 'news2' });
  await editManifest(models, 'news2', change);
  return models;
}

async function refused(models: string, ...fragments: string[]): Promise<string> {
  let message = '';
  await assert.rejects(loadModels(models, SYNC_CEILING_MS), (err: unknown) => {
    assert.ok(err instanceof ManifestError, `expected a ManifestError, got ${err}`);
    message = err.message;
    return true;
  });
  for (const f of fragments) assert.ok(message.includes(f), `"${message}" should contain "${f}"`);
  return message;
}

describe('loadModels', () => {
  it('loads the untouched copies: news2 and deterioration are sync, version 1 primary, artifacts verified', async () => {
    const models = await modelsCopy({ news2: 'news2', deterioration: 'deterioration' });
    const loaded = await loadModels(models, SYNC_CEILING_MS);
    assert.deepEqual(
      loaded.map((m) => [m.manifest.name, m.classification.tier, m.manifest.routing.primary, m.file]),
      [
        ['deterioration', 'sync', '1', path.join('models', 'deterioration', 'model.yaml')],
        ['news2', 'sync', '1', path.join('models', 'news2', 'model.yaml')],
      ],
    );
    assert.deepEqual([...(loaded[0]?.artifacts.keys() ?? [])], ['1', '2']);
    assert.equal(loaded[1]?.artifacts.get('1'), path.join(models, 'news2', '1', 'model.onnx'));
  });

  it('a schema error names the file and the field', async () => {
    const models = await news2With((m) => {
      m.features[0].min = 'zero';
    });
    await refused(models, 'models/news2/model.yaml: features.0.min');
  });

  it('several schema errors are all reported', async () => {
    const models = await news2With((m) => {
      m.features[1].max = 'high';
      m.owner = { team: 'Deteriorating Patient Programme' };
    });
    await refused(models, 'news2/model.yaml: features.1.max', 'news2/model.yaml: owner.contact');
  });

  it('an unknown top-level field is refused (a typo must not be silently ignored)', async () => {
    await refused(
      await news2With((m) => {
        m.latencyBudget = 50;
      }),
      'news2/model.yaml',
      'latencyBudget',
    );
  });

  it('unparseable YAML is refused with the file name', async () => {
    const models = await modelsCopy({ news2: 'news2' });
    await writeFile(path.join(models, 'news2', 'model.yaml'), 'name: news2\nfeatures: [unclosed\n');
    await refused(models, 'news2/model.yaml: cannot parse');
  });

  it('a tampered artifact (sha256 mismatch) is refused', async () => {
    const models = await modelsCopy({ news2: 'news2' });
    await appendFile(path.join(models, 'news2', '1', 'model.onnx'), Buffer.from([0]));
    await refused(models, 'news2/model.yaml: versions.0.runtime.sha256', '1/model.onnx has sha256');
  });

  it('a manifest sha256 that does not match the artifact is refused', async () => {
    await refused(
      await news2With((m) => {
        m.versions[0].runtime.sha256 = '0'.repeat(64);
      }),
      'versions.0.runtime.sha256',
    );
  });

  it('an artifact path outside the model folder is refused, relative or absolute', async () => {
    for (const p of [
      '../deterioration/1/model.onnx',
      '1/../../deterioration/1/model.onnx',
      path.join(MODELS_DIR, 'news2', '1', 'model.onnx'),
    ]) {
      const models = await modelsCopy({ news2: 'news2', deterioration: 'deterioration' });
      await editManifest(models, 'news2', (m) => {
        m.versions[0].runtime.path = p;
      });
      await refused(models, 'news2/model.yaml: versions.0.runtime.path', 'points outside the model folder');
    }
  });

  it('a missing artifact is refused', async () => {
    const models = await modelsCopy({ news2: 'news2' });
    await unlink(path.join(models, 'news2', '1', 'model.onnx'));
    await refused(models, 'news2/model.yaml: versions.0.runtime.path', 'cannot read 1/model.onnx (ENOENT)');
  });

  it('a primary without release evidence is refused; a candidate without evidence is allowed (shadow)', async () => {
    await refused(
      await news2With((m) => {
        delete m.versions[0].evidence;
      }),
      'news2/model.yaml: routing.primary',
      'no release evidence',
    );

    const models = await modelsCopy({ deterioration: 'deterioration' });
    await editManifest(models, 'deterioration', (m) => {
      delete m.versions[1].evidence;
    });
    const [loaded] = await loadModels(models, SYNC_CEILING_MS);
    assert.equal(loaded?.manifest.routing.primary, '1');
    await editManifest(models, 'deterioration', (m) => {
      m.routing.primary = '2';
      delete m.routing.shadow; // v2 shadows v1 in the bundled manifest
    });
    await refused(models, 'deterioration/model.yaml: routing.primary', 'version "2" has no release evidence');
  });

  it('a primary that is not a listed version, and an unknown rollback target, are refused', async () => {
    await refused(
      await news2With((m) => {
        m.routing.primary = '7';
      }),
      'news2/model.yaml: routing.primary: unknown version "7"',
    );
    await refused(
      await news2With((m) => {
        m.versions[0].evidence.rollbackTarget = '0';
      }),
      'news2/model.yaml: versions.0.evidence.rollbackTarget: unknown version "0"',
    );
  });

  it('duplicate features and duplicate versions are refused', async () => {
    await refused(
      await news2With((m) => {
        m.features.push({ ...m.features[0] });
      }),
      'news2/model.yaml: features.8.name: duplicate feature "respirationRate"',
    );
    await refused(
      await news2With((m) => {
        m.versions.push({ ...m.versions[0] });
      }),
      'news2/model.yaml: versions.1.version: duplicate version "1"',
    );
  });

  it('output.threshold differing from the approved threshold is refused', async () => {
    await refused(
      await news2With((m) => {
        m.output.threshold = 4;
      }),
      'news2/model.yaml: output.threshold',
      'approved for version "1" (5)',
    );
  });

  it('a declared tier contradicting the facts is refused', async () => {
    await refused(
      await news2With((m) => {
        m.tier = 'async';
      }),
      'news2/model.yaml: tier: declared "async" but the model\'s facts make it "sync"',
    );
    await refused(
      await news2With((m) => {
        m.decisionWindowMs = SYNC_CEILING_MS + 1;
      }),
      'news2/model.yaml: tier: declared "sync"',
      'make it "async"',
      `decision window ${SYNC_CEILING_MS + 1} ms exceeds the sync ceiling`,
    );
    await refused(
      await news2With((m) => {
        m.review = { policy: 'always' };
      }),
      'news2/model.yaml: tier',
      'review policy "always"',
    );
  });

  it('a sync model needs a sync section, within the ceiling', async () => {
    await refused(
      await news2With((m) => {
        delete m.sync;
      }),
      'news2/model.yaml: sync: a sync model needs a sync section',
    );
    await refused(
      await news2With((m) => {
        m.sync.latencyBudgetMs = SYNC_CEILING_MS + 1;
      }),
      'news2/model.yaml: sync.latencyBudgetMs',
      'exceeds the sync ceiling',
    );
  });

  it('the name must equal the folder name', async () => {
    await refused(
      await news2With((m) => {
        m.name = 'news3';
      }),
      'news2/model.yaml: name: "news3" must equal its folder name "news2"',
    );
    await refused(await modelsCopy({ 'news2-copy': 'news2' }), 'news2-copy/model.yaml: name');
  });

  it('collects the errors of every folder in one message', async () => {
    const models = await modelsCopy({ news2: 'news2', deterioration: 'deterioration' });
    await editManifest(models, 'news2', (m) => {
      m.output.threshold = 6;
    });
    await editManifest(models, 'deterioration', (m) => {
      m.name = 'other';
    });
    await refused(models, 'news2/model.yaml: output.threshold', 'deterioration/model.yaml: name');
  });

  it('reads model.json as well as model.yaml; folders without a manifest are skipped; none at all is an error', async () => {
    const models = await modelsCopy({ news2: 'news2' });
    const yamlFile = path.join(models, 'news2', 'model.yaml');
    await writeFile(
      path.join(models, 'news2', 'model.json'),
      JSON.stringify(YAML.parse(await readFile(yamlFile, 'utf8'))),
    );
    await unlink(yamlFile);
    await mkdir(path.join(models, 'scratch'));
    const loaded = await loadModels(models, SYNC_CEILING_MS);
    assert.deepEqual(
      loaded.map((m) => [m.manifest.name, m.file]),
      [['news2', path.join('models', 'news2', 'model.json')]],
    );

    const empty = await modelsCopy({});
    await mkdir(path.join(empty, 'scratch'));
    await refused(empty, 'TRIAGE_MODELS_DIR: no model manifests');
    await refused(path.join(empty, 'does-not-exist'), 'TRIAGE_MODELS_DIR: cannot read');
  });
});

describe('classifyTier', () => {
  let base: Manifest;
  const load = async () => {
    base ??= manifestSchema.parse(YAML.parse(await readFile(path.join(MODELS_DIR, 'news2', 'model.yaml'), 'utf8')));
    return base;
  };
  const tier = (m: Manifest) => classifyTier(m, SYNC_CEILING_MS);
  // the classifier only counts schedules; their other fields do not matter to it
  const schedule = (id: string) => ({ id }) as unknown as NonNullable<Manifest['schedules']>[number];
  const review = (policy: 'never' | 'always' | 'low-confidence' | 'sample') =>
    manifestSchema.shape.review.parse({ policy, samplePercent: 10 }) as Manifest['review'];

  it('sync: a short decision window, no review, no documents', async () => {
    const m = await load();
    assert.deepEqual(tier(m), { tier: 'sync', reasons: ['decision window 2000 ms within the sync ceiling 5000 ms'] });
    assert.deepEqual(tier({ ...m, decisionWindowMs: undefined }), {
      tier: 'sync',
      reasons: ['no review, no documents, no schedules'],
    });
    assert.equal(tier({ ...m, decisionWindowMs: SYNC_CEILING_MS }).tier, 'sync', 'the ceiling itself is still sync');
    assert.equal(tier({ ...m, review: review('never') }).tier, 'sync');
  });

  it('async: any review policy but never, documents, or a decision window over the ceiling', async () => {
    const m = await load();
    for (const policy of ['always', 'low-confidence', 'sample'] as const) {
      assert.deepEqual(tier({ ...m, review: review(policy) }), {
        tier: 'async',
        reasons: [`review policy "${policy}"`],
      });
    }
    assert.deepEqual(tier({ ...m, input: 'document' }), { tier: 'async', reasons: ['takes documents'] });
    assert.deepEqual(tier({ ...m, decisionWindowMs: SYNC_CEILING_MS + 1 }), {
      tier: 'async',
      reasons: [`decision window ${SYNC_CEILING_MS + 1} ms exceeds the sync ceiling ${SYNC_CEILING_MS} ms`],
    });
    assert.deepEqual(tier({ ...m, input: 'document', review: review('always') }).reasons, [
      'review policy "always"',
      'takes documents',
    ]);
    // a review policy makes it async even with schedules
    assert.equal(
      tier({ ...m, sync: undefined, decisionWindowMs: undefined, review: review('always'), schedules: [schedule('n')] })
        .tier,
      'async',
    );
  });

  it('batch: only schedules, nothing interactive', async () => {
    const m = await load();
    const scheduled = {
      ...m,
      sync: undefined,
      decisionWindowMs: undefined,
      review: undefined,
      schedules: [schedule('nightly')],
    };
    assert.deepEqual(tier(scheduled), { tier: 'batch', reasons: ['only has schedules'] });
    assert.equal(tier({ ...scheduled, schedules: [] }).tier, 'sync', 'no schedules is not batch');
    assert.equal(tier({ ...m, schedules: [schedule('nightly')] }).tier, 'sync', 'schedules beside a sync section');
  });
});

describe('warm-up policy (real sessions, runs delayed during warm-up)', () => {
  it('refuse: a model whose warm-up breaks its budget is refused, answers 503 not_ready, and others keep serving', async () => {
    // every warm-up run takes ≥ 20 ms; news2's budget is set to 1 ms, deterioration's left far above it
    const control = new RuntimeControl({ armed: true, delayMs: 20 });
    const logs = captureLogs('info');
    const t = await buildGateway({
      runtimeFactory: control.factory(),
      sync: { news2: { latencyBudgetMs: 1 } },
      warmupRuns: 2,
      warmupPolicy: 'refuse',
      logger: logs.logger,
    });
    control.armed = false;
    try {
      const news2 = t.deps.sync.status('news2');
      assert.equal(news2?.state, 'refused');
      assert.match(news2?.refusal ?? '', /^warm-up p99 \d+\.\d+ ms breaks the latency budget of 1 ms$/);
      assert.ok((news2?.warmupP99Ms ?? 0) >= 20);
      assert.equal(t.deps.sync.status('deterioration')?.state, 'warm');

      const res = await predict(t.app, 'news2', { instances: [{}] }, t.keys.client);
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '30');
      const body = await problemBody(res);
      assert.equal(body.code, 'not_ready');
      assert.match(String(body.detail), /breaks the latency budget/);

      const ok = await predict(
        t.app,
        'deterioration',
        {
          instances: [
            { age: 70, respirationRate: 26, spo2: 95, systolicBP: 107, pulse: 44, temperature: 36.5, onOxygen: false },
          ],
        },
        t.keys.client,
      );
      assert.equal(ok.status, 200);

      // the refusal is visible: the registry, the metric and the log; readiness does not wait for a refused model
      const detail = (await (
        await t.app.request('/v1/models/news2', { headers: { authorization: `Bearer ${t.keys.client}` } })
      ).json()) as Doc;
      assert.equal(detail.state, 'refused');
      assert.match(detail.refusal, /breaks the latency budget of 1 ms/);
      const metrics = await t.deps.metrics.registry.metrics();
      assert.equal(metricValue(metrics, 'triage_model_refused', { model: 'news2', reason: 'warmup_over_budget' }), 1);
      assert.equal(metricValue(metrics, 'triage_model_refused', { model: 'deterioration' }), undefined);
      const errors = logs.lines.map((l) => JSON.parse(l) as Doc).filter((e) => e.level === 50);
      assert.deepEqual(
        errors.map((e) => e.model),
        ['news2'],
      );
      assert.equal(t.deps.sync.ready(), true);
      const ready = await t.app.request('/readyz');
      assert.equal(ready.status, 200);
    } finally {
      await t.close();
    }
  });

  it('warn: the model is served anyway, with a warning', async () => {
    const control = new RuntimeControl({ armed: true, delayMs: 20 });
    const logs = captureLogs('info');
    const t = await buildGateway({
      runtimeFactory: control.factory(),
      sync: { news2: { latencyBudgetMs: 1 } },
      warmupRuns: 2,
      warmupPolicy: 'warn',
      logger: logs.logger,
    });
    control.armed = false;
    try {
      assert.equal(t.deps.sync.status('news2')?.state, 'warm');
      assert.ok(t.deps.sync.versions('news2').includes('1'), 'served despite the budget (policy warn)');
      const warnings = logs.lines.map((l) => JSON.parse(l) as Doc).filter((e) => e.level === 40);
      assert.equal(warnings.length, 1);
      assert.equal(warnings[0]?.model, 'news2');
      assert.match(warnings[0]?.msg, /^serving anyway: warm-up p99/);
      assert.equal(
        metricValue(await t.deps.metrics.registry.metrics(), 'triage_model_refused', { model: 'news2' }),
        undefined,
      );
    } finally {
      await t.close();
    }
  });
});
