/**
 * Bedside first: while the gateway's event loop is under pressure, work that can wait yields. A noisy neighbour in
 * the gateway's own process blocks its event loop in slices (as a burst of traffic would); sampled shadow mirrors are
 * then dropped and counted with reason "pressure" (in /metrics and in the shadow comparison report) while the bedside
 * answer still comes, and mirroring resumes once the pressure is gone.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { buildGateway, metricValue, predict, type TestGateway, waitFor } from './support/index.ts';

const DETERIORATION = {
  respirationRate: 24,
  spo2: 92,
  systolicBP: 100,
  pulse: 118,
  temperature: 38.6,
  age: 81,
  onOxygen: false,
};

let t: TestGateway;

before(async () => {
  // budgets no busy machine breaks: this test is about what yields, not about speed
  t = await buildGateway({ sync: { '*': { latencyBudgetMs: 5000 } }, pressureThresholdMs: 200 });
});

after(async () => {
  await t?.close();
});

const metric = async (name: string, labels: Record<string, string>) =>
  metricValue(await t.deps.metrics.registry.metrics(), name, labels) ?? 0;

/** Blocks the event loop for `sliceMs` out of every few ms, until stopped: delay far above the threshold. */
function noisyNeighbour(sliceMs: number): () => void {
  const timer = setInterval(() => {
    const until = performance.now() + sliceMs;
    while (performance.now() < until) {
      // busy: the event loop is held, as a burst of synchronous work holds it
    }
  }, 5);
  return () => clearInterval(timer);
}

/** Waits until the gateway reports itself under pressure. */
const pressureSeen = () =>
  waitFor(async () => (await metric('triage_under_pressure', {})) === 1, 'the pressure to be seen', 30_000, 20);

describe('under pressure, shadows yield to the bedside answer', () => {
  it('drops sampled mirrors (reason pressure) while busy, mirrors again once calm', async () => {
    const stop = noisyNeighbour(400);
    try {
      await pressureSeen();
      const before = await metric('triage_shadow_dropped_total', { model: 'deterioration', reason: 'pressure' });
      // bedside answers keep coming while their mirrors are dropped (and counted)
      await waitFor(
        async () => {
          const res = await predict(t.app, 'deterioration', { instances: [DETERIORATION] }, t.keys.client);
          assert.equal(res.status, 200, 'the bedside answer comes');
          return (await metric('triage_shadow_dropped_total', { model: 'deterioration', reason: 'pressure' })) > before;
        },
        'a mirror dropped for pressure',
        30_000,
        20,
      );
    } finally {
      stop();
    }
    await waitFor(async () => (await metric('triage_under_pressure', {})) === 0, 'the pressure to pass', 30_000, 20);
    const dropped = await metric('triage_shadow_dropped_total', { model: 'deterioration', reason: 'pressure' });
    const pairs = await metric('triage_shadow_pairs_total', { model: 'deterioration', version: '2' });
    assert.equal((await predict(t.app, 'deterioration', { instances: [DETERIORATION] }, t.keys.client)).status, 200);
    assert.equal(await metric('triage_shadow_dropped_total', { model: 'deterioration', reason: 'pressure' }), dropped);
    // the comparison report says how many of the shadow version's mirrors were shed, and why
    await t.deps.shadow.flush();
    const report = await t.deps.shadow.report('deterioration', 0.3);
    assert.deepEqual(report.shadows.find((s) => s.version === '2')?.shed, { pressure: dropped });
    // the pair is recorded once the shadow has scored and the recorder has flushed (once a second)
    await waitFor(
      async () => (await metric('triage_shadow_pairs_total', { model: 'deterioration', version: '2' })) > pairs,
      'the shadow pair to be recorded',
      30_000,
      50,
    );
  });
});

describe('under pressure, a silent deployment still shows no score', () => {
  it('answers silent while its shadow mirrors are shed for pressure', async () => {
    // deterioration keeps its shadow (v2) while v1 runs silent: the path where a mirror is shed must not skip the
    // silent check (it once returned early, showing the silent version's scores)
    const set = await t.call('PUT', '/v1/models/deterioration/routing/silent', t.keys.admin, {
      version: '1',
      reason: 'CR-12: silent trial under load',
    });
    assert.equal(set.status, 200, set.text);
    assert.deepEqual(set.body.routing.shadow?.versions, ['2']);
    const stop = noisyNeighbour(400);
    try {
      await pressureSeen();
      const before = await metric('triage_shadow_dropped_total', { model: 'deterioration', reason: 'pressure' });
      await waitFor(
        async () => {
          const res = await t.predict('deterioration', t.keys.client, [DETERIORATION]);
          assert.equal(res.status, 200, res.text);
          assert.equal(res.body.silent, true, res.text);
          assert.deepEqual(res.body.predictions, [], 'no score while silent, under pressure too');
          return (await metric('triage_shadow_dropped_total', { model: 'deterioration', reason: 'pressure' })) > before;
        },
        'a mirror shed for pressure while silent',
        30_000,
        20,
      );
    } finally {
      stop();
    }
  });
});
