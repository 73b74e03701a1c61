/**
 * The desk's pictures: the shadow report of a model drawn as SVG on the server (Vega-Lite compiled by vega), each
 * picture with its numbers in words (alt text) and in a table; behind the desk session like every page.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { serve } from '@hono/node-server';
import { renderSvg } from '../src/desk/charts.ts';
import { shadowPanels } from '../src/desk/shadow-charts.ts';
import { FormClient } from './desk-support.ts';
import { buildGateway, deletePrefix, makeKeys, makePrefix, type TestGateway } from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('desk-charts');
let gw: TestGateway;
let server: ReturnType<typeof serve>;
let url: string;

before(async () => {
  gw = await buildGateway({ prefix, keys, only: ['deterioration'], workers: [] });
  server = serve({ fetch: gw.gateway.app.fetch, hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await gw?.close();
  await deletePrefix(prefix);
});

test('the shadow report as pictures: agreement, disagreements and latency, as SVG with their numbers', async () => {
  const shadow = gw.gateway.deps.shadow;
  const pair = (p: number, s: number) => ({
    model: 'deterioration',
    primaryVersion: '1',
    shadowVersion: '2',
    primary: [{ score: p, decision: p >= 0.3 ? 'positive' : 'negative' }],
    shadow: [{ score: s, decision: s >= 0.3 ? 'positive' : 'negative' }],
    primaryMs: 2,
    shadowMs: 3,
  });
  for (let i = 0; i < 3; i++) shadow.record(pair(0.1, 0.12));
  shadow.record(pair(0.1, 0.5));
  await shadow.flush();

  const client = new FormClient(url);
  assert.equal((await client.request('GET', '/desk/models/deterioration')).status, 303, 'no session, no pictures');
  assert.equal((await client.request('POST', '/desk/sign-in', { credential: keys.reviewer })).status, 303);
  const page = await client.request('GET', '/desk/models/deterioration');
  assert.equal(page.status, 200, page.text);
  assert.match(page.text, /alt="v2: 75.0 % of 4 pairs agree"/);
  assert.match(page.text, /v2 shadow positive, primary negative: 1/);
  for (const id of ['agreement', 'disagreements', 'latency']) {
    const svg = await client.request('GET', `/desk/models/deterioration/charts/${id}.svg`);
    assert.equal(svg.status, 200, svg.text);
    assert.equal(svg.headers.get('content-type'), 'image/svg+xml');
    assert.match(svg.text, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg.text, /<path|<rect/);
  }
  assert.match((await client.request('GET', '/desk/models/deterioration/charts/agreement.svg')).text, /shadow version/);
  assert.equal((await client.request('GET', '/desk/models/deterioration/charts/nope.svg')).status, 404);
  assert.equal((await client.request('GET', '/desk/models/no-such-model')).status, 404);
});

test('a report with no shadow yet draws nothing; every panel of a report renders', async () => {
  assert.deepEqual(shadowPanels({ model: 'm', threshold: 0.5, shadows: [] }), []);
  const panels = shadowPanels({
    model: 'm',
    threshold: 0.5,
    shadows: [
      {
        version: '3',
        pairs: 0,
        agreementRate: null,
        meanAbsoluteScoreDifference: null,
        disagreements: { shadowPositivePrimaryNegative: 0, shadowNegativePrimaryPositive: 0 },
        shadowErrors: 0,
        latencyMs: { shadow: null, primary: null },
      },
    ],
  });
  assert.match(panels[0]?.summary ?? '', /no pairs yet/);
  for (const p of panels) assert.match(await renderSvg(p.spec), /^<svg/);
});
