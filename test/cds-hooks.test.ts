import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { KeySpace } from '../src/platform/keyspace.ts';
import { highRiskVitals, lowRiskVitals, obs, qty } from './bedside-fhir.ts';
import { FakeEhr } from './cds-ehr.ts';
import { buildGateway, metricValue, REDIS_URL, type TestGateway, waitFor } from './support/index.ts';

const EXAMPLES = new URL('../../shared/data/cdshooks/', import.meta.url);
const example = (name: string) => JSON.parse(readFileSync(new URL(name, EXAMPLES), 'utf8'));

/** NEWS2 from the low-risk set with some readings changed: `{ rr: 25 }` is a respiration rate of 25. */
function vitals(id: string, change: { rr?: number; spo2?: number; hr?: number; temp?: number }) {
  const at: Record<string, [string, string, number | undefined]> = {
    rr: ['9279-1', '/min', change.rr],
    spo2: ['59408-5', '%', change.spo2],
    hr: ['8867-4', '/min', change.hr],
    temp: ['8310-5', 'Cel', change.temp],
  };
  return lowRiskVitals(id).map((r) => {
    const key = (r.id as string).slice(id.length + 1);
    const c = at[key];
    return c && c[2] !== undefined ? obs(r.id as string, `Patient/${id}`, 60, c[0], qty(c[2], c[1])) : r;
  });
}

const searchset = (resources: Record<string, unknown>[]) => ({
  resourceType: 'Bundle',
  type: 'searchset',
  entry: resources.map((resource) => ({ resource })),
});

describe('CDS Hooks 2.0', () => {
  let t: TestGateway;
  let ehr: FakeEhr;
  let specEhr: FakeEhr;
  let base = '';

  before(async () => {
    ehr = await FakeEhr.start();
    specEhr = await FakeEhr.start();
    // the JWKS of the specification's example, served as its issuer would
    const jwt = readFileSync(new URL('jwt-example-header-payload-jwks.txt', EXAMPLES), 'utf8');
    const jwks = /\/\/ JSON Web Key Set \(public key\)[^\n]*\n(?:\/\/[^\n]*\n)?(\{[\s\S]*?\n\})/.exec(jwt)?.[1];
    specEhr.keys = JSON.parse(jwks as string).keys;
    t = await buildGateway({
      listen: true,
      cdsClients: {
        clients: [
          {
            id: 'ehr',
            issuer: ehr.issuer,
            jwksUri: `${ehr.url}/jwks`,
            algorithms: ['ES384', 'RS384'],
            fhirServers: [`${ehr.url}/fhir`],
            clockToleranceSeconds: 5,
          },
          {
            id: 'keys-out-of-reach',
            issuer: 'https://down.example.org/',
            jwksUri: 'http://127.0.0.1:1/jwks',
            algorithms: ['ES384'],
            fhirServers: [],
            clockToleranceSeconds: 5,
          },
          {
            id: 'spec-example',
            issuer: 'https://fhir-ehr.example.com/',
            jwksUri: `${specEhr.url}/jwks`,
            algorithms: ['ES384'],
            fhirServers: [],
            clockToleranceSeconds: 5,
          },
        ],
      },
    });
    base = t.url;
  });
  after(async () => {
    await t.close();
    await ehr.close();
    await specEhr.close();
  });

  /** The specification's patient-view request, for this patient, this EHR's server and the prefetch given. */
  function hookRequest(patientId: string, prefetch?: Record<string, unknown>, hook = 'patient-view') {
    const { prefetch: _, ...req } = example('service-request-patient-view.json');
    return {
      ...req,
      hook,
      fhirServer: `${ehr.url}/fhir`,
      context: { ...req.context, patientId },
      ...(prefetch ? { prefetch } : {}),
    };
  }

  /** Prefetch as the EHR fills it from the discovery templates. */
  function prefetchOf(patient: Record<string, unknown>[]) {
    const patientResource = patient.find((r) => r.resourceType === 'Patient');
    return {
      patient: patientResource,
      observations: searchset(patient.filter((r) => r.resourceType === 'Observation')),
    };
  }

  async function call(id: string, body: unknown, token?: string | null, path = '') {
    const url = `${base}/cds-services/${id}${path}`;
    const auth = token === null ? undefined : (token ?? (await ehr.sign(`${base}/cds-services/${id}`)));
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${auth}` } : {}) },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
  }

  /** Our prefetch keys are one per feature: spread the patient's Observations over them as the EHR would. */
  function prefetchFor(id: string, patient: Record<string, unknown>[]) {
    const { patient: p, observations } = prefetchOf(patient);
    const keys = Object.keys(discovered(id).prefetch).filter((k) => k.startsWith('obs-'));
    return { patient: p, ...Object.fromEntries(keys.map((k, i) => [k, i === 0 ? observations : searchset([])])) };
  }

  let services: Array<{ id: string; hook: string; prefetch: Record<string, string> }> = [];
  const discovered = (id: string) => services.find((s) => s.id === id) as (typeof services)[number];

  it('lists a service per hook of each model that declares hooks, with prefetch templates', async () => {
    const res = await fetch(`${base}/cds-services`);
    assert.equal(res.status, 200);
    services = (await res.json()).services;
    assert.deepEqual(services.map((s) => s.id).sort(), [
      'deterioration-patient-view',
      'news2-order-sign',
      'news2-patient-view',
    ]);
    const shape = Object.keys(example('discovery-response.json').services[0]).sort();
    for (const s of services) assert.deepEqual(Object.keys(s).sort(), shape);
    const news2 = discovered('news2-patient-view');
    assert.equal(news2.prefetch.patient, 'Patient/{{context.patientId}}');
    assert.match(
      news2.prefetch['obs-consciousness'] as string,
      /patient=\{\{context\.patientId\}\}&combo-code=http:\/\/loinc\.org\|67775-7/,
    );
    assert.match(discovered('deterioration-patient-view').prefetch['obs-temperature'] as string, /8310-5/);
  });

  it('answers a card per NEWS2 risk band, its indicator the manifest’s for the band', async () => {
    const cases: Array<[string, Record<string, unknown>[], number, string, string]> = [
      ['band-low', lowRiskVitals('band-low'), 0, 'low', 'info'],
      ['band-lowmed', vitals('band-lowmed', { rr: 25 }), 3, 'low-medium', 'warning'], // one red score
      ['band-med', vitals('band-med', { rr: 22, spo2: 95, hr: 95, temp: 38.5 }), 5, 'medium', 'warning'], // 2+1+1+1
      ['band-high', highRiskVitals('band-high'), 10, 'high', 'critical'],
    ];
    for (const [id, record, score, band, indicator] of cases) {
      const r = await call('news2-patient-view', hookRequest(id, prefetchFor('news2-patient-view', record)));
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const [card] = r.body.cards;
      assert.equal(card.indicator, indicator, `${id}: ${card.summary}`);
      assert.ok(card.summary.length < 140);
      assert.match(card.summary, new RegExp(`: ${score} \\(${band} risk\\)`));
      assert.match(card.detail, /Subscores: respirationRate \d, spo2 \d, airOrOxygen \d/);
      assert.match(card.source.label, /model news2 v1 · Deteriorating Patient Programme/);
      assert.equal(card.source.topic.code, 'news2');
      assert.ok(card.overrideReasons.length > 0);
    }
    assert.equal(ehr.requests.length, 0, 'everything was prefetched: the FHIR server was not asked');
  });

  it('logs a scored card’s prediction for outcomes under the request id it answered (X-Request-Id)', async () => {
    const record = highRiskVitals('cds-outcome');
    const r = await call('news2-patient-view', hookRequest('cds-outcome', prefetchFor('news2-patient-view', record)));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const requestId = r.headers.get('x-request-id');
    assert.ok(requestId);
    const res = await fetch(`${base}/v1/outcomes`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${t.keys.client}` },
      body: JSON.stringify({ requestId, outcome: true, observedAt: new Date().toISOString() }),
    });
    const outcome = await res.json();
    assert.equal(res.status, 201, JSON.stringify(outcome));
    assert.equal(outcome.model, 'news2');
    assert.equal(outcome.score, 10);
  });

  it('fetches what was not prefetched from fhirServer with fhirAuthorization', async () => {
    ehr.records.set('fetch-me', highRiskVitals('fetch-me'));
    ehr.requests.length = 0;
    const r = await call('news2-order-sign', hookRequest('fetch-me', undefined, 'order-sign'));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.cards[0].indicator, 'critical');
    assert.ok(ehr.requests.some((q) => q.url === '/fhir/Patient/fetch-me'));
    assert.ok(ehr.requests.some((q) => q.url.startsWith('/fhir/Observation?patient=fetch-me&combo-code=')));
    assert.ok(ehr.requests.every((q) => q.authorization === 'Bearer some-opaque-fhir-access-token'));
    // the Patient prefetched, the Observations sent as null (the EHR could not get them): only those are fetched
    ehr.requests.length = 0;
    const obsKeys = Object.keys(discovered('news2-patient-view').prefetch).filter((k) => k.startsWith('obs-'));
    const partial = {
      patient: highRiskVitals('fetch-me')[0],
      ...Object.fromEntries(obsKeys.map((k) => [k, null])),
    };
    const p = await call('news2-patient-view', hookRequest('fetch-me', partial));
    assert.equal(p.body.cards[0].indicator, 'critical');
    assert.equal(ehr.requests.filter((q) => q.url.startsWith('/fhir/Patient')).length, 0);
    assert.equal(ehr.requests.filter((q) => q.url.startsWith('/fhir/Observation')).length, obsKeys.length);
  });

  it('answers "no score: follow the standard protocol" naming the missing data', async () => {
    const gap = highRiskVitals('gap').filter((r) => r.id !== 'gap-o2');
    const r = await call('news2-patient-view', hookRequest('gap', prefetchFor('news2-patient-view', gap)));
    assert.equal(r.status, 200);
    const [card] = r.body.cards;
    assert.equal(card.summary, 'NEWS2 early warning score: no score, follow the standard protocol');
    assert.equal(card.indicator, 'warning');
    assert.match(card.detail, /onOxygen \(looked for .*3151-8/);
    assert.match(card.source.label, /news2 v1/);
    // a reading the model does not take (a heart rate of 400) is named, not scored around
    const wild = vitals('wild', { hr: 400 });
    const w = await call('news2-patient-view', hookRequest('wild', prefetchFor('news2-patient-view', wild)));
    assert.match(w.body.cards[0].summary, /no score, follow the standard protocol$/);
    assert.match(w.body.cards[0].detail, /readings the model does not take: pulse: /);
  });

  it('says which fetches failed, and refuses records of another patient', async () => {
    ehr.records.set('denied', highRiskVitals('denied'));
    ehr.failing = { match: /^\/fhir\/Observation/, status: 401 };
    try {
      const r = await call('news2-patient-view', hookRequest('denied'));
      assert.match(r.body.cards[0].summary, /no score, follow the standard protocol$/);
      assert.match(r.body.cards[0].detail, /the FHIR server answered 401/);
    } finally {
      ehr.failing = undefined;
    }
    const elsewhere = { ...hookRequest('denied'), fhirServer: 'http://127.0.0.1:1/fhir' };
    const unregistered = await call('news2-patient-view', elsewhere);
    assert.match(unregistered.body.cards[0].detail, /not registered for this EHR/);
    const mixed = await call(
      'news2-patient-view',
      hookRequest('me', prefetchFor('news2-patient-view', highRiskVitals('someone-else'))),
    );
    assert.match(mixed.body.cards[0].detail, /another patient/);
  });

  it('refuses calls without a valid EHR JWT', async () => {
    const body = hookRequest('jwt', prefetchFor('news2-patient-view', lowRiskVitals('jwt')));
    const aud = `${base}/cds-services/news2-patient-view`;
    const now = Math.floor(Date.now() / 1000);
    const refused = async (token: string | null, why: RegExp) => {
      const r = await call('news2-patient-view', body, token);
      assert.equal(r.status, 401, JSON.stringify(r.body));
      assert.equal(r.body.code, 'unauthenticated');
      assert.match(r.headers.get('www-authenticate') ?? '', /Bearer/);
      assert.match(r.body.detail, why);
    };
    await refused(null, /Authorization: Bearer/);
    await refused(await ehr.sign(`${base}/cds-services/deterioration-patient-view`), /aud/);
    await refused(await ehr.sign(aud, { exp: now - 60, iat: now - 360 }), /expired/);
    await refused(await ehr.sign(aud, { iat: now - 3600, exp: now + 60 }), /iat/);
    await refused(await ehr.sign(aud, { iss: 'https://other-ehr.example.org/' }), /registered CDS client/);
    await refused(await ehr.sign(aud, {}, { kid: 'unknown-key' }), /key its issuer does not publish/);
    await refused(await ehr.sign(aud, { jti: undefined }), /jti/);
    const once = await ehr.sign(aud);
    assert.equal((await call('news2-patient-view', body, once)).status, 200);
    await refused(once, /already used/);
    // an EHR whose keys cannot be fetched: not the caller's fault, a 503 to retry
    const down = await call('news2-patient-view', body, await ehr.sign(aud, { iss: 'https://down.example.org/' }));
    assert.equal(down.status, 503, JSON.stringify(down.body));
    assert.equal(down.body.code, 'identity_provider_unavailable');
    // a request for another hook than the service's
    const wrongHook = await call('news2-patient-view', { ...body, hook: 'order-sign' });
    assert.equal(wrongHook.status, 400);
    // the specification's example token: its signature checks against its JWKS, but it is long expired
    const spec = /Authorization: Bearer (\S+)/.exec(
      readFileSync(new URL('jwt-example-header-payload-jwks.txt', EXAMPLES), 'utf8'),
    )?.[1] as string;
    const r = await call('news2-patient-view', body, spec);
    assert.equal(r.status, 401);
    assert.doesNotMatch(r.body.detail, /signature|does not publish|malformed/);
  });

  it('records feedback per model version, once per card, and counts it', async () => {
    const give = async (id: string) => {
      const r = await call(id, hookRequest('fb', prefetchFor(id, highRiskVitals('fb'))));
      return r.body.cards[0];
    };
    const accepted = await give('news2-patient-view');
    const overridden = await give('news2-patient-view');
    const acceptedBody = example('feedback-accepted.json');
    acceptedBody.feedback[0].card = accepted.uuid;
    const overriddenBody = example('feedback-overridden-with-reason.json');
    overriddenBody.feedback[0].card = overridden.uuid;
    overriddenBody.feedback[0].overrideReason.reason = {
      system: overridden.overrideReasons[0].system,
      code: overridden.overrideReasons[0].code,
    };
    const fbPath = '/feedback';
    const a = await call('news2-patient-view', acceptedBody, undefined, fbPath);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.deepEqual(a.body, { recorded: 1, repeated: 0 });
    const o = await call('news2-patient-view', overriddenBody, undefined, fbPath);
    assert.deepEqual(o.body, { recorded: 1, repeated: 0 });
    // the EHR retries: not a second clinician
    assert.deepEqual((await call('news2-patient-view', acceptedBody, undefined, fbPath)).body, {
      recorded: 0,
      repeated: 1,
    });
    // a card of another service, and a card that does not exist
    const elsewhere = await call('news2-order-sign', acceptedBody, undefined, fbPath);
    assert.equal(elsewhere.status, 404);
    const unknown = structuredClone(acceptedBody);
    unknown.feedback[0].card = '00000000-0000-4000-8000-000000000000';
    assert.equal((await call('news2-patient-view', unknown, undefined, fbPath)).status, 404);
    // an unsigned feedback is refused like a call
    assert.equal((await call('news2-patient-view', acceptedBody, null, fbPath)).status, 401);

    const counts = await t.deps.cds?.feedback.counts('news2');
    assert.equal(counts?.['1']?.accepted, 1);
    assert.equal(counts?.['1']?.overridden, 1);
    assert.deepEqual(counts?.['1']?.overrideReasons, { [overridden.overrideReasons[0].code]: 1 });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.equal(
      metricValue(metrics, 'triage_cds_feedback_total', { model: 'news2', version: '1', outcome: 'accepted' }),
      1,
    );
    assert.equal(
      metricValue(metrics, 'triage_cds_feedback_total', { model: 'news2', version: '1', outcome: 'overridden' }),
      1,
    );
    assert.doesNotMatch(metrics, /fb|A comment entered/);

    // the override joins the version's override rate in the monitoring report and its gauges (every window)
    await t.gateway.services.monitoring.recorder?.flush();
    const report = await fetch(`${base}/v1/models/news2/monitoring`, {
      headers: { authorization: `Bearer ${t.keys.client}` },
    });
    assert.equal(report.status, 200);
    const v1 = (await report.json()).versions.find((v: { version: string }) => v.version === '1');
    for (const window of ['hour', 'day', 'week']) {
      assert.deepEqual(v1.windows[window].overrides, {
        reviews: 0,
        approved: 0,
        amended: 0,
        rejected: 0,
        cdsFeedback: { accepted: 1, overridden: 1, reasons: { [overridden.overrideReasons[0].code]: 1 } },
        judgements: 2,
        rate: 0.5,
      });
    }
    // the gauges read the windows at most once a second: the scrape above may still be the one served
    const labels = { model: 'news2', version: '1', window: 'hour' };
    let gauges = '';
    await waitFor(async () => {
      gauges = await (await fetch(`${base}/metrics`)).text();
      return (
        metricValue(gauges, 'triage_monitoring_judgements', labels) === 2 &&
        metricValue(gauges, 'triage_monitoring_cds_overridden', labels) === 1 &&
        metricValue(gauges, 'triage_monitoring_override_rate', labels) === 0.5
      );
    }, 'the monitoring gauges to show the feedback');
    assert.equal(metricValue(gauges, 'triage_monitoring_override_rate', labels), 0.5, 'overridden cards count');
  });

  it("keeps feedback in the model's shard, and honours feedback recorded under the global tag before shards", async () => {
    const r = await call(
      'news2-patient-view',
      hookRequest('fb2', prefetchFor('news2-patient-view', highRiskVitals('fb2'))),
    );
    const card = r.body.cards[0];
    const redis = new Redis(REDIS_URL);
    try {
      // an answer a release before model shards recorded for this card, and the counts it kept
      await redis.set(`${t.prefix}:cds:feedback:${card.uuid}`, '{}', 'EX', 60);
      await redis.hset(`${t.prefix}:cds:feedback-counts:news2`, '1|accepted', 5);
      const body = example('feedback-accepted.json');
      body.feedback[0].card = card.uuid;
      assert.deepEqual((await call('news2-patient-view', body, undefined, '/feedback')).body, {
        recorded: 0,
        repeated: 1,
      });
      assert.equal((await t.deps.cds?.feedback.counts('news2'))?.['1']?.accepted, 1 + 5);
      // what this release records is in the shard: the card's answer and the counts
      const shard = new KeySpace(t.prefix).shard('news2');
      assert.equal(await redis.hget(`${shard}:cds:feedback-counts`, '1|accepted'), '1');
      assert.deepEqual(await redis.keys(`${t.prefix}:cds:feedback:*`), [`${t.prefix}:cds:feedback:${card.uuid}`]);
    } finally {
      redis.disconnect();
    }
  });
  it('a model in silent deployment is scored and recorded but answers no card at all', async () => {
    const routing = '/v1/models/news2/routing';
    const set = await t.call('PUT', `${routing}/silent`, t.keys.admin, { version: '1', reason: 'CR-14: silent trial' });
    assert.equal(set.status, 200, set.text);
    try {
      const rows = async () => {
        await t.gateway.services.monitoring.recorder?.flush();
        const report = await t.call('GET', '/v1/models/news2/monitoring', t.keys.client);
        return report.body.versions.find((v: { version: string }) => v.version === '1').windows.hour.rows as number;
      };
      const before = await rows();
      const r = await call(
        'news2-patient-view',
        hookRequest('silent-1', prefetchFor('news2-patient-view', highRiskVitals('silent-1'))),
      );
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body, { cards: [] });
      assert.equal(await rows(), before + 1, 'scored and monitored all the same');
    } finally {
      const back = await t.call('POST', `${routing}/promote`, t.keys.admin, { version: '1', reason: 'CR-15: shown' });
      assert.equal(back.status, 200, back.text);
    }
  });
});
