/**
 * A model's monitoring and accountability state on a real Redis Cluster (three primaries, three replicas, this file's
 * own): after sync predictions, shadow pairs, outcomes and CDS Hooks feedback for two models whose shards are on
 * different primaries, each model's monitoring windows, shadow aggregates, prediction log, outcomes and feedback are
 * on its own primary and nothing of it under the global tag; and the reports that read them still answer.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { LocalCluster } from '../src/devtools/local-cluster.ts';
import { KeySpace } from '../src/platform/keyspace.ts';
import { highRiskVitals } from './bedside-fhir.ts';
import { FakeEhr } from './cds-ehr.ts';
import {
  allAudit,
  buildGateway,
  makeKeys,
  news2Row,
  retryingOn503,
  SICK_VITALS,
  sleep,
  type TestGateway,
  waitFor,
} from './support/index.ts';

const keys = makeKeys();
const A = 'deterioration'; // shadowed by its version 2 (the bundled routing)
const B = 'news2'; // the CDS Hooks services' model
const ROUNDS = 3;
const ROWS = 2;
const EXAMPLES = new URL('../../shared/data/cdshooks/', import.meta.url);
const example = (name: string) => JSON.parse(readFileSync(new URL(name, EXAMPLES), 'utf8'));

let cluster: LocalCluster;
let ehr: FakeEhr;
let gw: TestGateway;
let space: KeySpace;

/** The primary (port) serving a key's slot. */
async function primaryPort(key: string): Promise<number> {
  return (await cluster.primaryOf(await cluster.keySlot(key))).port;
}

/**
 * A prefix whose global tag and the two models' shards are served by three different primaries (the slots follow
 * from the names, so one is looked for rather than assumed).
 */
async function spreadPrefix(): Promise<KeySpace> {
  for (let n = 0; n < 500; n++) {
    const k = new KeySpace(`{state${n}}`, [A, B]);
    const ports = await Promise.all([k.global, k.shard(A), k.shard(B)].map(primaryPort));
    if (new Set(ports).size === 3) return k;
  }
  throw new Error('no prefix spreads over three primaries');
}

before(async () => {
  cluster = await LocalCluster.start();
  ehr = await FakeEhr.start();
  space = await spreadPrefix();
  gw = await buildGateway({
    prefix: space.global,
    keys,
    only: [A, B],
    listen: true,
    redisUrl: cluster.url,
    cdsClients: {
      clients: [
        {
          id: 'ehr',
          issuer: ehr.issuer,
          jwksUri: `${ehr.url}/jwks`,
          algorithms: ['ES384'],
          fhirServers: [`${ehr.url}/fhir`],
          clockToleranceSeconds: 5,
        },
      ],
    },
  });
});

after(async () => {
  await Promise.race([gw?.close(), sleep(60_000)]);
  await ehr?.close();
  await cluster?.stop();
});

/** Every key on the node at `port` (a primary holds only the keys of its own slots). */
async function keysOn(port: number): Promise<string[]> {
  const node = new Redis({ port, host: '127.0.0.1' });
  try {
    const out: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await node.scan(cursor, 'COUNT', 1000);
      out.push(...batch);
      cursor = next;
    } while (cursor !== '0');
    return out;
  } finally {
    node.disconnect();
  }
}

/** A CDS Hooks patient-view call for news2 from the EHR, then the clinician's feedback on its card. */
async function cdsFeedback(): Promise<void> {
  const id = 'news2-patient-view';
  const post = async (path: string, body: unknown) => {
    const res = await fetch(`${gw.url}/cds-services/${id}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${await ehr.sign(`${gw.url}/cds-services/${id}`)}`,
      },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  };
  const services = (await (await fetch(`${gw.url}/cds-services`)).json()).services as Array<{
    id: string;
    prefetch: Record<string, string>;
  }>;
  const patient = highRiskVitals('cluster');
  const observations = {
    resourceType: 'Bundle',
    type: 'searchset',
    entry: patient.filter((r) => r.resourceType === 'Observation').map((resource) => ({ resource })),
  };
  const obsKeys = Object.keys(services.find((s) => s.id === id)?.prefetch ?? {}).filter((k) => k.startsWith('obs-'));
  const { prefetch: _, ...request } = example('service-request-patient-view.json');
  const call = await post('', {
    ...request,
    fhirServer: `${ehr.url}/fhir`,
    context: { ...request.context, patientId: 'cluster' },
    prefetch: {
      patient: patient.find((r) => r.resourceType === 'Patient'),
      ...Object.fromEntries(obsKeys.map((k, i) => [k, i === 0 ? observations : { ...observations, entry: [] }])),
    },
  });
  assert.equal(call.status, 200, JSON.stringify(call.body));
  const feedback = example('feedback-accepted.json');
  feedback.feedback[0].card = call.body.cards[0].uuid;
  const res = await post('/feedback', feedback);
  assert.deepEqual(res.body, { recorded: 1, repeated: 0 });
}

describe("a model's monitoring and accountability state on its own primary", () => {
  const requests: Record<string, string[]> = { [A]: [], [B]: [] };

  before(async () => {
    for (let round = 0; round < ROUNDS; round++) {
      for (const [model, instance] of [
        [A, (i: number) => ({ ...SICK_VITALS, pulse: 100 + i })],
        [B, (i: number) => news2Row(i)],
      ] as const) {
        const requestId = randomUUID();
        const instances = Array.from({ length: ROWS }, (_, i) => instance(round * ROWS + i));
        const res = await retryingOn503(() => gw.predict(model, keys.client, instances, { 'x-request-id': requestId }));
        assert.equal(res.status, 200, res.text);
        requests[model]?.push(requestId);
      }
    }
    // one outcome per model, joined by request id (a request id names no shard: every shard's log is asked)
    for (const model of [A, B]) {
      const res = await retryingOn503(() =>
        gw.call('POST', '/v1/outcomes', keys.client, {
          requestId: requests[model]?.[0],
          outcome: true,
          observedAt: new Date().toISOString(),
        }),
      );
      assert.equal(res.status, 201, res.text);
      assert.equal(res.body.model, model);
    }
    await cdsFeedback();
    // the shadow's mirrors run after the answers: wait for every pair, then write what the taps counted
    await waitFor(async () => {
      await gw.deps.shadow.flush();
      const r = await gw.call('GET', `/v1/models/${A}/shadow`, keys.client);
      return r.body?.shadows?.[0]?.pairs === ROUNDS * ROWS;
    }, 'every shadow pair');
    await gw.deps.monitoring.recorder?.flush();
  });

  test("each model's windows, shadow aggregates, prediction log, outcomes and feedback are on its own primary", async () => {
    const [globalPort, aPort, bPort] = (await Promise.all(
      [space.global, space.shard(A), space.shard(B)].map(primaryPort),
    )) as [number, number, number];
    const on = new Map(await Promise.all([globalPort, aPort, bPort].map(async (p) => [p, await keysOn(p)] as const)));
    /** the kinds of state (the name's part after the tag) a primary holds under `tag` */
    const kinds = (port: number, tag: string) =>
      new Set(
        (on.get(port) ?? [])
          .filter((k) => k.startsWith(`${tag}:`))
          .map((k) => k.slice(tag.length + 1).replace(/:.*$/, '')),
      );
    const a = kinds(aPort, space.shard(A));
    for (const kind of ['monitor', 'shadow', 'predictions', 'outcomes']) assert.ok(a.has(kind), `${A}: ${kind}`);
    const b = kinds(bPort, space.shard(B));
    for (const kind of ['monitor', 'predictions', 'outcomes', 'cds']) assert.ok(b.has(kind), `${B}: ${kind}`);
    const feedback = (on.get(bPort) ?? []).filter((k) => k.startsWith(`${space.shard(B)}:cds:`));
    assert.ok(feedback.some((k) => k.endsWith(':feedback-counts')) && feedback.some((k) => k.includes(':feedback:')));
    // the outcome's audit entry went with it, into the shard's stream
    assert.ok(a.has('audit') && b.has('audit'), 'outcome audit entries in the shards');
    // nothing of it under the global tag: only what belongs to no model (routing, the shard list, CDS cards, jti)
    const global = kinds(globalPort, space.global);
    for (const kind of ['monitor', 'shadow', 'predictions', 'outcomes']) {
      assert.ok(!global.has(kind), `no ${kind} under ${space.global}: ${[...global].join(', ')}`);
    }
    assert.deepEqual(
      (on.get(globalPort) ?? []).filter((k) => k.startsWith(`${space.global}:cds:`) && !/:cds:(card|jti):/.test(k)),
      [],
      'CDS state under the global tag: cards and token ids only',
    );
    // and the cluster says the same of the slots
    for (const [model, port] of [
      [A, aPort],
      [B, bPort],
    ] as const) {
      const slot = await cluster.keySlot(space.shard(model));
      const node = new Redis({ port, host: '127.0.0.1' });
      try {
        const count = Number(await node.call('CLUSTER', 'COUNTKEYSINSLOT', String(slot)));
        assert.equal(count, (on.get(port) ?? []).filter((k) => k.startsWith(`${space.shard(model)}:`)).length);
      } finally {
        node.disconnect();
      }
    }
  });

  test('the monitoring reports, the shadow comparison and the audit read them back', async () => {
    const a = await retryingOn503(() => gw.call('GET', `/v1/models/${A}/monitoring`, keys.client));
    assert.equal(a.status, 200, a.text);
    const a1 = a.body.versions.find((v: { version: string }) => v.version === '1');
    assert.equal(a1.windows.hour.rows, ROUNDS * ROWS);
    assert.equal(a1.windows.week.byTier.sync, ROUNDS * ROWS);
    assert.equal(a1.outcomes.labelled, 1);

    const b = await retryingOn503(() => gw.call('GET', `/v1/models/${B}/monitoring`, keys.client));
    assert.equal(b.status, 200, b.text);
    const b1 = b.body.versions.find((v: { version: string }) => v.version === '1');
    assert.equal(b1.windows.hour.rows, ROUNDS * ROWS + 1, "the predictions and the CDS call's row");
    assert.deepEqual(b1.windows.hour.overrides.cdsFeedback, { accepted: 1, overridden: 0, reasons: {} });
    assert.equal(b1.outcomes.labelled, 1);
    assert.equal((await gw.deps.cds?.feedback.counts(B))?.['1']?.accepted, 1);

    const shadow = await retryingOn503(() => gw.call('GET', `/v1/models/${A}/shadow`, keys.client));
    assert.equal(shadow.status, 200, shadow.text);
    assert.equal(shadow.body.shadows[0].version, '2');
    assert.equal(shadow.body.shadows[0].pairs, ROUNDS * ROWS);
    assert.equal(shadow.body.shadows[0].latencyMs.shadow.samples, ROUNDS);
    assert.equal((await gw.deps.shadow.scorePairs(A))[0]?.pairs.length, ROUNDS * ROWS);

    const recorded = (await allAudit(gw, keys.admin)).filter((e) => e.action === 'outcome.record');
    assert.deepEqual(recorded.map((e) => e.model).sort(), [A, B]);
  });
});
