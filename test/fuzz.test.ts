/**
 * Issue 10, item 3: no 5xx from hostile input. fast-check drives every endpoint with hostile bodies (deep nesting,
 * malformed and oversized JSON, wrong types inside valid envelopes), headers and path and query parameters, and
 * asserts: never a 5xx, every 4xx problem+json (an OperationOutcome on the Bulk Data endpoints) with a known code, the gateway healthy afterwards. Seeded and bounded
 * (FUZZ_SEED and FUZZ_RUNS override), so a failure replays exactly.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { outcomeCode } from '../src/fhir/operation-outcome.ts';
import { problemCodes } from '../src/platform/errors.ts';
import { ENDPOINTS, type Endpoint, NEWS2, startTour, type Tour } from './tour-support.ts';

const SEED = Number(process.env.FUZZ_SEED ?? 20261129);
const RUNS_PER_ENDPOINT = Number(process.env.FUZZ_RUNS ?? 30);

let tour: Tour;
before(async () => {
  tour = await startTour('fuzz');
});
after(() => tour?.close());

// ---------------------------------------------------------------------------------------------------------------
// Arbitraries

const nasty = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.constantFrom(
    '',
    ' ',
    '..',
    '../..',
    '%00',
    '\u0000',
    '%2e%2e%2f',
    '/etc/passwd',
    'null',
    '[]',
    '{}',
    '-1',
    '1e309',
  ),
  fc.constantFrom(
    '18446744073709551616-0',
    '18446744073709551615-18446744073709551615',
    '99999999999999999999-99999999999999999999',
    '0-0',
    'NaN',
    '１２３',
  ),
  fc.integer({ min: 1, max: 3000 }).map((n) => 'x'.repeat(n)),
);

const depth = fc.oneof(fc.integer({ min: 65, max: 20_000 }), fc.constantFrom(10_000, 100_000));
/** `prefix` + a chain `n` levels deep + `suffix`: deep nesting at the one place a valid envelope lets it through */
const deep = (prefix: string, suffix: string, open = '[', close = ']') =>
  depth.map((n) => `${prefix}${open.repeat(n)}1${close.repeat(n)}${suffix}`);

const NOTE = Buffer.from('Crushing chest pain, troponin raised.').toString('base64');
const DOCUMENT_PREFIX =
  '{"input":{"document":{"resourceType":"DocumentReference","status":"current",' +
  `"content":[{"attachment":{"contentType":"text/plain","data":"${NOTE}"}}],"extension":`;

/** A JSON value with hostile leaves: wrong types, huge numbers, long strings, prototype-ish keys. */
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  nasty,
  fc.constantFrom(Number.MAX_VALUE, -0, 1e308, { __proto__: { polluted: true } }, { constructor: { prototype: {} } }),
  fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 300 }),
);

/** Bodies shaped like each endpoint's, with hostile leaves. */
function envelope(e: Endpoint): fc.Arbitrary<unknown> {
  const v = hostileValue;
  if (e.path.endsWith('/predict'))
    return fc.record({ instances: fc.oneof(v, fc.array(fc.oneof(v, fc.constant(NEWS2)))) });
  if (e.path.endsWith('/jobs'))
    return fc.record(
      { input: fc.oneof(v, fc.record({ text: v }), fc.record({ document: v })), callbackUrl: v, idempotencyKey: v },
      { requiredKeys: ['input'] },
    );
  if (e.path.endsWith('/decision'))
    return fc.record({ decision: fc.oneof(v, fc.constantFrom('approve', 'reject', 'amend')), reason: v, output: v });
  if (e.path.endsWith('/batches'))
    return fc.record({ input: fc.oneof(v, fc.record({ path: v, format: v })), asOf: v }, { requiredKeys: ['input'] });
  if (e.path.startsWith('/v1/schedules'))
    return fc.record({
      model: fc.oneof(v, fc.constant('news2')),
      cron: v,
      timezone: v,
      input: fc.oneof(v, fc.record({ path: v, format: fc.constant('ndjson') })),
      readers: v,
    });
  return fc.record({ version: v, weight: v, reason: v, versions: v, sampleRate: v }, { requiredKeys: [] });
}

/** A raw body text: hostile JSON, deep nesting (alone or inside a valid envelope), malformed text. */
/** Deep nesting where each endpoint's envelope lets it reach past validation. */
function deepInEnvelope(e: Endpoint): fc.Arbitrary<string> {
  if (e.path.endsWith('/jobs')) return deep(DOCUMENT_PREFIX, '}}}');
  if (e.path.endsWith('/decision'))
    return deep('{"decision":"amend","reason":"r","output":{"category":"urgent","x":', '}}');
  if (e.path.endsWith('/predict')) return deep('{"instances":[', ']}');
  return deep('{"reason":', '}', '{"a":', '}');
}

/** A raw body text: hostile JSON, deep nesting (alone or inside a valid envelope), malformed text. */
function bodyText(e: Endpoint): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: envelope(e).map((b) => JSON.stringify(b) ?? 'null'), weight: 4 },
    { arbitrary: deepInEnvelope(e), weight: 3 },
    { arbitrary: hostileValue.map((b) => JSON.stringify(b) ?? 'null'), weight: 1 },
    { arbitrary: fc.oneof(deep('', ''), deep('', '', '{"a":', '}')), weight: 1 },
    { arbitrary: fc.string({ maxLength: 200 }), weight: 1 },
    {
      arbitrary: fc.constantFrom('', '{', '{"a":1', '\u0000', '{"instances":[1,2,3]', `[${'"x",'.repeat(10_000)}"x"]`),
      weight: 1,
    },
  );
}

const headerValue = fc.oneof(
  fc.stringMatching(/^[\x21-\x7e]{0,60}$/),
  fc.constantFrom('MRN-99887766', '0', '-5', '1e9', '99999999999999999999', 'respond-async', 'respond-async, wait=1'),
);

interface Case {
  endpoint: Endpoint;
  params: Record<string, string>;
  query: string;
  key: 'right' | 'client' | 'reviewer' | 'admin' | 'garbage' | 'none';
  contentType: string;
  headers: Record<string, string>;
  body: string | undefined;
}

function caseFor(e: Endpoint): fc.Arbitrary<Case> {
  const names = [...e.path.matchAll(/:(\w+)/g)].map((m) => m[1] as string);
  const seeded = (name: string) =>
    ({
      model: fc.constantFrom('news2', 'note-triage', 'readmission', 'deterioration'),
      job: fc.constant(tour.seeded.job),
      run: fc.constant(tour.seeded.run),
      file: fc.constantFrom('output.ndjson', 'errors.ndjson', 'manifest.json', 'output.shadow-2.ndjson'),
      event: fc.constant('evt-00000000-0000-0000-0000-000000000000-released'),
      schedule: fc.constantFrom('fuzz-schedule', 'readmission-nightly'),
      service: fc.constantFrom('news2-patient-view', 'deterioration-patient-view', 'news2-order-sign'),
    })[name] ?? fc.constant('x');
  const params = fc.record(
    Object.fromEntries(
      names.map((n) => [
        n,
        fc.oneof(
          seeded(n),
          nasty.map((s) => encodeURIComponent(s) || 'x'),
        ),
      ]),
    ),
  ) as fc.Arbitrary<Record<string, string>>;
  const query = fc
    .dictionary(fc.constantFrom('after', 'limit', 'offset', 'model', 'x'), nasty, { maxKeys: 3 })
    .map((q) => new URLSearchParams(q as Record<string, string>).toString());
  return fc.record({
    endpoint: fc.constant(e),
    params,
    query,
    key: fc.oneof(
      { arbitrary: fc.constant('right' as const), weight: 6 },
      { arbitrary: fc.constantFrom('client', 'reviewer', 'admin', 'garbage', 'none'), weight: 4 },
    ),
    contentType: fc.oneof(
      { arbitrary: fc.constantFrom('application/json', 'application/fhir+json'), weight: 5 },
      {
        arbitrary: fc.constantFrom('text/plain', '', 'application/json; charset=latin1', 'multipart/form-data'),
        weight: 1,
      },
    ),
    headers: fc.dictionary(
      fc.constantFrom('x-request-id', 'x-request-timeout-ms', 'x-subject-key', 'prefer', 'idempotency-key', 'accept'),
      headerValue,
      { maxKeys: 4 },
    ),
    body: e.body ? fc.option(bodyText(e), { nil: undefined, freq: 8 }) : fc.constant(undefined),
  });
}

// ---------------------------------------------------------------------------------------------------------------

const known = new Set(Object.keys(problemCodes));

describe('the 500s the issue found are 400s at the door', () => {
  const deepBody = (prefix: string, suffix: string, n = 10_000) =>
    `${prefix}${'['.repeat(n)}1${']'.repeat(n)}${suffix}`;

  test('a DocumentReference nested 10,000 levels deep', async () => {
    const res = await tour.call(
      'POST',
      '/v1/models/note-triage/jobs',
      tour.keys.client,
      deepBody(DOCUMENT_PREFIX, '}}}'),
    );
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.code, 'invalid_request');
  });

  test('an amended output nested 10,000 levels deep', async () => {
    const body = deepBody('{"decision":"amend","reason":"r","output":{"category":"urgent","x":', '}}');
    const res = await tour.call('POST', `/v1/reviews/${tour.seeded.job}/decision`, tour.keys.reviewer, body);
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.code, 'invalid_request');
  });

  test('an audit cursor above 2^64-1', async () => {
    for (const after of ['18446744073709551616-0', '0-18446744073709551616', '99999999999999999999-0']) {
      const res = await tour.call('GET', `/v1/audit?after=${after}`, tour.keys.admin);
      assert.equal(res.status, 400, res.text);
    }
    const edge = await tour.call('GET', '/v1/audit?after=18446744073709551615-18446744073709551615', tour.keys.admin);
    assert.equal(edge.status, 200, edge.text);
  });
});

describe('fuzz: hostile input never gets a 5xx', () => {
  test('every endpoint, hostile bodies, headers and parameters', async (t) => {
    let requests = 0;
    const statuses = new Map<number, number>();
    for (const e of ENDPOINTS) {
      await fc.assert(
        fc.asyncProperty(caseFor(e), async (c) => {
          const url = e.path.replace(/:(\w+)/g, (_, n: string) => c.params[n] ?? 'x') + (c.query ? `?${c.query}` : '');
          const keyOf = {
            right: e.role === 'none' ? undefined : tour.keys[e.role],
            none: undefined,
            garbage: 'trg_nope',
          };
          const key = c.key in keyOf ? keyOf[c.key as keyof typeof keyOf] : tour.keys[c.key as 'client'];
          const headers: Record<string, string> = { ...c.headers };
          // deadlines only at or above the budget: a shorter one may legitimately end in a 504 on a slow machine
          if (headers['x-request-timeout-ms'] !== undefined && /^\d{1,6}$/.test(headers['x-request-timeout-ms'])) {
            headers['x-request-timeout-ms'] = '100000';
          }
          if (c.body !== undefined && c.contentType) headers['content-type'] = c.contentType;
          const res = await tour.call(e.method, url, key, c.body, headers);
          requests++;
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          const what = `${e.method} ${url.slice(0, 120)} → ${res.status} ${res.text.slice(0, 200)}`;
          assert.ok(res.status < 500, what);
          if (res.status >= 400) {
            // the Bulk Data endpoints answer with an OperationOutcome carrying the same stable code
            const fhir = /^\/v1\/(models\/[^/]+\/)?batches|^\/fhir\//.test(e.path);
            const type = fhir ? /^application\/fhir\+json/ : /^application\/problem\+json/;
            assert.match(res.headers.get('content-type') ?? '', type, what);
            assert.ok(known.has(fhir ? outcomeCode(res.body) : res.body?.code), `unknown code: ${what}`);
          }
        }),
        { seed: SEED, numRuns: RUNS_PER_ENDPOINT, endOnFailure: true },
      );
    }
    const fiveXx = [...statuses].filter(([s]) => s >= 500).reduce((n, [, k]) => n + k, 0);
    t.diagnostic(
      `fuzz: ${requests} requests over ${ENDPOINTS.length} endpoints, seed ${SEED}, ${fiveXx} 5xx; ` +
        `statuses ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}`,
    );
    assert.equal(requests, ENDPOINTS.length * RUNS_PER_ENDPOINT);
  });

  test('the gateway is still healthy and still scores', async () => {
    assert.equal((await tour.call('GET', '/healthz', undefined)).status, 200);
    assert.equal((await tour.call('GET', '/readyz', undefined)).status, 200);
    // a deadline refusal (504) is the gateway working as designed after a burst: it must score again right after
    let res = await tour.call('POST', '/v1/models/news2/predict', tour.keys.client, { instances: [NEWS2] });
    for (let tries = 1; res.status === 504 && tries < 10; tries++) {
      res = await tour.call('POST', '/v1/models/news2/predict', tour.keys.client, { instances: [NEWS2] });
    }
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.predictions.length, 1);
  });
});
