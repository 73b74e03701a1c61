/**
 * Canary and rollback through the admin endpoints, on real Redis and real onnxruntime sessions: a sticky weighted
 * split per subject (same subject, same version; the weight respected over many subjects), removal at weight 0,
 * promotion and canary refused without release evidence, promote and roll back (audited: who, when, why), routing
 * changes made through one replica reaching another on the same Redis, roles, and the bad-body table.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  HANG_GUARD_MS,
  MODEL,
  makeKeys,
  makePrefix,
  pool,
  removeDir,
  SICK_VITALS,
  scoreOnnx,
  type TestGateway,
  tempModels,
  waitFor,
} from './support/index.ts';

const keys = makeKeys();
const VITALS = SICK_VITALS;

const routingUrl = `/v1/models/${MODEL}/routing`;

describe('canary split, promotion and rollback', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('canary');
  let modelsDir: string;
  /** replica A: where the changes are made */
  let a: TestGateway;
  /** replica B: the same Redis prefix, polling the routing every 25 ms */
  let b: TestGateway;
  /** replica A's random draws: real randomness, except where a test pins them */
  let draw: () => number = Math.random;
  let scores: { v1: number; v2: number };

  before(async () => {
    // no shadows here: only the answering version matters
    modelsDir = await tempModels({
      [MODEL]: (m) => {
        delete m.routing.shadow;
      },
    });
    a = await buildGateway({ prefix, keys, modelsDir, random: () => draw() });
    b = await buildGateway({ prefix, keys, modelsDir, routingRefreshMs: 25 });
    const [v1] = await scoreOnnx('1', [VITALS]);
    const [v2] = await scoreOnnx('2', [VITALS]);
    scores = { v1: v1 as number, v2: v2 as number };
    assert.notEqual(scores.v1, scores.v2);
  });

  after(async () => {
    await a?.close();
    await b?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  /** The answering version for a subject, checked against the score that version computes. */
  async function versionFor(gw: TestGateway, subject?: string): Promise<string> {
    const res = await gw.predict(
      MODEL,
      keys.client,
      [VITALS],
      subject !== undefined ? { 'x-subject-key': subject } : {},
    );
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers.get('x-model-version'), res.body.version);
    const score = res.body.predictions[0].deteriorationRisk;
    assert.equal(score, res.body.version === '2' ? scores.v2 : scores.v1, `v${res.body.version} answered ${score}`);
    return res.body.version;
  }

  async function routing(gw: TestGateway) {
    const res = await gw.call('GET', routingUrl, keys.admin);
    assert.equal(res.status, 200, res.text);
    return res.body.routing;
  }

  const subjects = Array.from({ length: 2000 }, (_, i) => `patient-${i}-${prefix.slice(-12, -1)}`);
  const bySubject = new Map<string, string>();

  test('PUT canary {version 2, weight 30} as admin → the split applies at once', async () => {
    const res = await a.call('PUT', `${routingUrl}/canary`, keys.admin, {
      version: '2',
      weight: 30,
      reason: 'CR-1042: v2 canary at 30%',
    });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.routing, { primary: '1', canary: { version: '2', weight: 30 } });
    assert.deepEqual(await routing(a), { primary: '1', canary: { version: '2', weight: 30 } });
  });

  test('over 2000 distinct subjects about 30% land on v2 (within 4 points; binomial sd ≈ 1 point)', async () => {
    const versions = await pool(subjects.length, 16, (i) => versionFor(a, subjects[i]));
    versions.forEach((v, i) => void bySubject.set(subjects[i] as string, v));
    const share = versions.filter((v) => v === '2').length / versions.length;
    assert.ok(Math.abs(share - 0.3) <= 0.04, `v2 share ${share}`);
    assert.ok(versions.every((v) => v === '1' || v === '2'));
  });

  test('sticky: the same subject gets the same version across 50 calls (on either side of the split)', async () => {
    const onV2 = subjects.filter((s) => bySubject.get(s) === '2').slice(0, 3);
    const onV1 = subjects.filter((s) => bySubject.get(s) === '1').slice(0, 3);
    assert.equal(onV2.length, 3);
    assert.equal(onV1.length, 3);
    const picked = [...onV2, ...onV1];
    const calls = await pool(picked.length * 50, 16, async (i) => {
      const subject = picked[i % picked.length] as string;
      return [subject, await versionFor(a, subject)] as const;
    });
    for (const subject of picked) {
      const seen = new Set(calls.filter(([s]) => s === subject).map(([, v]) => v));
      assert.deepEqual([...seen], [bySubject.get(subject)], subject);
    }
  });

  test('without a subject key each request is drawn (injected random): below the weight → canary', async () => {
    draw = () => 0.1;
    assert.equal(await versionFor(a), '2');
    draw = () => 0.2999;
    assert.equal(await versionFor(a), '2');
    draw = () => 0.3;
    assert.equal(await versionFor(a), '1');
    draw = () => 0.9;
    assert.equal(await versionFor(a), '1');
    draw = Math.random;
  });

  test('the change made through replica A reaches replica B: same split, same subjects', async () => {
    await waitFor(
      () =>
        JSON.stringify(b.gateway.deps.catalog.get(MODEL)?.routing) ===
        JSON.stringify(a.gateway.deps.catalog.get(MODEL)?.routing),
      'replica B to follow the canary',
    );
    assert.deepEqual(await routing(b), { primary: '1', canary: { version: '2', weight: 30 } });
    const sample = subjects.slice(0, 100);
    const onB = await pool(sample.length, 16, (i) => versionFor(b, sample[i]));
    assert.deepEqual(
      onB,
      sample.map((s) => bySubject.get(s)),
    );
  });

  test('weight 0 removes the canary: every subject back on the primary (on both replicas)', async () => {
    const res = await a.call('PUT', `${routingUrl}/canary`, keys.admin, { weight: 0, reason: 'CR-1043: pause' });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.routing, { primary: '1' });
    const wasV2 = subjects.filter((s) => bySubject.get(s) === '2').slice(0, 20);
    for (const s of wasV2) assert.equal(await versionFor(a, s), '1');
    await waitFor(
      () => b.gateway.deps.catalog.get(MODEL)?.routing.canary === undefined,
      'replica B to drop the canary',
    );
    for (const s of wasV2) assert.equal(await versionFor(b, s), '1');
  });

  test('promote v2 → every answer says version 2 (both replicas); audited with who and why', async () => {
    const before = Date.now();
    const res = await a.call('POST', `${routingUrl}/promote`, keys.admin, {
      version: '2',
      reason: 'CR-1044: canary clean for 14 days',
    });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.routing, { primary: '2' });
    for (const s of subjects.slice(0, 20)) assert.equal(await versionFor(a, s), '2');
    assert.equal(await versionFor(a), '2');
    await waitFor(
      () => b.gateway.deps.catalog.get(MODEL)?.routing.primary === '2',
      'replica B to follow the promotion',
    );
    for (const s of subjects.slice(0, 20)) assert.equal(await versionFor(b, s), '2');

    const entry = (await allAudit(a, keys.admin)).find((e) => e.action === 'release.promote');
    assert.ok(entry, 'a release.promote audit entry');
    assert.equal(entry.actor, keys.adminId);
    assert.equal(entry.role, 'admin');
    assert.equal(entry.model, MODEL);
    assert.equal(entry.version, '2');
    assert.equal(entry.reason, 'CR-1044: canary clean for 14 days');
    assert.match(entry.detail ?? '', /1 → 2/);
    const at = Date.parse(entry.at ?? '');
    assert.ok(at >= before - 1000 && at <= Date.now() + 1000, String(entry.at));
  });

  test('promoting the primary again → 409 invalid_state', async () => {
    const res = await a.call('POST', `${routingUrl}/promote`, keys.admin, { version: '2', reason: 'again' });
    assert.equal(res.status, 409, res.text);
    assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
    assert.equal(res.body.code, 'invalid_state');
  });

  test('rollback → back to v2’s rollback target (1), audited; a second rollback (no target) → 409', async () => {
    const res = await a.call('POST', `${routingUrl}/rollback`, keys.admin, {
      reason: 'INC-77: alert fatigue on ward 4',
    });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.routing, { primary: '1' });
    for (const s of subjects.slice(0, 20)) assert.equal(await versionFor(a, s), '1');
    await waitFor(() => b.gateway.deps.catalog.get(MODEL)?.routing.primary === '1', 'replica B to follow the rollback');
    assert.equal(await versionFor(b, subjects[0]), '1');
    const entry = (await allAudit(a, keys.admin)).find((e) => e.action === 'release.rollback');
    assert.ok(entry, 'a release.rollback audit entry');
    assert.equal(entry.actor, keys.adminId);
    assert.equal(entry.version, '1');
    assert.equal(entry.reason, 'INC-77: alert fatigue on ward 4');
    assert.match(entry.detail ?? '', /2 → 1/);

    const again = await a.call('POST', `${routingUrl}/rollback`, keys.admin, { reason: 'once more' });
    assert.equal(again.status, 409, again.text);
    assert.match(again.headers.get('content-type') ?? '', /^application\/problem\+json/);
    assert.equal(again.body.code, 'invalid_state');
    assert.match(again.body.detail, /rollback target/);
    assert.deepEqual(await routing(a), { primary: '1' });
  });

  test('every change is in the audit trail, in order, each with its reason', async () => {
    const entries = (await allAudit(a, keys.admin)).filter((e) => e.action?.startsWith('release.'));
    assert.deepEqual(
      entries.map((e) => [e.action, e.actor, e.reason]),
      [
        ['release.canary', keys.adminId, 'CR-1042: v2 canary at 30%'],
        ['release.canary', keys.adminId, 'CR-1043: pause'],
        ['release.promote', keys.adminId, 'CR-1044: canary clean for 14 days'],
        ['release.rollback', keys.adminId, 'INC-77: alert fatigue on ward 4'],
      ],
    );
  });

  test('non-admins → 403 on every routing endpoint; nothing changes', async () => {
    const calls: Array<[string, string, unknown]> = [
      ['GET', routingUrl, undefined],
      ['PUT', `${routingUrl}/canary`, { version: '2', weight: 50, reason: 'x' }],
      ['POST', `${routingUrl}/promote`, { version: '2', reason: 'x' }],
      ['POST', `${routingUrl}/rollback`, { reason: 'x' }],
      ['PUT', `${routingUrl}/shadow`, { versions: ['2'], sampleRate: 1, reason: 'x' }],
    ];
    for (const key of [keys.client, keys.reviewer]) {
      for (const [method, url, body] of calls) {
        const res = await a.call(method, url, key, body);
        assert.equal(res.status, 403, `${method} ${url}: ${res.text}`);
        assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
        assert.equal(res.body.code, 'forbidden');
      }
    }
    assert.deepEqual(await routing(a), { primary: '1' });
  });

  const bad: Array<{ name: string; method: string; path: string; body: unknown; code: string }> = [
    {
      name: 'weight 150',
      method: 'PUT',
      path: '/canary',
      body: { version: '2', weight: 150, reason: 'r' },
      code: 'invalid_request',
    },
    {
      name: 'weight -1',
      method: 'PUT',
      path: '/canary',
      body: { version: '2', weight: -1, reason: 'r' },
      code: 'invalid_request',
    },
    {
      name: 'weight "x"',
      method: 'PUT',
      path: '/canary',
      body: { version: '2', weight: 'x', reason: 'r' },
      code: 'invalid_request',
    },
    {
      name: 'weight "30"',
      method: 'PUT',
      path: '/canary',
      body: { version: '2', weight: '30', reason: 'r' },
      code: 'invalid_request',
    },
    { name: 'no weight', method: 'PUT', path: '/canary', body: { version: '2', reason: 'r' }, code: 'invalid_request' },
    {
      name: 'missing reason',
      method: 'PUT',
      path: '/canary',
      body: { version: '2', weight: 30 },
      code: 'invalid_request',
    },
    {
      name: 'blank reason',
      method: 'PUT',
      path: '/canary',
      body: { version: '2', weight: 30, reason: '  ' },
      code: 'invalid_request',
    },
    {
      name: 'reason a number',
      method: 'PUT',
      path: '/canary',
      body: { version: '2', weight: 30, reason: 7 },
      code: 'invalid_request',
    },
    {
      name: 'unknown field',
      method: 'PUT',
      path: '/canary',
      body: { version: '2', weight: 30, reason: 'r', sticky: false },
      code: 'invalid_request',
    },
    {
      name: 'unknown version',
      method: 'PUT',
      path: '/canary',
      body: { version: '9', weight: 30, reason: 'r' },
      code: 'invalid_request',
    },
    {
      name: 'the primary as canary',
      method: 'PUT',
      path: '/canary',
      body: { version: '1', weight: 30, reason: 'r' },
      code: 'invalid_request',
    },
    { name: 'a JSON array', method: 'PUT', path: '/canary', body: [], code: 'invalid_request' },
    { name: 'malformed JSON', method: 'PUT', path: '/canary', body: '{"weight": 3', code: 'malformed_json' },
    { name: 'promote: no version', method: 'POST', path: '/promote', body: { reason: 'r' }, code: 'invalid_request' },
    {
      name: 'promote: unknown version',
      method: 'POST',
      path: '/promote',
      body: { version: '9', reason: 'r' },
      code: 'invalid_request',
    },
    {
      name: 'promote: missing reason',
      method: 'POST',
      path: '/promote',
      body: { version: '2' },
      code: 'invalid_request',
    },
    {
      name: 'promote: unknown field',
      method: 'POST',
      path: '/promote',
      body: { version: '2', reason: 'r', force: true },
      code: 'invalid_request',
    },
    {
      name: 'rollback: unknown field',
      method: 'POST',
      path: '/rollback',
      body: { reason: 'r', to: '1' },
      code: 'invalid_request',
    },
    {
      name: 'shadow: sampleRate 2',
      method: 'PUT',
      path: '/shadow',
      body: { versions: ['2'], sampleRate: 2, reason: 'r' },
      code: 'invalid_request',
    },
    {
      name: 'shadow: sampleRate -0.1',
      method: 'PUT',
      path: '/shadow',
      body: { versions: ['2'], sampleRate: -0.1, reason: 'r' },
      code: 'invalid_request',
    },
    {
      name: 'shadow: sampleRate "1"',
      method: 'PUT',
      path: '/shadow',
      body: { versions: ['2'], sampleRate: '1', reason: 'r' },
      code: 'invalid_request',
    },
    {
      name: 'shadow: versions not a list',
      method: 'PUT',
      path: '/shadow',
      body: { versions: '2', sampleRate: 1, reason: 'r' },
      code: 'invalid_request',
    },
    {
      name: 'shadow: unknown version',
      method: 'PUT',
      path: '/shadow',
      body: { versions: ['9'], sampleRate: 1, reason: 'r' },
      code: 'invalid_request',
    },
    {
      name: 'shadow: the primary',
      method: 'PUT',
      path: '/shadow',
      body: { versions: ['1'], sampleRate: 1, reason: 'r' },
      code: 'invalid_request',
    },
  ];
  for (const c of bad) {
    test(`bad body: ${c.name} → 400 ${c.code} problem+json, nothing changes`, async () => {
      const auditBefore = (await allAudit(a, keys.admin)).length;
      const res = await a.call(c.method, `${routingUrl}${c.path}`, keys.admin, c.body);
      assert.equal(res.status, 400, res.text);
      assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
      assert.equal(res.body.code, c.code);
      assert.equal(res.body.status, 400);
      assert.deepEqual(await routing(a), { primary: '1' });
      assert.equal((await allAudit(a, keys.admin)).length, auditBefore);
    });
  }
});

describe('release evidence', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('canary-evidence');
  let modelsDir: string;
  let gw: TestGateway;

  before(async () => {
    // v2 without release evidence: it may shadow, never answer
    modelsDir = await tempModels({
      [MODEL]: (m) => {
        delete m.versions[1].evidence;
      },
    });
    gw = await buildGateway({ prefix, keys, modelsDir });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  test('a version without evidence cannot be canary or promoted → 409 evidence_required; not audited', async () => {
    const canary = await gw.call('PUT', `${routingUrl}/canary`, keys.admin, {
      version: '2',
      weight: 10,
      reason: 'try it',
    });
    assert.equal(canary.status, 409, canary.text);
    assert.match(canary.headers.get('content-type') ?? '', /^application\/problem\+json/);
    assert.equal(canary.body.code, 'evidence_required');
    const promote = await gw.call('POST', `${routingUrl}/promote`, keys.admin, { version: '2', reason: 'ship it' });
    assert.equal(promote.status, 409, promote.text);
    assert.equal(promote.body.code, 'evidence_required');

    const routing = await gw.call('GET', routingUrl, keys.admin);
    assert.deepEqual(routing.body.routing, { primary: '1', shadow: { versions: ['2'], sampleRate: 1 } });
    const res = await gw.predict(MODEL, keys.client, [VITALS], { 'x-subject-key': 'patient-1' });
    assert.equal(res.body.version, '1');
    assert.deepEqual(
      (await allAudit(gw, keys.admin)).filter((e) => e.action?.startsWith('release.')),
      [],
    );
  });

  test('it can still be a shadow (no evidence needed to be compared, never returned)', async () => {
    const res = await gw.call('PUT', `${routingUrl}/shadow`, keys.admin, {
      versions: ['2'],
      sampleRate: 0.5,
      reason: 'keep comparing',
    });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.routing, { primary: '1', shadow: { versions: ['2'], sampleRate: 0.5 } });
  });
});
