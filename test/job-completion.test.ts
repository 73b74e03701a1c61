/**
 * A worker's hold or release of a job and BullMQ's completion of it leave for Redis together: the completion is sent
 * before Redis has answered the transition (one round trip for both, not two), on the same connection, so Redis runs
 * the transition first. The gateway reaches Redis through a relay (test/support/relay.ts) that, once the transition
 * is sent, keeps Redis's answers on that connection back and shows what the worker sends meanwhile.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { KeySpace } from '../src/platform/keyspace.ts';
import {
  allAudit,
  buildGateway,
  makeKeys,
  NEWS2_INSTANCE,
  NOTES,
  REDIS_URL,
  RedisRelay,
  removeDir,
  type TestGateway,
  tempModels,
  waitFor,
  waitForState,
} from './support/index.ts';

const keys = makeKeys();
let relay: RedisRelay;
let gw: TestGateway;
let modelsDir: string | undefined;

before(async () => {
  modelsDir = await tempModels({
    news2: null,
    'note-triage': (m) => {
      m.review = { policy: 'always' };
    },
  });
  relay = new RedisRelay();
  await relay.start();
  gw = await buildGateway({ keys, modelsDir, redisUrl: relay.url, workers: ['inference'] });
});
after(async () => {
  relay?.letReplies();
  await gw?.close();
  await relay?.close();
  await removeDir(modelsDir);
});

/** Submits, waits for the transition that sets `marker`, and checks BullMQ's completion followed it unanswered. */
async function completionRidesWith(marker: string, submit: () => Promise<string>): Promise<string> {
  const sent = relay.holdRepliesAfter(marker);
  const id = await submit();
  await sent;
  try {
    // BullMQ's moveToFinished names the field it sets on the job: `returnvalue`, and the job's id
    await waitFor(
      () => relay.sentAfterMarker.includes('returnvalue') && relay.sentAfterMarker.includes(id),
      "BullMQ's completion sent while the transition's answer is still held back",
    );
  } finally {
    relay.letReplies();
  }
  await waitFor(
    async () => (await (await gw.gateway.services.queues.inference.getJob(id))?.getState()) === 'completed',
    'the job completed in BullMQ',
  );
  return id;
}

describe('a job outcome and its BullMQ completion in one round trip', () => {
  test('a release: completed behind it, released once, counted and audited once the answer comes', async () => {
    const id = await completionRidesWith('releasedAt', async () => {
      const res = await gw.predict('news2', keys.client, [NEWS2_INSTANCE], { prefer: 'respond-async' });
      assert.equal(res.status, 202, res.text);
      return res.body.id as string;
    });
    const job = await waitForState(gw, keys.client, id, 'released');
    assert.equal(job.result.output.predictions.length, 1);
    assert.equal((await gw.gateway.services.queues.inference.getJob(id))?.returnvalue, 'released');
    await waitFor(
      async () => /triage_jobs_total\{model="news2",state="released"\} 1\b/.test(await gw.metrics()),
      'the release counted',
    );
    const audit = (await allAudit(gw, keys.admin)).filter((e) => e.target === id);
    assert.deepEqual(
      audit.map((e) => e.action),
      ['job.release'],
    );
  });

  test('a hold: completed behind it, waiting for review once', async () => {
    const id = await completionRidesWith('heldAt', async () => {
      const res = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, { input: { text: NOTES.urgent } });
      assert.equal(res.status, 202, res.text);
      return res.body.id as string;
    });
    await waitForState(gw, keys.client, id, 'awaiting_review');
    assert.equal((await gw.gateway.services.queues.inference.getJob(id))?.returnvalue, 'held');
    assert.equal(await gw.gateway.services.store.pendingCount(['note-triage']), 1);
    await waitFor(
      async () => /triage_jobs_total\{model="note-triage",state="awaiting_review"\} 1\b/.test(await gw.metrics()),
      'the hold counted',
    );
  });

  test('a release whose write fails: the job, completed behind it, runs again and is released once', async () => {
    // the worker's release reaches Redis naming another job key, one that holds a string: Redis refuses the script
    // before it writes anything (WRONGTYPE), while BullMQ's completion behind it succeeds
    const stray = `${new KeySpace(gw.prefix).shard('news2')}:job:ffffffff-ffff-4fff-8fff-ffffffffffff`;
    const redis = new Redis(REDIS_URL);
    try {
      await redis.set(stray, 'not a job record');
      const rewritten = relay.rewriteOnce('releasedAt', /:job:[0-9a-f-]{36}/, stray.slice(stray.indexOf(':job:')));
      const res = await gw.predict('news2', keys.client, [NEWS2_INSTANCE], { prefer: 'respond-async' });
      assert.equal(res.status, 202, res.text);
      const id = res.body.id as string;
      await rewritten;
      await waitForState(gw, keys.client, id, 'released');
      const record = await gw.gateway.services.store.get(id);
      assert.equal(record?.attempts, 2, 'claimed again after the failed write');
      await waitFor(
        async () => (await (await gw.gateway.services.queues.inference.getJob(id))?.getState()) === 'completed',
        'the re-run completed in BullMQ',
      );
      assert.equal((await gw.gateway.services.queues.inference.getJob(id))?.attemptsMade, 2);
      const audit = (await allAudit(gw, keys.admin)).filter((e) => e.target === id);
      assert.deepEqual(
        audit.map((e) => e.action),
        ['job.release'],
      );
    } finally {
      await redis.del(stray);
      redis.disconnect();
    }
  });
});
