/**
 * The desk's pictures, drawn as SVG on the server (Vega-Lite compiled by vega), each with its numbers in words (alt
 * text) and in a table, for admins only: the shadow report (agreement, disagreements, latency, and from the kept
 * sample of paired scores a scatter and a Bland-Altman plot with its mean difference and limits), and per version the
 * monitoring report (scores against the reference, drift per feature with the alert level, overrides hour by hour,
 * outcomes and calibration). The hourly series rolls into a new bucket each hour and its buckets expire.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { renderSvg } from '../src/desk/charts.ts';
import { monitoringPanels, type VersionFigures } from '../src/desk/monitoring-charts.ts';
import { PanelCache } from '../src/desk/pictures.ts';
import { blandAltman, shadowPanels } from '../src/desk/shadow-charts.ts';
import { MonitoringRecorder } from '../src/monitoring/recorder.ts';
import { hourlySeries } from '../src/monitoring/series.ts';
import { bucketKey, HOUR } from '../src/monitoring/windows.ts';
import { outcomeMetrics } from '../src/outcomes/metrics.ts';
import { KeySpace } from '../src/platform/keyspace.ts';
import { SCORE_PAIR_SAMPLES } from '../src/serving/shadow.ts';
import { FormClient } from './desk-support.ts';
import {
  buildGateway,
  deletePrefix,
  makeKeys,
  makePrefix,
  REDIS_URL,
  SICK_VITALS,
  type TestGateway,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('desk-charts');
let gw: TestGateway;
let redis: Redis;

before(async () => {
  // deterioration carries the data; the others are there for their output kinds (a points score, classes, matches)
  gw = await buildGateway({
    prefix,
    keys,
    only: ['deterioration', 'news2', 'note-triage', 'similar-cases', 'readmission'],
    workers: [],
    listen: true,
  });
  redis = new Redis(REDIS_URL);
});
after(async () => {
  redis?.disconnect();
  await gw?.close();
  await deletePrefix(prefix);
});

const pair = (p: number, s: number, shadowVersion = '2') => ({
  model: 'deterioration',
  primaryVersion: '1',
  shadowVersion,
  primary: [{ score: p, decision: p >= 0.3 ? 'positive' : 'negative' }],
  shadow: [{ score: s, decision: s >= 0.3 ? 'positive' : 'negative' }],
  primaryMs: 2,
  shadowMs: 3,
});

async function admin(): Promise<FormClient> {
  const client = new FormClient(gw.url);
  assert.equal((await client.request('POST', '/desk/sign-in', { credential: keys.admin })).status, 303);
  return client;
}

/** The marks of one kind an SVG draws (vega labels each: `aria-roledescription="point"`, `"bar"`, …). */
const marks = (svg: string, kind: string) => svg.split(`aria-roledescription="${kind}"`).length - 1;

test('the shadow report as pictures, for admins: agreement, disagreements and latency, as SVG with their numbers', async () => {
  const shadow = gw.gateway.deps.shadow;
  for (let i = 0; i < 3; i++) shadow.record(pair(0.1, 0.12));
  shadow.record(pair(0.1, 0.5));
  await shadow.flush();

  const anonymous = new FormClient(gw.url);
  assert.equal((await anonymous.request('GET', '/desk/models/deterioration')).status, 303, 'no session, no pictures');
  const client = new FormClient(gw.url);
  assert.equal((await client.request('POST', '/desk/sign-in', { credential: keys.client })).status, 403);
  const reviewer = new FormClient(gw.url);
  assert.equal((await reviewer.request('POST', '/desk/sign-in', { credential: keys.reviewer })).status, 303);
  for (const path of [
    '/desk/models/deterioration',
    '/desk/models/deterioration/charts/agreement.svg',
    '/desk/models/deterioration/monitoring',
    '/desk/models/deterioration/monitoring/charts/scores-1.svg',
  ]) {
    assert.equal((await reviewer.request('GET', path)).status, 403, `a reviewer: ${path}`);
  }
  const queue = await reviewer.request('GET', '/desk/reviews');
  assert.doesNotMatch(queue.text, /\/desk\/models\//, 'no picture links for a reviewer');

  const desk = await admin();
  assert.match((await desk.request('GET', '/desk/reviews')).text, /href="\/desk\/models\/deterioration\/monitoring"/);
  const page = await desk.request('GET', '/desk/models/deterioration');
  assert.equal(page.status, 200, page.text);
  assert.match(page.text, /alt="v2: 75.0 % of 4 pairs agree"/);
  assert.match(page.text, /v2 shadow positive, primary negative: 1/);
  for (const id of ['agreement', 'disagreements', 'latency']) {
    const svg = await desk.request('GET', `/desk/models/deterioration/charts/${id}.svg`);
    assert.equal(svg.status, 200, svg.text);
    assert.equal(svg.headers.get('content-type'), 'image/svg+xml');
    assert.match(svg.text, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg.text, /<path|<rect/);
  }
  assert.match((await desk.request('GET', '/desk/models/deterioration/charts/agreement.svg')).text, /shadow version/);
  assert.equal((await desk.request('GET', '/desk/models/deterioration/charts/nope.svg')).status, 404);
  assert.equal((await desk.request('GET', '/desk/models/no-such-model')).status, 404);
});

test('mirrors shed for bedside traffic are said beside the agreement they are missing from', async () => {
  const shadow = gw.gateway.deps.shadow;
  shadow.record(pair(0.1, 0.12, '4'));
  shadow.record(pair(0.2, 0.21, '4'));
  shadow.shed('deterioration', '4', 'pressure');
  shadow.shed('deterioration', '4', 'pressure');
  shadow.shed('deterioration', '4', 'saturated');
  await shadow.flush();
  const page = await (await admin()).request('GET', '/desk/models/deterioration');
  assert.equal(page.status, 200, page.text);
  assert.match(
    page.text,
    /alt="[^"]*v4: 100.0 % of 2 pairs agree \(3 mirrors shed for bedside traffic: 2 pressure, 1 saturated\)/,
  );
  assert.match(page.text, /v2: 75.0 % of 4 pairs agree;/, 'a version with nothing shed says nothing of it');
});

test('paired scores: a scatter with the identity line and a Bland-Altman plot with its mean difference and limits', async () => {
  const shadow = gw.gateway.deps.shadow;
  // differences .02 .05 −.05 .10: mean .03, SD √(.0118/3) = .062716, limits .03 ∓ 1.96 SD = −.092924 and .152924
  for (const [p, s] of [
    [0.1, 0.12],
    [0.2, 0.25],
    [0.5, 0.45],
    [0.8, 0.9],
  ] as const) {
    shadow.record(pair(p, s, '3'));
  }
  await shadow.flush();
  const sample = (await shadow.scorePairs('deterioration')).find((s) => s.version === '3');
  assert.equal(sample?.pairs.length, 4);
  const ba = blandAltman(sample?.pairs ?? []);
  assert.ok(ba && ba.lower !== null && ba.upper !== null);
  assert.ok(Math.abs(ba.meanDifference - 0.03) < 1e-9);
  assert.ok(Math.abs(ba.lower + 0.092924) < 1e-6 && Math.abs(ba.upper - 0.152924) < 1e-6, JSON.stringify(ba));

  const desk = await admin();
  const page = await desk.request('GET', '/desk/models/deterioration');
  assert.match(
    page.text,
    /alt="4 pairs: mean difference \(shadow − primary\) 0.03; 95 % limits of agreement -0.0929 to 0.1529"/,
  );
  const scatter = (await desk.request('GET', '/desk/models/deterioration/charts/scatter-3.svg')).text;
  assert.equal(marks(scatter, 'point'), 4, 'one point a pair');
  assert.equal(marks(scatter, 'line mark'), 1, 'the identity line');
  assert.match(scatter, /aria-label="primary score: 0.8; shadow v3 score: 0.9"/);
  const bland = (await desk.request('GET', '/desk/models/deterioration/charts/bland-altman-3.svg')).text;
  assert.equal(marks(bland, 'point'), 4);
  assert.equal(marks(bland, 'rule mark'), 3, 'the mean difference and the two limits');
  assert.match(bland, />mean difference 0.030</);
  assert.match(bland, />lower limit \(−1.96 SD\) −0.093</);
  assert.match(bland, />upper limit \(\+1.96 SD\) 0.153</);
  assert.match(bland, /<desc id="desc">4 pairs: mean difference/, 'the summary is the SVG document’s description too');
  assert.match(bland, /^<svg[^>]* role="img" aria-labelledby="title desc"><title id="title">v3 against the primary/);
});

test('the sample stays bounded: a flush keeps a uniform sample of its pairs, the list keeps the latest, and expires', async () => {
  const shadow = gw.gateway.deps.shadow;
  for (let i = 0; i < 2.5 * SCORE_PAIR_SAMPLES; i++) shadow.record(pair(i / 2500, i / 2500 + 0.01, '4'));
  await shadow.flush();
  for (let i = 0; i < 10; i++) shadow.record(pair(0.5, 0.5, '4'));
  await shadow.flush();
  const key = `${new KeySpace(prefix).shard('deterioration')}:shadow:4:scores`;
  assert.equal(await redis.llen(key), SCORE_PAIR_SAMPLES);
  const ttl = await redis.ttl(key);
  assert.ok(ttl > 7 * 86400 && ttl <= 8 * 86400, `ttl ${ttl}`);
  const kept = await redis.lrange(key, 0, -1);
  assert.deepEqual(kept.slice(0, 10), new Array(10).fill('0.5,0.5'), 'the newest first');
  for (const v of kept) assert.match(v, /^\d+(\.\d+)?,\d+(\.\d+)?$/, 'two numbers a pair, nothing else');
  // the first interval's 2500 pairs were sampled across the interval, not just its first thousand
  const late = kept.slice(10).filter((v) => Number(v.split(',')[0]) >= 0.4).length;
  assert.ok(late > 300, `pairs from the interval's later part kept: ${late}`);
});

test('monitoring as pictures per version: scores against the reference, drift with its alert level, overrides, outcomes', async () => {
  const requestIds: string[] = [];
  for (let i = 0; i < 12; i++) {
    const requestId = randomUUID();
    const vitals = { ...SICK_VITALS, pulse: 60 + i * 7, respirationRate: 12 + i };
    const res = await gw.predict('deterioration', keys.client, [vitals], { 'x-request-id': requestId });
    assert.equal(res.status, 200, res.text);
    requestIds.push(requestId);
  }
  for (const [i, requestId] of requestIds.entries()) {
    const res = await gw.call('POST', '/v1/outcomes', keys.client, {
      requestId,
      outcome: i % 2 === 0,
      observedAt: new Date(Date.now() + 1000).toISOString(),
    });
    assert.equal(res.status, 201, res.text);
  }
  for (const d of ['approve', 'approve', 'amend', 'reject'] as const) {
    gw.gateway.deps.monitoring.recordDecision('deterioration', '1', d);
  }
  await gw.gateway.deps.monitoring.recorder?.flush();

  const desk = await admin();
  const page = await desk.request('GET', '/desk/models/deterioration/monitoring');
  assert.equal(page.status, 200, page.text);
  for (const id of ['scores-1', 'drift-1', 'overrides-1', 'outcomes-1', 'calibration-1', 'scores-2']) {
    assert.match(page.text, new RegExp(`id="chart-${id}"`), id);
  }
  assert.match(page.text, /alt="v1: 12 scores in the last day, [^"]* where the reference has /);
  // the shadow is not counted by the taps (they see who answers): its scores are its kept sample's
  assert.match(page.text, /alt="v2: \d+ scores in the latest \d+ mirrored pairs, [^"]* at or above the threshold 0.3/);
  assert.match(
    page.text,
    /alt="v1: 2 of 4 clinician judgements \([^)]*\) amended, rejected or overridden \(50.0 %\) over 1 hour with judgements/,
  );
  assert.match(page.text, /alt="v1, 12 predictions with an observed outcome: sensitivity /);
  const svg = async (id: string) => {
    const res = await desk.request('GET', `/desk/models/deterioration/monitoring/charts/${id}.svg`);
    assert.equal(res.status, 200, `${id}: ${res.text}`);
    return res.text;
  };
  const scores = await svg('scores-1');
  assert.equal(marks(scores, 'bar'), 10, 'the live histogram: ten bins');
  assert.equal(marks(scores, 'line mark'), 1, 'the reference distribution');
  assert.equal(marks(scores, 'rule mark'), 1, 'the threshold');
  const drift = await svg('drift-1');
  assert.equal(marks(drift, 'bar'), 7, 'one bar a feature');
  assert.match(drift, /aria-label="at: 0.25"/, 'the alert level');
  assert.match(drift, /aria-label="at: 0.1"/, 'the moderate level');
  const overrides = await svg('overrides-1');
  assert.equal(marks(overrides, 'point'), 1, 'one hour with reviews');
  assert.match(overrides, /overridden: 50(\.0+)?%/);
  assert.match(await svg('outcomes-1'), /sensitivity/);
  assert.ok(marks(await svg('calibration-1'), 'point') >= 1, 'calibration bins');
  assert.equal((await desk.request('GET', '/desk/models/deterioration/monitoring?window=week')).status, 200);
  assert.equal((await desk.request('GET', '/desk/models/deterioration/monitoring?window=year')).status, 400);
  assert.equal((await desk.request('GET', '/desk/models/deterioration/monitoring/charts/drift-9.svg')).status, 404);
});

test('drift levels and empty versions: a major shift is marked, a version with nothing yet draws what it has', async () => {
  const window = (psi: Record<string, number | null>) => ({
    from: '',
    to: '',
    calls: 0,
    rows: 0,
    byTier: {},
    latencyMs: null,
    output: { scored: 0, aboveThresholdShare: null, histogram: [{ from: 0, to: 1, count: 0 }] },
    missingOrAssumed: { knownRows: 0, assumedRows: 0, share: null },
    drift: {
      features: Object.fromEntries(Object.entries(psi).map(([k, v]) => [k, { psi: v, rows: 1 }])),
      maxPsi: 0.4,
    },
    overrides: {
      reviews: 0,
      approved: 0,
      amended: 0,
      rejected: 0,
      cdsFeedback: { accepted: 0, overridden: 0, reasons: {} },
      judgements: 0,
      rate: null,
    },
  });
  const w = window({ pulse: 0.4, spo2: 0.15, age: 0.01, temperature: null });
  const figures: VersionFigures = {
    version: '7',
    role: 'primary',
    windowName: 'hour',
    window: w,
    scores: { source: 'the last hour', ...w.output },
    referenceScores: null,
    series: [],
    outcomes: outcomeMetrics([], { probability: true }),
  };
  const panels = monitoringPanels(0.3, [figures]);
  assert.deepEqual(
    panels.map((p) => p.id),
    ['scores-7', 'drift-7', 'overrides-7'],
    'no outcome pictures before the first outcome',
  );
  assert.deepEqual(
    panels[1]?.rows.map((r) => [r.feature, r.level]),
    [
      ['pulse', 'major shift'],
      ['spo2', 'moderate'],
      ['age', 'stable'],
      ['temperature', 'no rows'],
    ],
  );
  assert.match(panels[1]?.summary ?? '', /over the alert level 0.25: pulse/);
  for (const p of panels) assert.match(await renderSvg(p.spec), /^<svg/);
  assert.deepEqual(shadowPanels({ model: 'm', threshold: 0.5, shadows: [] }), []);
});

test('the hourly series: each hour rolls into a bucket of its own (review decisions and card feedback), a week long, and the buckets expire', async () => {
  // a model of its own in this file's key space: `series-m`
  const keySpace = new KeySpace(prefix);
  const own = keySpace.shard('series-m');
  const start = Math.floor(Date.parse('2026-11-20T10:30:00Z') / HOUR) * HOUR + 30 * 60_000;
  let now = start;
  const recorder = new MonitoringRecorder({ redis, keys: keySpace, flushEveryMs: 0, now: () => now });
  try {
    recorder.recordDecision('series-m', '1', 'approve');
    recorder.recordDecision('series-m', '1', 'amend');
    await recorder.flush();
    now = start + HOUR;
    for (const d of ['reject', 'reject', 'approve'] as const) recorder.recordDecision('series-m', '1', d);
    recorder.recordFeedback('series-m', '1', 'overridden', 'too-late');
    recorder.recordFeedback('series-m', '1', 'accepted');
    await recorder.flush();

    const series = await hourlySeries(redis, own, '1', now);
    assert.equal(series.length, 168, 'a week of hours');
    assert.equal(series.at(-1)?.hour, new Date(Math.floor(now / HOUR) * HOUR).toISOString(), 'ends at this hour');
    assert.deepEqual(
      series.slice(-2).map((h) => [h.hour.slice(11, 16), h.judgements, h.amended, h.rejected, h.overrideRate]),
      [
        ['10:00', 2, 1, 0, 0.5],
        ['11:00', 5, 0, 2, 0.6],
      ],
    );
    assert.ok(series.slice(0, -2).every((h) => h.judgements === 0 && h.overrideRate === null));

    const ttl = await redis.ttl(bucketKey(own, '1', HOUR, Math.floor(start / HOUR)));
    assert.ok(ttl > 7 * 86400 && ttl <= 8 * 86400, `an hourly bucket expires after eight days (ttl ${ttl})`);
    // a week later the first hour has rolled out of the series
    const later = await hourlySeries(redis, own, '1', start + 168 * HOUR);
    assert.deepEqual(
      later.filter((h) => h.judgements > 0).map((h) => h.hour.slice(11, 16)),
      ['11:00'],
    );
  } finally {
    await recorder.close();
  }
});

test('every model has both pages and every picture on them renders, whatever its output kind', async () => {
  const { age: _age, ...vitals } = SICK_VITALS;
  const news2 = await gw.predict('news2', keys.client, [{ ...vitals, spo2Scale: 1, consciousness: 'alert' }]);
  assert.equal(news2.status, 200, news2.text);
  await gw.gateway.deps.monitoring.recorder?.flush();
  const desk = await admin();
  for (const model of ['deterioration', 'news2', 'note-triage', 'similar-cases', 'readmission']) {
    for (const path of [`/desk/models/${model}`, `/desk/models/${model}/monitoring?window=week`]) {
      const page = await desk.request('GET', path);
      assert.equal(page.status, 200, `${path}: ${page.text}`);
      for (const [, attr] of page.text.matchAll(/<img src="([^"]+)"/g)) {
        const src = (attr ?? '').replaceAll('&amp;', '&');
        const svg = await desk.request('GET', src);
        assert.equal(svg.status, 200, `${src}: ${svg.text}`);
        assert.match(svg.text, /^<svg/, src);
      }
    }
  }
});

test("a page's pictures draw from the page's own read: one read for the page and its images, fresh after a while", async () => {
  let now = 0;
  let reads = 0;
  const cache = new PanelCache(10_000, () => now);
  const load = async () => {
    reads++;
    if (reads === 3) throw new Error('Command timed out');
    return [];
  };
  await cache.load('shadow:m', load);
  await Promise.all(Array.from({ length: 8 }, () => cache.get('shadow:m', load)));
  assert.equal(reads, 1, 'the images did not read again');
  await cache.load('shadow:m', load);
  assert.equal(reads, 2, 'a page always reads');
  now = 10_001;
  await assert.rejects(cache.get('shadow:m', load), /timed out/);
  await cache.get('shadow:m', load);
  assert.equal(reads, 4, 'an expired or failed read is read again');
  await cache.get('monitoring:m:day', load);
  assert.equal(reads, 5, 'each report, model and window its own');
});
