/**
 * Every cloud fault, for both clouds, through withResilience over the real SDK clients and the wire-protocol fakes:
 * slow → timeout by the deadline; 5xx → retried, then success when the fake recovers; throttled → retried with
 * backoff; retries stop when the deadline would be passed; connection refused → transient → breaker opens and fails
 * fast without calling the fake → half-open lets one probe through; malformed and rejected replies → not retried.
 * Time bounds here are generous upper bounds that only prove "never hangs", not performance.
 */
import assert from 'node:assert/strict';
import { after, before, describe, mock, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { type LoadedModel, loadModels } from '../src/registry/load.ts';
import {
  RemoteError,
  type RemoteErrorKind,
  type ResilienceEvent,
  type ResiliencePolicy,
  withResilience,
} from '../src/runtime/resilience.ts';
import { createSageMakerRuntime } from '../src/runtime/sagemaker.ts';
import type { ModelRuntime } from '../src/runtime/types.ts';
import { createVertexRuntime, type PredictionServiceClient } from '../src/runtime/vertex.ts';
import { inputWidth } from '../src/serving/inputs.ts';
import { SageMakerFake, sagemakerTestClient } from './fakes/sagemaker-fake.ts';
import { VertexFake, vertexTestClient } from './fakes/vertex-fake.ts';
import { waitFor } from './support/wait.ts';

const MODELS_DIR = fileURLToPath(new URL('../models/', import.meta.url));
const VERTEX_ENDPOINT = 'projects/triage-test/locations/europe-west2/endpoints/77';
/** "never hangs": far above any deadline used here, far below a stuck test */
const SETTLES_WITHIN_MS = 2_000;

type Fault = 'slow' | '5xx' | 'throttled' | 'malformed' | 'rejected';

/** One cloud's fake and runtimes, behind the same handful of verbs. */
interface Cloud {
  readonly name: string;
  /** requests that reached the fake */
  count(): number;
  /** the next `times` requests fail so (default: every request, until ok()) */
  fail(fault: Fault, times?: number, slowMs?: number): void;
  ok(): void;
  refuse(): Promise<void>;
  accept(): Promise<void>;
  runtime(policy: Partial<ResiliencePolicy>, events?: ResilienceEvent[]): ModelRuntime;
  close(): Promise<void>;
}

let model: LoadedModel;
let input: Float32Array;
let breakerNames = 0;

const basePolicy: ResiliencePolicy = {
  timeoutMs: 2_000,
  retries: 2,
  breakerThreshold: 100,
  breakerHalfOpenAfterMs: 10_000,
  backoffInitialMs: 10,
  backoffMaxMs: 50,
};

async function sagemakerCloud(): Promise<Cloud> {
  const fake = await SageMakerFake.start();
  const client: SageMakerRuntimeClient = await sagemakerTestClient(fake);
  const wire = (fault: Fault, slowMs = 5_000) =>
    ({
      slow: { mode: 'slow', ms: slowMs },
      '5xx': { mode: '5xx', error: 'ModelError' },
      throttled: { mode: 'throttled' },
      malformed: { mode: 'malformed', shape: 'not-json' },
      rejected: { mode: 'validation' },
    })[fault] as SageMakerFake['fault'];
  const spec = {
    kind: 'sagemaker',
    endpointName: 'deterioration-v3',
    region: fake.region,
    endpointUrl: fake.url,
    contentType: 'application/json',
  } as const;
  return {
    name: 'SageMaker',
    count: () => fake.count,
    fail(fault, times, slowMs) {
      if (times === undefined) fake.fault = wire(fault, slowMs);
      else for (let i = 0; i < times; i++) fake.queue.push(wire(fault, slowMs));
    },
    ok() {
      fake.queue.length = 0;
      fake.fault = { mode: 'ok' };
    },
    refuse: () => fake.refuseConnections(),
    accept: () => fake.acceptConnections(),
    runtime: (policy, events) =>
      withResilience(
        createSageMakerRuntime(spec, model.manifest, { client }),
        { ...basePolicy, ...policy },
        { name: `sm-${++breakerNames}`, onEvent: (e) => events?.push(e) },
      ),
    async close() {
      client.destroy();
      await fake.close();
    },
  };
}

async function vertexCloud(): Promise<Cloud> {
  const fake = await VertexFake.start();
  const client: PredictionServiceClient = await vertexTestClient(fake, VERTEX_ENDPOINT);
  const wire = (fault: Fault, slowMs = 5_000) =>
    ({
      slow: { mode: 'slow', ms: slowMs },
      '5xx': { mode: 'status', code: 'UNAVAILABLE' },
      throttled: { mode: 'status', code: 'RESOURCE_EXHAUSTED' },
      malformed: { mode: 'malformed' },
      rejected: { mode: 'status', code: 'INVALID_ARGUMENT' },
    })[fault] as VertexFake['fault'];
  const spec = { kind: 'vertex', endpoint: VERTEX_ENDPOINT, apiEndpoint: `127.0.0.1:${fake.port}` } as const;
  return {
    name: 'Vertex AI',
    count: () => fake.count,
    fail(fault, times, slowMs) {
      if (times === undefined) fake.fault = wire(fault, slowMs);
      else for (let i = 0; i < times; i++) fake.queue.push(wire(fault, slowMs));
    },
    ok() {
      fake.queue.length = 0;
      fake.fault = { mode: 'ok' };
    },
    refuse: () => fake.refuseConnections(),
    async accept() {
      await fake.acceptConnections();
      // the gRPC channel reconnects after its own backoff: wait for the channel to be ready, not for time to pass
      const stub = (await client.predictionServiceStub) as unknown as {
        waitForReady(deadline: number, callback: (err?: Error) => void): void;
      };
      await new Promise<void>((resolve, reject) =>
        stub.waitForReady(Date.now() + SETTLES_WITHIN_MS, (err) => (err ? reject(err) : resolve())),
      );
    },
    runtime: (policy, events) =>
      withResilience(
        createVertexRuntime(spec, model.manifest, { client }),
        { ...basePolicy, ...policy },
        { name: `vx-${++breakerNames}`, onEvent: (e) => events?.push(e) },
      ),
    async close() {
      await client.close();
      await fake.close();
    },
  };
}

before(async () => {
  const models = await loadModels(MODELS_DIR, 5_000);
  model = models.find((m) => m.manifest.name === 'deterioration') as LoadedModel;
  const width = inputWidth(model.manifest);
  input = Float32Array.from({ length: 2 * width }, (_, i) => (i % 5) + 0.5);
});

async function expectRemoteError(
  promise: Promise<unknown>,
  kind: RemoteErrorKind,
): Promise<{ error: RemoteError; ms: number }> {
  const started = performance.now();
  try {
    await promise;
  } catch (err) {
    const ms = performance.now() - started;
    assert.ok(err instanceof RemoteError, `expected a RemoteError, got ${err}`);
    assert.equal(err.kind, kind, err.message);
    return { error: err, ms };
  }
  assert.fail(`expected a RemoteError ${kind}, the call succeeded`);
}

const deadline = (ms: number) => ({ deadline: Date.now() + ms });

/**
 * Runs `fn` with Date stopped (timers still run): a breaker (cockatiel reads Date.now()) stays open exactly until the
 * test moves the clock with `mock.timers.tick`, however slow the machine. Deadlines are reckoned from the same clock,
 * and enforced by real timers.
 */
async function withStoppedClock(fn: () => Promise<void>): Promise<void> {
  mock.timers.enable({ apis: ['Date'], now: Date.now() });
  try {
    await fn();
  } finally {
    mock.timers.reset();
  }
}

for (const make of [sagemakerCloud, vertexCloud]) {
  describe(make === sagemakerCloud ? 'SageMaker faults' : 'Vertex AI faults', () => {
    let cloud: Cloud;
    before(async () => {
      cloud = await make();
    });
    after(async () => {
      await cloud?.close();
    });

    test('healthy: the call succeeds on the first attempt', async () => {
      cloud.ok();
      const events: ResilienceEvent[] = [];
      const before = cloud.count();
      const out = await cloud.runtime({}, events).run(input, 2, deadline(5_000));
      assert.equal(out.probability?.dims[0], 2);
      assert.equal(cloud.count() - before, 1);
      assert.deepEqual(events, []);
    });

    test('slow endpoint → RemoteError timeout by the deadline, not retried', async () => {
      cloud.fail('slow', undefined, 5_000);
      try {
        const events: ResilienceEvent[] = [];
        const before = cloud.count();
        const { error, ms } = await expectRemoteError(
          cloud.runtime({ retries: 3 }, events).run(input, 2, deadline(200)),
          'timeout',
        );
        assert.ok(ms >= 150, `settled after ${ms} ms, before the deadline`);
        assert.ok(ms < SETTLES_WITHIN_MS, `settled after ${ms} ms`);
        assert.equal(error.retryable, false);
        assert.equal(cloud.count() - before, 1, 'a timeout is not retried');
        assert.ok(
          events.some((e) => e.type === 'timeout' && e.attempts === 1),
          'a timeout event, after one attempt',
        );
      } finally {
        cloud.ok();
      }
    });

    test('slow endpoint, no caller deadline → the policy timeout bounds the call', async () => {
      cloud.fail('slow', undefined, 5_000);
      try {
        const before = cloud.count();
        const { ms } = await expectRemoteError(cloud.runtime({ timeoutMs: 150 }).run(input, 2), 'timeout');
        assert.ok(ms < SETTLES_WITHIN_MS, `settled after ${ms} ms`);
        // the abandoned request must have reached the endpoint before the next test queues faults: on busy cores it
        // arrived late once and took the next test's first 5xx
        await waitFor(() => cloud.count() - before === 1, 'the abandoned request to reach the endpoint');
      } finally {
        cloud.ok();
      }
    });

    test('5xx → retried, then success when the endpoint recovers', async () => {
      cloud.ok();
      cloud.fail('5xx', 2);
      const events: ResilienceEvent[] = [];
      const before = cloud.count();
      const out = await cloud.runtime({ retries: 2 }, events).run(input, 2, deadline(5_000));
      assert.equal(out.probability?.dims[0], 2);
      assert.equal(cloud.count() - before, 3, 'two failures and the success');
      assert.deepEqual(
        events.filter((e) => e.type === 'retry').map((e) => (e.type === 'retry' ? [e.kind, e.attempt] : [])),
        [
          ['transient', 1],
          ['transient', 2],
        ],
      );
    });

    test('5xx beyond the retries → the transient error, after retries+1 attempts', async () => {
      cloud.fail('5xx');
      try {
        const before = cloud.count();
        const { error } = await expectRemoteError(
          cloud.runtime({ retries: 2 }).run(input, 2, deadline(5_000)),
          'transient',
        );
        assert.equal(error.retryable, true);
        assert.equal(cloud.count() - before, 3);
      } finally {
        cloud.ok();
      }
    });

    test('throttled → retried with backoff, then success', async () => {
      cloud.ok();
      cloud.fail('throttled', 2);
      const events: ResilienceEvent[] = [];
      const before = cloud.count();
      const started = performance.now();
      await cloud
        .runtime({ retries: 3, backoffInitialMs: 40, backoffMaxMs: 200 }, events)
        .run(input, 2, deadline(5_000));
      const elapsed = performance.now() - started;
      assert.equal(cloud.count() - before, 3);
      const retries = events.filter((e) => e.type === 'retry');
      assert.equal(retries.length, 2);
      assert.ok(
        retries.every((e) => e.type === 'retry' && e.kind === 'throttled'),
        'retried for throttling',
      );
      const waited = retries.reduce((sum, e) => sum + (e.type === 'retry' ? e.delayMs : 0), 0);
      assert.ok(waited > 0, 'backoff delays were drawn');
      assert.ok(elapsed >= waited - 5, `the call waited the backoff (${elapsed} ms ≥ ${waited} ms)`);
    });

    test('retries stop when the next attempt would pass the deadline', async () => {
      cloud.fail('throttled');
      try {
        const events: ResilienceEvent[] = [];
        const before = cloud.count();
        const { error, ms } = await expectRemoteError(
          cloud
            .runtime({ retries: 10, backoffInitialMs: 200, backoffMaxMs: 400 }, events)
            .run(input, 2, deadline(2_000)),
          'throttled',
        );
        const attempts = cloud.count() - before;
        assert.ok(attempts >= 1 && attempts < 11, `${attempts} attempts`);
        assert.ok(
          events.some((e) => e.type === 'give_up' && e.reason === 'deadline'),
          'gave up for the deadline, not for the retry count',
        );
        assert.ok(ms < 2_000, `the last failure is reported before the deadline (${ms} ms)`);
        assert.match(error.message, /throttled/);
      } finally {
        cloud.ok();
      }
    });

    test('malformed reply → not retried, a clear error', async () => {
      cloud.fail('malformed');
      try {
        const before = cloud.count();
        const { error } = await expectRemoteError(
          cloud.runtime({ retries: 3 }).run(input, 2, deadline(5_000)),
          'malformed',
        );
        assert.equal(cloud.count() - before, 1);
        assert.equal(error.retryable, false);
        assert.match(error.message, /malformed reply: (not JSON|prediction 0 is a string)/);
      } finally {
        cloud.ok();
      }
    });

    test('rejected request (4xx / INVALID_ARGUMENT) → not retried, does not trip the breaker', async () => {
      cloud.fail('rejected');
      try {
        const runtime = cloud.runtime({ retries: 3, breakerThreshold: 2 });
        const before = cloud.count();
        for (let i = 0; i < 3; i++) await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'rejected');
        assert.equal(cloud.count() - before, 3, 'one attempt per call, and every call reached the endpoint');
      } finally {
        cloud.ok();
      }
    });

    test('5xx → breaker opens after N consecutive failures, then fails fast without calling the endpoint', async () => {
      cloud.fail('5xx');
      try {
        const events: ResilienceEvent[] = [];
        const runtime = cloud.runtime({ retries: 0, breakerThreshold: 3, breakerHalfOpenAfterMs: 60_000 }, events);
        const before = cloud.count();
        for (let i = 0; i < 3; i++) await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'transient');
        assert.equal(cloud.count() - before, 3);
        assert.ok(
          events.some((e) => e.type === 'breaker' && e.state === 'open'),
          'the breaker opened',
        );
        for (let i = 0; i < 5; i++) {
          const { error, ms } = await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'unavailable');
          assert.equal(error.retryable, false);
          assert.ok(ms < SETTLES_WITHIN_MS, `settled after ${ms} ms`);
        }
        assert.equal(cloud.count() - before, 3, 'an open breaker does not call the endpoint');
      } finally {
        cloud.ok();
      }
    });

    test('connection refused → transient → breaker open → fails fast → half-open probe closes it', () =>
      withStoppedClock(async () => {
        cloud.ok();
        const events: ResilienceEvent[] = [];
        const runtime = cloud.runtime({ retries: 1, breakerThreshold: 4, breakerHalfOpenAfterMs: 400 }, events);
        await runtime.run(input, 2, deadline(5_000)); // a warm connection, then the port goes away
        await cloud.refuse();
        try {
          // 2 calls × 2 attempts = 4 consecutive failures
          for (let i = 0; i < 2; i++) {
            const { ms } = await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'transient');
            assert.ok(ms < SETTLES_WITHIN_MS, `settled after ${ms} ms`);
          }
          await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'unavailable');
        } finally {
          await cloud.accept();
        }
        // the endpoint is back, but the breaker is open: still no call reaches it
        const before = cloud.count();
        await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'unavailable');
        assert.equal(cloud.count(), before, 'failed fast without calling the endpoint');
        mock.timers.tick(399);
        await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'unavailable');
        assert.equal(cloud.count(), before, 'still open 1 ms before the half-open delay');

        mock.timers.tick(2);
        const out = await runtime.run(input, 2, deadline(5_000));
        assert.equal(out.probability?.dims[0], 2);
        assert.equal(cloud.count() - before, 1, 'one probe');
        await runtime.run(input, 2, deadline(5_000));
        assert.equal(cloud.count() - before, 2, 'closed again: calls flow');
        const states = events.flatMap((e) => (e.type === 'breaker' ? [e.state] : []));
        assert.deepEqual(states, ['open', 'half_open', 'closed']);
      }));

    test('half-open lets exactly one probe through; a failed probe reopens the breaker', () =>
      withStoppedClock(async () => {
        cloud.fail('5xx');
        try {
          const runtime = cloud.runtime({ retries: 0, breakerThreshold: 2, breakerHalfOpenAfterMs: 300 });
          for (let i = 0; i < 2; i++) await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'transient');
          await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'unavailable');
          mock.timers.tick(301);
          const before = cloud.count();
          const results = await Promise.allSettled([1, 2, 3, 4].map(() => runtime.run(input, 2, deadline(5_000))));
          assert.equal(cloud.count() - before, 1, 'one probe reached the endpoint');
          const kinds = results.map((r) => (r.status === 'rejected' ? (r.reason as RemoteError).kind : 'ok')).sort();
          assert.deepEqual(kinds, ['transient', 'unavailable', 'unavailable', 'unavailable']);
          await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'unavailable');
          assert.equal(cloud.count() - before, 1);
        } finally {
          cloud.ok();
        }
      }));

    test('callers waiting on a slow half-open probe still settle by their own deadlines', () =>
      withStoppedClock(async () => {
        cloud.fail('5xx');
        try {
          const runtime = cloud.runtime({ retries: 0, breakerThreshold: 1, breakerHalfOpenAfterMs: 200 });
          await expectRemoteError(runtime.run(input, 2, deadline(5_000)), 'transient');
          mock.timers.tick(201);
          cloud.fail('slow', undefined, 5_000);
          const probe = runtime.run(input, 2, deadline(600));
          const waiters = [1, 2, 3].map(() => runtime.run(input, 2, deadline(150)));
          for (const waiter of waiters) {
            const { ms } = await expectRemoteError(waiter, 'timeout');
            assert.ok(ms < SETTLES_WITHIN_MS, `waiter settled after ${ms} ms`);
          }
          const { ms } = await expectRemoteError(probe, 'timeout');
          assert.ok(ms < SETTLES_WITHIN_MS, `probe settled after ${ms} ms`);
        } finally {
          cloud.ok();
        }
      }));
  });
}

describe('withResilience without a cloud', () => {
  test('a caller abort settles the call at once', async () => {
    const never: ModelRuntime = {
      kind: 'never',
      run: (_i, _r, options) =>
        new Promise((_, reject) => options?.signal?.addEventListener('abort', () => reject(new Error('aborted')))),
      close: async () => {},
    };
    const runtime = withResilience(never, basePolicy, { name: 'never' });
    const controller = new AbortController();
    const call = runtime.run(new Float32Array(1), 1, { deadline: Date.now() + 60_000, signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    const { ms } = await expectRemoteError(call, 'timeout');
    assert.ok(ms < SETTLES_WITHIN_MS, `settled after ${ms} ms`);
  });

  test('a deadline already passed → timeout without calling the runtime', async () => {
    let calls = 0;
    const counting: ModelRuntime = {
      kind: 'counting',
      run: async () => {
        calls++;
        return {};
      },
      close: async () => {},
    };
    const runtime = withResilience(counting, basePolicy, { name: 'counting' });
    await expectRemoteError(runtime.run(new Float32Array(1), 1, { deadline: Date.now() - 1 }), 'timeout');
    assert.equal(calls, 0);
  });

  test('breakers are shared per endpoint name through a registry', async () => {
    const { BreakerRegistry } = await import('../src/runtime/resilience.ts');
    const breakers = new BreakerRegistry();
    let calls = 0;
    const failing: ModelRuntime = {
      kind: 'failing',
      run: async () => {
        calls++;
        throw new RemoteError('transient', 'down');
      },
      close: async () => {},
    };
    const policy = { ...basePolicy, retries: 0, breakerThreshold: 2 };
    const a = withResilience(failing, policy, { name: 'shared-endpoint', breakers });
    const b = withResilience(failing, policy, { name: 'shared-endpoint', breakers });
    await expectRemoteError(a.run(new Float32Array(1), 1), 'transient');
    await expectRemoteError(b.run(new Float32Array(1), 1), 'transient');
    await expectRemoteError(a.run(new Float32Array(1), 1), 'unavailable');
    await expectRemoteError(b.run(new Float32Array(1), 1), 'unavailable');
    assert.equal(calls, 2);
    assert.deepEqual(breakers.states(), { 'shared-endpoint': 'open' });
  });
});
