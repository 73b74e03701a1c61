/**
 * Async documents as FHIR: a DocumentReference as the job's input itself, entered-in-error documents refused, every
 * text attachment read, and callbacks that carry the caller's correlation, the reviewer and the reason, and absolute
 * URLs (through a real receiver verifying the signature).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ASYNC_WORKERS,
  buildGateway,
  makeKeys,
  NOTES,
  Receiver,
  type TestGateway,
  waitFor,
  waitForState,
} from './support/index.ts';

const keys = makeKeys();
let gw: TestGateway;
let receiver: Receiver;

before(async () => {
  gw = await buildGateway({ keys, workers: ASYNC_WORKERS, only: ['note-triage'] });
  receiver = await Receiver.start(keys.secrets.client);
});
after(async () => {
  await receiver?.close();
  await gw?.close();
});

const b64 = (s: string) => Buffer.from(s).toString('base64');
const text = (s: string, contentType = 'text/plain') => ({ attachment: { contentType, data: b64(s) } });
const docRef = (id: string, content: unknown[], extra: Record<string, unknown> = {}) => ({
  resourceType: 'DocumentReference',
  id,
  status: 'current',
  subject: { reference: 'Patient/p1' },
  content,
  ...extra,
});
const submit = (body: unknown) => gw.call('POST', '/v1/models/note-triage/jobs', keys.client, body);

/** The job's output once a reviewer approves it (note-triage holds every result). */
async function approved(id: string): Promise<Record<string, unknown>> {
  await waitForState(gw, keys.client, id, 'awaiting_review');
  const d = await gw.call('POST', `/v1/reviews/${id}/decision`, keys.reviewer, {
    decision: 'approve',
    reason: 'agree: urgent cardiology review',
  });
  assert.equal(d.status, 200, d.text);
  return (await waitForState(gw, keys.client, id, 'released')).result.output;
}

describe('a DocumentReference as the input', () => {
  test('taken directly, scored as its text is, and wrapped the same', async () => {
    const direct = await submit({ input: docRef('doc-direct', [text(NOTES.urgent)]) });
    assert.equal(direct.status, 202, direct.text);
    const plain = await submit({ input: { text: NOTES.urgent } });
    assert.deepEqual(await approved(direct.body.id), await approved(plain.body.id));
  });

  test('posted as the body itself, in the FHIR asynchronous pattern (Prefer: respond-async)', async () => {
    const r = await gw.call(
      'POST',
      '/v1/models/note-triage/predict',
      keys.client,
      docRef('doc-body', [text(NOTES.urgent)]),
      { prefer: 'respond-async', 'content-type': 'application/fhir+json' },
    );
    assert.equal(r.status, 202, r.text);
    const plain = await submit({ input: { text: NOTES.urgent } });
    assert.deepEqual(await approved(r.body.id), await approved(plain.body.id));
  });

  test('every text attachment is read, not only content[0]; a PDF rendition is skipped', async () => {
    // the urgent finding is only in the second attachment: scoring content[0] alone would call it no action
    const split = docRef('doc-split', [
      { attachment: { contentType: 'application/pdf', data: b64('%PDF-1.7') } },
      text('Chest X-ray normal.'),
      text(
        'Patient reports central chest pain radiating to the left arm, troponin raised. Urgent cardiology review.',
        'text/markdown',
      ),
    ]);
    const r = await submit({ input: split });
    assert.equal(r.status, 202, r.text);
    const whole = await submit({
      input: {
        text: 'Chest X-ray normal.\n\nPatient reports central chest pain radiating to the left arm, troponin raised. Urgent cardiology review.',
      },
    });
    const first = await submit({ input: { text: 'Chest X-ray normal.' } });
    const [a, b, c] = [await approved(r.body.id), await approved(whole.body.id), await approved(first.body.id)];
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  test('entered-in-error documents and unread text are refused, never a job', async () => {
    for (const [doc, why] of [
      [docRef('e1', [text(NOTES.urgent)], { status: 'entered-in-error' }), /entered-in-error/],
      [docRef('e2', [text(NOTES.urgent)], { docStatus: 'entered-in-error' }), /entered-in-error/],
      [
        docRef('e3', [text(NOTES.urgent), { attachment: { contentType: 'text/plain', url: 'https://ehr/doc/2' } }]),
        /content\[1\].*not fetched/,
      ],
    ] as const) {
      for (const input of [doc, { document: doc }]) {
        const r = await submit({ input });
        assert.equal(r.status, 400, r.text);
        assert.equal(r.body.code, 'invalid_input');
        assert.match(r.body.detail, why);
      }
    }
  });
});

describe('callbacks carry the caller’s correlation', () => {
  test('idempotency key, document id, reference, the reviewer and the reason, and absolute URLs', async () => {
    const r = await gw.call(
      'POST',
      '/v1/models/note-triage/jobs',
      keys.client,
      {
        input: docRef('note-778', [text(NOTES.urgent)]),
        callbackUrl: receiver.url(),
        reference: 'ORDER-2231/enc-19',
      },
      { 'idempotency-key': 'ehr-note-778-v1' },
    );
    assert.equal(r.status, 202, r.text);
    await approved(r.body.id);
    await waitFor(() => receiver.eventsFor(r.body.id).length === 1, 'the released callback');
    const [event] = receiver.eventsFor(r.body.id);
    const data = event?.data as {
      correlation: unknown;
      decision: { by: { id: string }; reason: string };
      statusUrl: string;
    };
    assert.deepEqual(data.correlation, {
      idempotencyKey: 'ehr-note-778-v1',
      documentId: 'note-778',
      reference: 'ORDER-2231/enc-19',
    });
    assert.equal(data.decision.by.id, 'reviewer');
    assert.equal(data.decision.reason, 'agree: urgent cardiology review');
    assert.equal(data.statusUrl, `http://localhost/v1/jobs/${r.body.id}`);
    assert.equal(new URL(data.statusUrl).pathname, `/v1/jobs/${r.body.id}`);
    // the same key with another reference is another request: a conflict, never a second job
    const again = await gw.call(
      'POST',
      '/v1/models/note-triage/jobs',
      keys.client,
      { input: docRef('note-778', [text(NOTES.urgent)]), callbackUrl: receiver.url(), reference: 'ORDER-9' },
      { 'idempotency-key': 'ehr-note-778-v1' },
    );
    assert.equal(again.status, 409, again.text);
  });
});
