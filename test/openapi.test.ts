/**
 * /openapi.json: valid OpenAPI 3.1 (checked against the official schemas), describing every route the app serves and
 * nothing it does not; the README's request examples validate against it; the schemas in it are the ones the routes
 * validate with; the reference page works under its own Content-Security-Policy and no other response is relaxed.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { DOCS_CSP } from '../routes/openapi.ts';
import { predictRequest } from '../routes/predict.ts';
import { compiledParser, parseBody, TRIAGE_VERSION } from '../src/platform/openapi.ts';
import { buildGateway, problemBody, type TestGateway } from './support/index.ts';

interface Operation {
  requestBody?: { content: Record<string, { schema: object }> };
  responses: Record<string, unknown>;
}
type Document = { openapi: string; info: { version: string }; paths: Record<string, Record<string, Operation>> };

/** The curl commands of the README's "Try it" section that send a body: method, path and the body. */
async function readmeExamples(): Promise<{ method: string; path: string; body: unknown }[]> {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const start = readme.indexOf('### Try it');
  const section = readme.slice(start, readme.indexOf('\n## ', start));
  const commands = section.replaceAll(/\\\n\s*/g, ' ').split('\n');
  const examples = [];
  for (const line of commands) {
    const body = /-d '([^']+)'/.exec(line)?.[1];
    const path = /localhost:8080(\/[^\s'"]*)/.exec(line)?.[1];
    if (!body || !path) continue;
    const method = /-X (\w+)/.exec(line)?.[1]?.toLowerCase() ?? 'post';
    examples.push({ method, path, body: JSON.parse(body) });
  }
  return examples;
}

describe('OpenAPI document and reference page', () => {
  let t: TestGateway;
  let doc: Document;

  before(async () => {
    t = await buildGateway();
    const res = await t.app.request('/openapi.json');
    assert.equal(res.status, 200);
    doc = (await res.json()) as Document;
  });
  after(async () => {
    await t.close();
  });

  it('is a valid OpenAPI 3.1 document', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
    assert.equal(validator.version, '3.1');
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(doc.info.version, pkg.version);
    assert.equal(TRIAGE_VERSION, pkg.version);
  });

  it('describes every route the app serves, and only those', () => {
    const served = new Set(
      t.app.routes
        // the review desk's pages are a browser UI (HTML forms, a session cookie), not the JSON API described here
        .filter((r) => r.method !== 'ALL' && !r.path.startsWith('/desk'))
        .map((r) => `${r.method.toLowerCase()} ${r.path.replaceAll(/:(\w+)/g, '{$1}')}`),
    );
    const described = new Set(
      Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`)),
    );
    assert.ok(served.size >= 35, `only ${served.size} routes found`);
    assert.deepEqual([...served].filter((r) => !described.has(r)).sort(), [], 'served but not described');
    assert.deepEqual([...described].filter((r) => !served.has(r)).sort(), [], 'described but not served');
  });

  it("the README's examples validate against the document", async () => {
    const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
    const templates = Object.keys(doc.paths).map((p) => ({
      p,
      re: new RegExp(`^${p.replaceAll(/\{\w+\}/g, '[^/]+')}$`),
    }));
    const examples = await readmeExamples();
    assert.ok(examples.length >= 6, `only ${examples.length} examples found`);
    for (const ex of examples) {
      const template = templates.find((tp) => tp.re.test(ex.path))?.p;
      assert.ok(template, `${ex.path}: not in the document`);
      const schema = doc.paths[template]?.[ex.method]?.requestBody?.content['application/json']?.schema;
      assert.ok(schema, `${ex.method} ${template}: no request body described`);
      const validate = ajv.compile(schema);
      assert.ok(validate(ex.body), `${ex.method} ${ex.path}: ${ajv.errorsText(validate.errors)}`);
    }
  });

  it('the documented schema is the one the route validates with', async () => {
    const schema = doc.paths['/v1/models/{model}/predict']?.post?.requestBody?.content['application/json']?.schema;
    const validate = new Ajv2020({ strict: false }).compile(schema as object);
    const misspelt = { instance: [{ spo2: 93 }] };
    assert.equal(validate(misspelt), false);
    const res = await t.app.request('/v1/models/news2/predict', {
      method: 'POST',
      headers: { authorization: `Bearer ${t.keys.client}`, 'content-type': 'application/json' },
      body: JSON.stringify(misspelt),
    });
    assert.equal(res.status, 400);
    const body = await problemBody(res);
    assert.equal(body.code, 'invalid_request');
    assert.equal(body.detail, 'unknown field(s): only "instances" is allowed');
  });

  it("predict's compiled parser gives zod's verdicts and messages", () => {
    const compiled = compiledParser(predictRequest);
    const outcome = (parse: (b: unknown) => unknown, b: unknown) => {
      try {
        return { ok: parse(b) };
      } catch (err) {
        return { error: (err as Error).message };
      }
    };
    const bodies = [
      { instances: [{ spo2: 93 }] },
      { instances: [{ spo2: 93 }, { spo2: null }] },
      { instances: [null, 1, 'x', [1]] },
      { instances: [] },
      { instances: {} },
      { instances: [{}], extra: 1 },
      {},
      [],
      null,
      'instances',
    ];
    for (const b of bodies)
      assert.deepEqual(
        outcome(compiled, b),
        outcome((x) => parseBody(predictRequest, x), b),
      );
  });

  it('the reference page runs its own scripts under a policy relaxed for it alone', async () => {
    const page = await t.app.request('/docs');
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('content-security-policy'), DOCS_CSP);
    assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
    const html = await page.text();
    // no inline script: the policy allows scripts from 'self' only
    const scripts = [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
    assert.ok(scripts.length >= 2);
    for (const [, attrs, inline] of scripts) {
      assert.equal(inline?.trim(), '');
      const src = /src="([^"]+)"/.exec(attrs ?? '')?.[1] ?? '';
      assert.match(src, /^\/docs\//);
      const asset = await t.app.request(src);
      assert.equal(asset.status, 200, src);
      assert.match(asset.headers.get('content-type') ?? '', /^text\/javascript/);
    }
    const init = await (await t.app.request('/docs/init.js')).text();
    assert.match(init, /url: '\/openapi\.json'/);
    const css = await t.app.request('/docs/swagger-ui.css');
    assert.match(css.headers.get('content-type') ?? '', /^text\/css/);
    assert.ok((await css.arrayBuffer()).byteLength > 10_000);
    assert.equal((await t.app.request('/docs/..%2Fpackage.json')).status, 404);
    // everything else keeps the API's policy
    for (const path of ['/openapi.json', '/healthz', '/docs/nope.js']) {
      const res = await t.app.request(path);
      assert.equal(res.headers.get('content-security-policy'), "default-src 'none'; frame-ancestors 'none'", path);
    }
  });
});
