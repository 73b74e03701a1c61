/**
 * Admission on queueing delay: under overload a request whose wait before scoring would break its deadline is
 * refused at once (503 overloaded, reason queue_delay, Retry-After), instead of queueing only to time out; the
 * requests admitted keep their budget. The real onnx runtime, each run made slow (200 ms) and one row per run, so
 * the queue's arithmetic, not the machine's speed, decides.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { buildGateway, metricValue, predict, RuntimeControl, type TestGateway } from './support/index.ts';

const NEWS2 = {
  respirationRate: 22,
  spo2: 93,
  onOxygen: true,
  systolicBP: 105,
  pulse: 115,
  consciousness: 'alert',
  temperature: 38.5,
};
const RUN_MS = 200;
const BUDGET_MS = 1000;
const REQUESTS = 12;

let t: TestGateway;
const control = new RuntimeControl();

before(async () => {
  t = await buildGateway({
    runtimeFactory: control.factory(),
    sync: { news2: { maxBatchSize: 1, maxBatchWaitMs: 0, latencyBudgetMs: BUDGET_MS, maxConcurrency: 64 } },
    warmupPolicy: 'warn',
  });
  control.delayMs = RUN_MS;
  control.armed = true;
});

after(async () => {
  control.armed = false;
  await t?.close();
});

describe('admission on queueing delay', () => {
  it('refuses early what would wait past its deadline; what it admits is answered', async () => {
    // one run times the model (about RUN_MS): admission has a run duration to reckon with
    assert.equal((await predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client)).status, 200);

    const replies = await Promise.all(
      Array.from({ length: REQUESTS }, () => predict(t.app, 'news2', { instances: [NEWS2] }, t.keys.client)),
    );
    const statuses = replies.map((r) => r.status);
    const refused = replies.filter((r) => r.status === 503);
    // one run at a time, RUN_MS each: only about BUDGET_MS / RUN_MS requests can be scored within the budget
    assert.ok(refused.length >= REQUESTS - BUDGET_MS / RUN_MS, `statuses ${statuses.join(',')}`);
    for (const res of refused) {
      assert.equal(res.headers.get('retry-after'), '1');
      const body = (await res.json()) as { code: string; reason: string; action: string };
      assert.equal(body.code, 'overloaded');
      assert.equal(body.reason, 'queue_delay');
      assert.equal(body.action, 'no score: follow the standard protocol');
    }
    // without admission every one of them would queue, and all but the first few would end in a 504
    assert.ok(statuses.filter((s) => s === 504).length <= 1, `statuses ${statuses.join(',')}`);
    assert.ok(statuses.filter((s) => s === 200).length >= 2, `statuses ${statuses.join(',')}`);
    const metrics = await t.deps.metrics.registry.metrics();
    assert.equal(metricValue(metrics, 'triage_shed_total', { model: 'news2', reason: 'queue_delay' }), refused.length);
  });
});
