/**
 * Release evidence (manifest `versions[].evidence`): checked at load (a change-approval record whose sha256 differs,
 * lineage that names no feature, misses one or disagrees with the FHIR mapping, an incomplete Safe Harbor review),
 * shown at GET /v1/models/{model}/versions/{version}, required whole by promotion (a version lacking each piece is
 * refused naming it) and by `triage models validate`; the bundled models carry complete evidence whose dataset hashes
 * are what the build computes.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { appendFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { datasetSha256 } from '../models/build.ts';
import { loadModels, ManifestError } from '../src/registry/load.ts';
import {
  buildGateway,
  deletePrefix,
  editManifest,
  HANG_GUARD_MS,
  MODELS_DIR,
  makeKeys,
  makePrefix,
  REPO_DIR,
  removeDir,
  SYNC_CEILING_MS,
  type TestGateway,
  tempModels,
} from './support/index.ts';

const PIECES = ['datasetSha256', 'deidentification', 'lineage', 'clinicalReviews', 'changeApprovals'] as const;

async function refused(dir: string, ...fragments: string[]): Promise<void> {
  await assert.rejects(loadModels(dir, SYNC_CEILING_MS), (err: unknown) => {
    assert.ok(err instanceof ManifestError, String(err));
    for (const f of fragments) assert.ok(err.message.includes(f), `"${err.message}" should contain "${f}"`);
    return true;
  });
}

describe('evidence checked at load', { timeout: HANG_GUARD_MS }, () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await removeDir(d);
  });
  const copy = async (edit: Parameters<typeof tempModels>[0][string]) => {
    const dir = await tempModels({ deterioration: edit });
    dirs.push(dir);
    return dir;
  };

  test('the bundled models load with complete evidence, their dataset hashes as the build computes them', async () => {
    for (const m of await loadModels(MODELS_DIR, SYNC_CEILING_MS)) {
      for (const v of m.manifest.versions) {
        assert.equal(v.evidence?.datasetSha256, datasetSha256(m.manifest.name), `${m.manifest.name} v${v.version}`);
        for (const piece of PIECES) assert.ok(v.evidence?.[piece], `${m.manifest.name} v${v.version}: ${piece}`);
      }
    }
  });

  test('a change-approval record that differs from its sha256 is refused, as a tampered artifact is', async () => {
    const dir = await copy(null);
    await appendFile(path.join(dir, 'deterioration', '2', 'change-approval.md'), 'approved by nobody\n');
    await refused(dir, 'versions.1.evidence.changeApprovals.0.sha256', '2/change-approval.md has sha256');
  });

  test('a manifest sha256 that does not match the record, or a record outside the folder, is refused', async () => {
    await refused(
      await copy((m) => {
        m.versions[0].evidence.changeApprovals[0].sha256 = 'a'.repeat(64);
      }),
      'versions.0.evidence.changeApprovals.0.sha256',
    );
    await refused(
      await copy((m) => {
        m.versions[0].evidence.changeApprovals[0].uri = '../news2/1/change-approval.md';
      }),
      'versions.0.evidence.changeApprovals.0.uri',
      'outside the model folder',
    );
    await refused(
      await copy((m) => {
        m.versions[0].evidence.changeApprovals[0].sha256 = 'not-a-hash';
      }),
      'versions.0.evidence.changeApprovals.0.sha256',
    );
    // a remote record is named with its hash; the gateway cannot fetch it to check
    const remote = await copy((m) => {
      m.versions[0].evidence.changeApprovals[0].uri = 'https://cab.example.org/changes/CHG-1234.pdf';
    });
    await loadModels(remote, SYNC_CEILING_MS);
  });

  test('lineage names real features, each once, every feature, with the codes the FHIR mapping reads', async () => {
    await refused(
      await copy((m) => {
        m.versions[0].evidence.lineage.push({ feature: 'lactate', sources: [{ system: 'lab' }] });
      }),
      'versions.0.evidence.lineage.7',
      '"lactate" is not a feature of this model',
    );
    await refused(
      await copy((m) => {
        m.versions[1].evidence.lineage = m.versions[1].evidence.lineage.filter(
          (l: { feature: string }) => l.feature !== 'pulse',
        );
      }),
      'versions.1.evidence.lineage',
      'no lineage for pulse',
    );
    await refused(
      await copy((m) => {
        const spo2 = m.versions[0].evidence.lineage.find((l: { feature: string }) => l.feature === 'spo2');
        spo2.sources[0].codes = ['http://loinc.org|59408-5', 'http://loinc.org|2708-6'];
      }),
      'versions.0.evidence.lineage.2.sources',
      'urn:iso:std:iso:11073:10101|150456 read but not in the lineage',
      'http://loinc.org|2708-6 in the lineage but not read',
    );
  });

  test('a Safe Harbor review lists all 18 identifiers; an Expert Determination names its determination', async () => {
    const letters = 'ABCDEFGHIJKLMNOPQR'.split('');
    await refused(
      await copy((m) => {
        m.versions[0].evidence.deidentification = {
          method: 'HIPAA Safe Harbor',
          reviewedBy: 'Privacy Office',
          reviewedAt: '2026-01-05T10:00:00Z',
          identifiersRemoved: letters.filter((l) => l !== 'C' && l !== 'R'),
        };
      }),
      'versions.0.evidence.deidentification.identifiersRemoved',
      'missing C, R',
    );
    await refused(
      await copy((m) => {
        m.versions[0].evidence.deidentification = {
          method: 'Expert Determination',
          reviewedBy: 'Privacy Office',
          reviewedAt: '2026-01-05T10:00:00Z',
        };
      }),
      'versions.0.evidence.deidentification.determination',
    );
    await loadModels(
      await copy((m) => {
        m.versions[0].evidence.deidentification = {
          method: 'HIPAA Safe Harbor',
          reviewedBy: 'Privacy Office',
          reviewedAt: '2026-01-05T10:00:00Z',
          identifiersRemoved: letters,
        };
      }),
      SYNC_CEILING_MS,
    );
  });

  test('`triage models validate` refuses a primary whose evidence is incomplete, naming what is missing', async () => {
    const dir = await copy((m) => {
      delete m.versions[0].evidence.lineage;
      delete m.versions[0].evidence.clinicalReviews;
    });
    const run = (folder: string) =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'models', 'validate', folder], {
        cwd: REPO_DIR,
      }).then(
        (r) => ({ code: 0, text: r.stdout + r.stderr }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, text: e.stdout + e.stderr }),
      );
    const bad = await run(path.join(dir, 'deterioration'));
    assert.equal(bad.code, 1, bad.text);
    assert.match(bad.text, /versions 1: release evidence lacks lineage, clinicalReviews/);
    const good = await run(path.join(MODELS_DIR, 'deterioration'));
    assert.equal(good.code, 0, good.text);
  });
});

describe('evidence at the version endpoint and at promotion', { timeout: HANG_GUARD_MS }, () => {
  const keys = makeKeys();
  const prefix = makePrefix('evidence');
  let dir: string;
  let gw: TestGateway;

  before(async () => {
    // version 2 again, once per piece of evidence left out, each a shadow (so it is loaded and could be promoted)
    dir = await tempModels({ deterioration: null });
    await editManifest(dir, 'deterioration', (m) => {
      const v2 = m.versions.find((v: { version: string }) => v.version === '2');
      for (const piece of PIECES) {
        const evidence = structuredClone(v2.evidence);
        delete evidence[piece];
        m.versions.push({ ...structuredClone(v2), version: `2-no-${piece}`, evidence });
      }
      m.routing.shadow = { versions: ['2', ...PIECES.map((p) => `2-no-${p}`)], sampleRate: 0 };
    });
    gw = await buildGateway({ prefix, keys, modelsDir: dir, only: ['deterioration'] });
  });

  after(async () => {
    await gw?.close();
    await deletePrefix(prefix);
    await removeDir(dir);
  });

  test('GET …/versions/{version} shows the evidence and what promotion would still need', async () => {
    const res = await gw.call('GET', '/v1/models/deterioration/versions/2', keys.client);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.role, 'shadow');
    const e = res.body.evidence;
    assert.equal(e.datasetSha256, datasetSha256('deterioration'));
    assert.equal(e.deidentification.method, 'No patient data');
    assert.deepEqual(e.lineage.find((l: { feature: string }) => l.feature === 'respirationRate').sources[0].codes, [
      'http://loinc.org|9279-1',
    ]);
    assert.equal(e.clinicalReviews[0].outcome, 'approved-with-conditions');
    assert.equal(e.changeApprovals[0].uri, '2/change-approval.md');
    assert.match(e.changeApprovals[0].sha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(res.body.promotable, { complete: true, missing: [] });
    const partial = await gw.call('GET', '/v1/models/deterioration/versions/2-no-lineage', keys.reviewer);
    assert.deepEqual(partial.body.promotable, { complete: false, missing: ['lineage'] });
    assert.equal((await gw.call('GET', '/v1/models/deterioration/versions/9', keys.client)).status, 404);
    assert.equal((await gw.call('GET', '/v1/models/nope/versions/1', keys.client)).status, 404);
  });

  test('a version lacking any piece of evidence is refused promotion, naming it; a complete one is promoted', async () => {
    for (const piece of PIECES) {
      const res = await gw.call('POST', '/v1/models/deterioration/routing/promote', keys.admin, {
        version: `2-no-${piece}`,
        reason: 'release review',
      });
      assert.equal(res.status, 409, `${piece}: ${res.text}`);
      assert.equal(res.body.code, 'evidence_required');
      assert.match(res.body.detail, new RegExp(`lacks ${piece}$`));
      assert.deepEqual(res.body.missing, [piece]);
    }
    const routing = await gw.call('GET', '/v1/models/deterioration/routing', keys.admin);
    assert.equal(routing.body.primary ?? routing.body.routing?.primary, '1', 'nothing was promoted');
    const ok = await gw.call('POST', '/v1/models/deterioration/routing/promote', keys.admin, {
      version: '2',
      reason: 'CAB-42 approved',
    });
    assert.equal(ok.status, 200, ok.text);
  });
});
