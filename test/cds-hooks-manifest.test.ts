import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { prefetchTemplates } from '../src/cds-hooks/discovery.ts';
import { manifestSchema } from '../src/registry/schema.ts';
import { MODELS_DIR } from './support/index.ts';

const read = (name: string) => YAML.parse(readFileSync(`${MODELS_DIR}${name}/model.yaml`, 'utf8'));
const issues = (m: unknown) =>
  manifestSchema.safeParse(m).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`) ?? [];

describe('the manifest hooks section', () => {
  it('accepts the bundled declarations', () => {
    assert.deepEqual(issues(read('news2')), []);
    assert.deepEqual(issues(read('deterioration')), []);
  });

  it('refuses a band without an indicator, a hook twice, and hooks on a document model', () => {
    const news2 = read('news2');
    delete news2.hooks.indicator.band.high;
    assert.ok(issues(news2).some((i) => /hooks.indicator.band: band "high" has no indicator/.test(i)));
    const twice = read('news2');
    twice.hooks.services.push({ hook: 'patient-view' });
    assert.ok(issues(twice).some((i) => /declared twice/.test(i)));
    const notes = read('note-triage');
    notes.hooks = {
      services: [{ hook: 'patient-view' }],
      lookbackHours: 1,
      indicator: { above: 'info', below: 'info' },
    };
    assert.ok(issues(notes).some((i) => /only a features model with a score output has hooks/.test(i)));
  });

  it('asks for every Observation code a feature is read from, and the Patient', () => {
    const t = prefetchTemplates(manifestSchema.parse(read('news2')));
    assert.equal(t.patient, 'Patient/{{context.patientId}}');
    assert.match(t['obs-onOxygen'] as string, /combo-code=http:\/\/loinc\.org\|3151-8,http:\/\/loinc\.org\|3150-0&/);
    assert.equal(t['obs-spo2Scale'], undefined, 'an assumed feature is not fetched');
  });
});

describe('the CDS client and public URL settings', () => {
  it('parses TRIAGE_CDS_CLIENTS and refuses key or record URLs in clear to another host', async () => {
    const { parseCdsClients } = await import('../src/cds-hooks/jwt.ts');
    const ok = parseCdsClients(
      'serviceBaseUrl: https://triage.example.org\nclients:\n  - id: ehr\n    issuer: https://ehr.example.org/\n    jwksUri: https://ehr.example.org/jwks\n    fhirServers: [https://ehr.example.org/r4]\n',
    );
    assert.deepEqual(ok.clients[0]?.algorithms, ['ES384', 'RS384']);
    assert.throws(
      () => parseCdsClients('clients:\n  - id: ehr\n    issuer: x\n    jwksUri: http://ehr.example.org/jwks\n'),
      /TRIAGE_CDS_CLIENTS: clients.0.jwksUri: must be an https URL/,
    );
  });

  it('reads TRIAGE_PUBLIC_URL without its trailing slash', async () => {
    const { loadConfig } = await import('../src/platform/config.ts');
    assert.equal(
      loadConfig({ TRIAGE_PUBLIC_URL: 'https://triage.example.org/' }).publicUrl,
      'https://triage.example.org',
    );
    assert.throws(() => loadConfig({ TRIAGE_PUBLIC_URL: 'ftp://x' }), /TRIAGE_PUBLIC_URL/);
  });
});
