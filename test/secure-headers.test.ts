/**
 * Issue 10, item 6: every response carries the secure headers (nosniff above all), and the ones with patient data
 * `Cache-Control: no-store`: a held job, a review, the audit trail, a prediction, a problem, the ops endpoints.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SECURE_HEADERS } from '../src/platform/secure-headers.ts';
import {
  buildGateway,
  deletePrefix,
  makeKeys,
  makePrefix,
  NEWS2_INSTANCE,
  NOTES,
  type Reply,
  type TestGateway,
  type TestKeys,
  waitForState,
} from './support/index.ts';

const prefix = makePrefix('secure-headers');
let keys: TestKeys;
let gw: TestGateway;
let jobId: string;

before(async () => {
  keys = makeKeys();
  gw = await buildGateway({ prefix, keys, workers: ['inference'], only: ['news2', 'note-triage'] });
  const res = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, { input: { text: NOTES.urgent } });
  assert.equal(res.status, 202, res.text);
  jobId = res.body.id;
  await waitForState(gw, keys.client, jobId, 'awaiting_review');
});
after(async () => {
  await gw?.close();
  await deletePrefix(prefix);
});

function assertSecure(res: Reply, what: string): void {
  for (const [name, value] of Object.entries(SECURE_HEADERS)) {
    assert.equal(res.headers.get(name), value, `${what}: ${name}`);
  }
}

describe('secure response headers', () => {
  test('patient data: a job, a review, the review queue, the audit trail, a prediction', async () => {
    const calls: Array<[string, string, string, unknown?]> = [
      ['GET', `/v1/jobs/${jobId}`, keys.client],
      ['GET', `/v1/reviews/${jobId}`, keys.reviewer],
      ['GET', '/v1/reviews', keys.reviewer],
      ['GET', '/v1/audit', keys.admin],
      ['POST', '/v1/models/news2/predict', keys.client, { instances: [NEWS2_INSTANCE] }],
      [
        'POST',
        '/v2/models/news2/infer',
        keys.client,
        {
          inputs: Object.entries(NEWS2_INSTANCE).map(([name, value]) => ({
            name,
            shape: [1],
            datatype: typeof value === 'boolean' ? 'BOOL' : typeof value === 'string' ? 'BYTES' : 'FP32',
            data: [value],
          })),
        },
      ],
    ];
    for (const [method, url, key, body] of calls) {
      const res = await gw.call(method, url, key, body);
      assert.equal(res.status, 200, `${method} ${url}: ${res.text}`);
      assertSecure(res, `${method} ${url}`);
      if (url.includes('/predict') || url.includes('/infer')) {
        // a scoring names what scored it, on every door
        assert.equal(res.headers.get('x-model-name'), 'news2');
        assert.equal(res.headers.get('x-model-version'), '1');
        assert.equal(res.headers.get('x-request-id'), res.body.requestId ?? res.body.parameters.request_id);
      }
    }
  });

  test('problems, 404s, 405s and the ops endpoints carry them too', async () => {
    const calls: Array<[string, string, string | undefined]> = [
      ['GET', '/v1/jobs/00000000-0000-4000-8000-000000000000', keys.client],
      ['GET', '/v1/jobs/x', undefined],
      ['PATCH', '/v1/models', keys.client],
      ['GET', '/nowhere', undefined],
      ['GET', '/healthz', undefined],
      ['GET', '/readyz', undefined],
      ['GET', '/metrics', undefined],
      ['GET', '/v1/models/news2', keys.client],
    ];
    for (const [method, url, key] of calls) assertSecure(await gw.call(method, url, key), `${method} ${url}`);
  });
});
