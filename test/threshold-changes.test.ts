/**
 * Governed threshold changes on two gateway replicas sharing a Redis prefix: a change request is proposed with a
 * reason and an evidence link, refused when the proposer tries to approve it, applied on both replicas when another
 * person with the approver role approves it (audited with the before and after); a manifest reload that changes a
 * threshold without an approved request is refused and audited with its diff; every reload is audited with a diff.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import {
  allAudit,
  buildGateway,
  deletePrefix,
  editManifest,
  HANG_GUARD_MS,
  MODEL,
  makePrefix,
  removeDir,
  scoreOnnx,
  type TestGateway,
  tempModels,
  type Vitals,
  waitFor,
} from './support/index.ts';

const key = (who: string) => `trg_${who}_${randomBytes(16).toString('hex')}`;
const k = { client: key('c'), lead: key('lead'), approver1: key('ap1'), approver2: key('ap2'), admin: key('adm') };
const keys = {
  ...k,
  reviewer: k.lead,
  adminId: 'cr-admin',
  store: new ApiKeyStore([
    { id: 'cr-client', role: 'client', sha256: hashKey(k.client), models: ['*'] },
    { id: 'clinical-lead', role: 'reviewer', sha256: hashKey(k.lead), models: ['*'] },
    { id: 'approver-1', role: 'approver', sha256: hashKey(k.approver1), models: ['*'] },
    { id: 'approver-2', role: 'approver', sha256: hashKey(k.approver2), models: ['*'] },
    { id: 'cr-admin', role: 'admin', sha256: hashKey(k.admin), models: ['*'] },
  ]),
};

const EVIDENCE = 'https://evidence.example.org/deterioration/threshold-review-2026-11';

describe('governed threshold changes, two replicas', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('threshold');
  let modelsDir: string;
  let a: TestGateway;
  let b: TestGateway;
  /** a patient scored between 0.25 and 0.3 by version 1: no escalation at 0.3, escalation at 0.25 */
  let borderline: Vitals;

  before(async () => {
    modelsDir = await tempModels({
      [MODEL]: (m) => {
        delete m.routing.shadow;
      },
    });
    a = await buildGateway({ prefix, keyStore: keys.store, modelsDir, reload: true });
    b = await buildGateway({ prefix, keyStore: keys.store, modelsDir, routingRefreshMs: 25, reload: true });
    const rows: Vitals[] = [];
    for (const respirationRate of [16, 18, 20, 22, 24, 26])
      for (const pulse of [80, 95, 110, 125])
        for (const spo2 of [90, 93, 96])
          rows.push({ age: 70, respirationRate, spo2, systolicBP: 110, pulse, temperature: 37.8, onOxygen: false });
    const scores = await scoreOnnx('1', rows);
    const i = scores.findIndex((s) => s >= 0.26 && s < 0.29);
    assert.ok(i >= 0, 'a borderline row exists');
    borderline = rows[i] as Vitals;
  });

  after(async () => {
    await a?.close();
    await b?.close();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  const url = `/v1/models/${MODEL}/threshold-changes`;
  const verdict = async (gw: TestGateway) => {
    const res = await gw.predict(MODEL, keys.client, [borderline]);
    assert.equal(res.status, 200, res.text);
    return { threshold: res.body.threshold, above: res.body.predictions[0].aboveThreshold };
  };
  let first: string;

  test('a proposal needs a reviewer or approver, a new threshold in range, a reason and an evidence link', async () => {
    const cases: Array<[string, unknown, number]> = [
      [keys.client, { threshold: 0.25, reason: 'r', evidenceUrl: EVIDENCE }, 403],
      [keys.lead, { threshold: 0.25, reason: 'r' }, 400],
      [keys.lead, { threshold: 0.25, reason: 'r', evidenceUrl: 'not a link' }, 400],
      [keys.lead, { threshold: 0.3, reason: 'r', evidenceUrl: EVIDENCE }, 400],
      [keys.lead, { threshold: 1.5, reason: 'r', evidenceUrl: EVIDENCE }, 400],
      [keys.lead, { threshold: 0.25, reason: '', evidenceUrl: EVIDENCE }, 400],
    ];
    for (const [who, body, status] of cases) {
      const res = await a.call('POST', url, who, body);
      assert.equal(res.status, status, `${JSON.stringify(body)}: ${res.text}`);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
    }
  });

  test('one person cannot both propose and approve; a reviewer cannot approve', async () => {
    const res = await a.call('POST', url, keys.approver1, {
      threshold: 0.25,
      reason: 'Missed deteriorations in the Q3 audit: lower the threshold',
      evidenceUrl: EVIDENCE,
    });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.headers.get('location'), `/v1/threshold-changes/${res.body.id}`);
    assert.deepEqual(
      [res.body.from, res.body.to, res.body.state, res.body.proposedBy],
      [0.3, 0.25, 'proposed', 'approver-1'],
    );
    first = res.body.id;
    const self = await a.call('POST', `/v1/threshold-changes/${first}/approve`, keys.approver1, { reason: 'mine' });
    assert.equal(self.status, 403, self.text);
    assert.match(self.body.detail, /two people/);
    const reviewer = await a.call('POST', `/v1/threshold-changes/${first}/approve`, keys.lead, { reason: 'ok' });
    assert.equal(reviewer.status, 403, reviewer.text);
    assert.deepEqual(await verdict(a), { threshold: 0.3, above: false }, 'nothing applied');
  });

  test('approved by a second person: applied on both replicas, audited with the before and after', async () => {
    const res = await b.call('POST', `/v1/threshold-changes/${first}/approve`, keys.approver2, {
      reason: 'Evidence reviewed at the safety board',
    });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual([res.body.state, res.body.decidedBy], ['approved', 'approver-2']);
    assert.deepEqual(await verdict(b), { threshold: 0.25, above: true }, 'at once where it was approved');
    await waitFor(() => a.gateway.deps.catalog.get(MODEL)?.manifest.output.threshold === 0.25, 'replica A to follow');
    assert.deepEqual(await verdict(a), { threshold: 0.25, above: true });
    const again = await a.call('POST', `/v1/threshold-changes/${first}/approve`, keys.admin, { reason: 'again' });
    assert.equal(again.status, 409, again.text);
    assert.equal(again.body.code, 'already_decided');
    const listed = await a.call('GET', url, keys.client);
    assert.equal(listed.body.threshold, 0.25);
    assert.equal(listed.body.applied.requestId, first);
    const audit = (await allAudit(a, keys.admin)).filter((e) => e.action?.startsWith('threshold.'));
    assert.deepEqual(
      audit.map((e) => [e.action, e.actor, e.target]),
      [
        ['threshold.propose', 'approver-1', first],
        ['threshold.approve', 'approver-2', first],
      ],
    );
    assert.match(audit[1]?.detail ?? '', /threshold 0\.3 → 0\.25 applied; proposed by approver-1; evidence https:/);
  });

  test('a reload that changes a threshold without an approved request is refused and audited with its diff', async () => {
    await editManifest(modelsDir, MODEL, (m) => {
      m.output.threshold = 0.2;
      for (const v of m.versions) v.evidence.approvedThreshold = 0.2;
      v0(m).evidence.approvedBy = 'someone else entirely';
    });
    const res = await a.call('POST', '/v1/admin/reload', keys.admin);
    assert.equal(res.status, 409, res.text);
    assert.equal(res.body.code, 'threshold_change_unapproved');
    assert.match(res.body.detail, /deterioration output\.threshold 0\.25 → 0\.2: no approved change request/);
    assert.deepEqual(await verdict(a), { threshold: 0.25, above: true }, 'the previous manifests keep serving');
    const refused = (await allAudit(a, keys.admin)).filter((e) => e.action === 'manifests.reload_refused');
    assert.equal(refused.length, 1);
    assert.equal(refused[0]?.actor, 'cr-admin');
    assert.match(refused[0]?.detail ?? '', /deterioration: output\.threshold: 0\.3 → 0\.2/);
    assert.match(refused[0]?.detail ?? '', /versions\.0\.evidence\.approvedBy: "Clinical AI Platform/);
  });

  test('the manifest released at the approved threshold reloads, audited with the diff; no change says so', async () => {
    await editManifest(modelsDir, MODEL, (m) => {
      m.output.threshold = 0.25;
      for (const v of m.versions) v.evidence.approvedThreshold = 0.25;
      v0(m).evidence.approvedBy = 'Clinical AI Platform model review board (demo)';
    });
    const res = await a.call('POST', '/v1/admin/reload', keys.admin);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(await verdict(a), { threshold: 0.25, above: true });
    assert.equal((await b.call('POST', '/v1/admin/reload', keys.admin)).status, 200);
    const reloads = (await allAudit(a, keys.admin)).filter((e) => e.action === 'manifests.reload');
    assert.equal(reloads.length, 2);
    assert.match(reloads[0]?.detail ?? '', /^served deterioration@1\n/);
    assert.match(reloads[0]?.detail ?? '', /^deterioration: output\.threshold: 0\.3 → 0\.25$/m);
    assert.match(reloads[0]?.detail ?? '', /deterioration: versions\.1\.evidence\.approvedThreshold: 0\.3 → 0\.25/);
    assert.equal(reloads[1]?.detail, reloads[0]?.detail, 'replica B read the same files');
    assert.equal((await a.call('POST', '/v1/admin/reload', keys.admin)).status, 200);
    assert.equal((await allAudit(a, keys.admin)).at(-1)?.detail, 'served deterioration@1\nno change');
  });

  test('rejected requests change nothing; a request made stale by another approval is refused', async () => {
    const propose = async (threshold: number) => {
      const res = await a.call('POST', url, keys.lead, {
        threshold,
        reason: `try ${threshold}`,
        evidenceUrl: EVIDENCE,
      });
      assert.equal(res.status, 201, res.text);
      return res.body.id as string;
    };
    const rejected = await propose(0.1);
    const r = await a.call('POST', `/v1/threshold-changes/${rejected}/reject`, keys.approver1, {
      reason: 'no evidence',
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.state, 'rejected');
    assert.equal((await verdict(a)).threshold, 0.25);
    const x = await propose(0.35);
    const y = await propose(0.4);
    assert.equal(
      (await a.call('POST', `/v1/threshold-changes/${x}/approve`, keys.approver1, { reason: 'ok' })).status,
      200,
    );
    const stale = await a.call('POST', `/v1/threshold-changes/${y}/approve`, keys.approver2, { reason: 'ok' });
    assert.equal(stale.status, 409, stale.text);
    assert.match(stale.body.detail, /the threshold in force is 0\.35, not 0\.25/);
    assert.deepEqual(await verdict(a), { threshold: 0.35, above: false });
  });
});

// biome-ignore lint/suspicious/noExplicitAny: the manifest is edited as plain YAML data
const v0 = (m: any) => m.versions[0];
