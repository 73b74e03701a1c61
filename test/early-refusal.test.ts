/**
 * Early refusal while the event loop is saturated (src/platform/admission.ts, src/sync/admission-gate.ts): the gateway
 * on a real socket, its admission fed by a lag signal the test drives (the real one is the Pressure's tick), so what
 * is refused depends on the readings given, never on this machine's speed. Sync scoring is refused with 503
 * problem+json (`overloaded`, reason `event_loop`, Retry-After, the secure headers, a request id) before the app;
 * health, readiness, /metrics and everything else are always answered; the refusals are counted; nothing is refused
 * while the signal is calm. Also: the Pressure's tick reports a blocked loop's lag.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Admission } from '../src/platform/admission.ts';
import { Pressure } from '../src/platform/pressure.ts';
import { SECURE_HEADERS } from '../src/platform/secure-headers.ts';
import { buildGateway, metricValue, NEWS2_INSTANCE, type TestGateway, waitFor } from './support/index.ts';

const TARGET_LAG_MS = 10;
const SATURATED_MS = 500;

/** A lag signal the test gives readings to: ticks, and the lag as it stands "now". */
class DrivenLag {
  readonly #listeners: Array<(lagMs: number) => void> = [];
  nowMs = 0;
  onLag(listener: (lagMs: number) => void): void {
    this.#listeners.push(listener);
  }
  lagNowMs(): number {
    return this.nowMs;
  }
  emit(lagMs: number, times = 1): void {
    for (let i = 0; i < times; i++) for (const l of this.#listeners) l(lagMs);
  }
}

describe('the admission share (AIMD on the loop lag)', () => {
  it('one late tick is not overload; a lag that holds cuts the share, and calm restores it', () => {
    const a = new Admission({ targetLagMs: TARGET_LAG_MS, minRequests: 0 });
    a.observe(SATURATED_MS);
    assert.equal(a.share, 1, 'a single late tick (a GC, a moment off the CPU) cuts nothing');
    a.observe(SATURATED_MS);
    a.observe(1);
    a.observe(SATURATED_MS);
    a.observe(SATURATED_MS);
    assert.equal(a.share, 1, 'late ticks must be consecutive (three)');
    a.observe(SATURATED_MS);
    assert.ok(a.share < 1 && a.share > 0.5, `cut once: ${a.share}`);
    for (let i = 0; i < 30; i++) a.observe(SATURATED_MS);
    assert.equal(a.share, 0, 'held saturation refuses everything');
    assert.equal(a.admit(), false);
    for (let i = 0; i < 10; i++) a.observe(1);
    const admitted = Array.from({ length: 100 }, () => a.admit()).filter(Boolean).length;
    assert.ok(admitted >= 45 && admitted <= 55, `about half admitted at share ${a.share}: ${admitted}`);
    for (let i = 0; i < 10; i++) a.observe(1);
    assert.equal(a.share, 1);
    assert.ok(Array.from({ length: 100 }, () => a.admit()).every(Boolean));
  });

  it('a lagging loop with few scoring requests arriving is not overload (start-up, a reload)', () => {
    const a = new Admission({ targetLagMs: TARGET_LAG_MS, minRequests: 16 });
    const tick = (requests: number) => {
      for (let i = 0; i < requests; i++) a.admit();
      a.observe(SATURATED_MS);
    };
    for (let i = 0; i < 10; i++) tick(3);
    assert.equal(a.share, 1, 'a trickle through a lagging loop: nothing cut');
    tick(40);
    tick(40);
    tick(40);
    assert.ok(a.share < 1, `a flood through a lagging loop: cut to ${a.share}`);
  });

  it('a target of 0 turns it off', () => {
    const a = new Admission({ targetLagMs: 0 });
    for (let i = 0; i < 50; i++) a.observe(SATURATED_MS);
    assert.equal(a.share, 1);
    assert.equal(a.enabled, false);
  });
});

describe('early refusal on a real socket', () => {
  let t: TestGateway;
  const lag = new DrivenLag();

  before(async () => {
    // minRequests 0: the test's requests come one at a time, the readings say how busy the loop is
    t = await buildGateway({
      listen: true,
      admissionLagMs: TARGET_LAG_MS,
      loopLag: lag,
      admission: { minRequests: 0 },
      only: ['news2'],
    });
  });

  after(async () => {
    await t?.close();
  });

  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${t.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${t.keys.client}`, ...headers },
      body: JSON.stringify(body),
    });
  const predict = (headers: Record<string, string> = {}) =>
    post('/v1/models/news2/predict', { instances: [NEWS2_INSTANCE] }, headers);
  const shed = async () =>
    metricValue(await t.metrics(), 'triage_shed_total', { model: 'news2', reason: 'event_loop' }) ?? 0;

  it('refuses nothing while the loop is calm', async () => {
    lag.emit(1, 40);
    for (let i = 0; i < 10; i++) assert.equal((await predict()).status, 200);
    assert.equal(await shed(), 0);
  });

  it('while saturated: sync scoring gets 503 overloaded with Retry-After before the app; the rest is answered', async () => {
    lag.emit(SATURATED_MS, 40);
    assert.equal(t.gateway.admission.share, 0);
    const before = await shed();

    const requestId = randomUUID();
    const res = await predict({ 'x-request-id': requestId });
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.equal(res.headers.get('content-type'), 'application/problem+json');
    assert.equal(res.headers.get('x-request-id'), requestId);
    for (const [name, value] of Object.entries(SECURE_HEADERS)) assert.equal(res.headers.get(name), value, name);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.code, 'overloaded');
    assert.equal(body.status, 503);
    assert.equal(body.reason, 'event_loop');
    assert.equal(body.action, 'no score: follow the standard protocol');
    assert.equal(body.instance, '/v1/models/news2/predict');
    assert.equal(body.requestId, requestId);

    // a caller's id that is not a UUID is not echoed (it is where an MRN would go): the refusal makes its own
    const own = await predict({ 'x-request-id': 'MRN-12345' });
    assert.equal(own.status, 503);
    const ownId = own.headers.get('x-request-id') ?? '';
    assert.match(ownId, /^[0-9a-f-]{36}$/);
    assert.equal(((await own.json()) as { requestId: string }).requestId, ownId);

    // the OIP route, with a query string, and a body the app would have refused: never read
    const infer = await post('/v2/models/news2/infer?x=1', { not: 'a tensor' });
    assert.equal(infer.status, 503);
    assert.equal(((await infer.json()) as { reason: string }).reason, 'event_loop');

    // health, readiness and the scrape are never refused; nor another route, nor a model the catalog does not know
    for (const path of ['/healthz', '/readyz', '/metrics', '/v2/health/ready']) {
      assert.equal((await fetch(`${t.url}${path}`)).status, 200, path);
    }
    assert.equal(
      (await fetch(`${t.url}/v1/models/news2`, { headers: { authorization: `Bearer ${t.keys.client}` } })).status,
      200,
    );
    const unknown = await post('/v1/models/no-such-model/predict', { instances: [NEWS2_INSTANCE] });
    assert.equal(unknown.status, 404);

    assert.equal((await shed()) - before, 3, 'each refusal counted once, under the model of the catalog');
    const text = await t.metrics();
    assert.ok(!text.includes('no-such-model'), 'a name from a URL never becomes a label');
    assert.equal(metricValue(text, 'triage_admission_ratio'), 0, 'the share admitted, for dashboards');
  });

  it('the connection stays usable after a refusal (the unread body is discarded)', async () => {
    const { request } = await import('node:http');
    const agent = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 1 });
    const send = (path: string, method: string, body?: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request(`${t.url}${path}`, {
          method,
          agent,
          headers: { 'content-type': 'application/json', authorization: `Bearer ${t.keys.client}` },
        });
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end(body);
      });
    const sockets = new Set<unknown>();
    agent.on('free', (socket) => sockets.add(socket));
    assert.equal(await send('/v1/models/news2/predict', 'POST', JSON.stringify({ instances: [NEWS2_INSTANCE] })), 503);
    assert.equal(await send('/healthz', 'GET'), 200);
    assert.equal(await send('/v1/models/news2/predict', 'POST', JSON.stringify({ instances: [NEWS2_INSTANCE] })), 503);
    assert.equal(sockets.size, 1, 'one keep-alive connection served all three');
    agent.destroy();
  });

  it('in the middle of a long turn (the lag right now past the limit) refuses at once, whatever the share', async () => {
    assert.equal(t.gateway.admission.share, 0);
    lag.emit(1, 20);
    assert.equal(t.gateway.admission.share, 1);
    assert.equal((await predict()).status, 200);
    lag.nowMs = 5 * TARGET_LAG_MS + 1;
    try {
      const refused = await predict();
      assert.equal(refused.status, 503);
      assert.equal(((await refused.json()) as { reason: string }).reason, 'event_loop');
      assert.equal((await fetch(`${t.url}/healthz`)).status, 200);
    } finally {
      lag.nowMs = 0;
    }
    assert.equal((await predict()).status, 200);
    lag.emit(SATURATED_MS, 40);
    assert.equal(t.gateway.admission.share, 0);
  });

  it('admits in proportion as the loop calms, then everything', async () => {
    lag.emit(1, 10); // from 0 to about half
    let ok = 0;
    for (let i = 0; i < 20; i++) if ((await predict()).status === 200) ok++;
    assert.ok(ok >= 8 && ok <= 12, `about half admitted at share ${t.gateway.admission.share}: ${ok} of 20`);
    lag.emit(1, 20);
    assert.equal(t.gateway.admission.share, 1);
    const before = await shed();
    for (let i = 0; i < 10; i++) assert.equal((await predict()).status, 200);
    assert.equal(await shed(), before);
  });
});

describe('the Pressure lag tick', () => {
  it('reports how long the loop was blocked', async () => {
    const pressure = new Pressure({ thresholdMs: 10_000, lagEveryMs: 10 });
    const readings: number[] = [];
    pressure.onLag((ms) => readings.push(ms));
    try {
      await waitFor(() => readings.length > 0, 'a first tick');
      const until = performance.now() + 200;
      while (performance.now() < until) {
        // the loop is blocked: the tick's timer cannot fire
      }
      await waitFor(() => readings.some((ms) => ms >= 150), `a reading of the 200 ms block: ${readings.join(',')}`);
    } finally {
      pressure.close();
    }
  });
});
