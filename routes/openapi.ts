import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Hono } from 'hono';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { openApiDocument, type RouteDoc, TRIAGE_VERSION } from '../src/platform/openapi.ts';
import { adminDocs } from './admin.ts';
import { batchReviewDocs } from './batch-reviews.ts';
import { batchDocs } from './batches.ts';
import { cdsHooksDocs } from './cds-hooks.ts';
import { fhirDocs } from './fhir.ts';
import { opsDocs } from './health.ts';
import { hl7Docs } from './hl7.ts';
import { jobDocs } from './jobs.ts';
import { modelDocs } from './models.ts';
import { monitoringDocs } from './monitoring.ts';
import { oipDocs } from './oip.ts';
import { outcomeDocs } from './outcomes.ts';
import { predictDocs } from './predict.ts';
import { releaseDocs } from './releases.ts';
import { reviewDocs } from './reviews.ts';
import { scheduleDocs } from './schedules.ts';
import { suspensionDocs } from './suspensions.ts';
import { thresholdChangeDocs } from './threshold-changes.ts';

const docsDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/openapi.json',
    summary: 'This document (OpenAPI 3.1)',
    tag: 'docs',
    auth: 'public',
    responses: { 200: { description: 'the OpenAPI document', type: 'application/json' } },
  },
  {
    method: 'get',
    path: '/docs',
    summary: 'The API reference page (Swagger UI, served by the gateway)',
    tag: 'docs',
    auth: 'public',
    responses: { 200: { description: 'HTML', type: 'text/html' } },
  },
  {
    method: 'get',
    path: '/docs/{asset}',
    summary: "The reference page's script and styles",
    tag: 'docs',
    auth: 'public',
    responses: { 200: { description: 'a script or style sheet', type: 'text/javascript' } },
    errors: ['not_found'],
  },
];

/** Every route the gateway serves, as the OpenAPI document describes it (a test holds the app to this list). */
export const routeDocs: readonly RouteDoc[] = [
  ...opsDocs,
  ...modelDocs,
  ...predictDocs,
  ...jobDocs,
  ...reviewDocs,
  ...batchReviewDocs,
  ...adminDocs,
  ...batchDocs,
  ...scheduleDocs,
  ...releaseDocs,
  ...suspensionDocs,
  ...thresholdChangeDocs,
  ...monitoringDocs,
  ...outcomeDocs,
  ...hl7Docs,
  ...oipDocs,
  ...fhirDocs,
  ...cdsHooksDocs,
  ...docsDocs,
];

/**
 * The reference page runs Swagger UI's own scripts, from the gateway (no CDN), so its policy allows scripts and
 * styles from 'self' (Swagger UI sets inline style attributes), fetches to 'self' (the document, "try it out") and
 * data: images (its icons). Every other response keeps `default-src 'none'`.
 */
export const DOCS_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Triage API</title><link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script></body>
</html>
`;

// an inline script would need 'unsafe-inline' or a hash: the initialiser is a file of its own
const INIT = `window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui', validatorUrl: null, deepLinking: true });
`;

const ASSETS: Record<string, string> = {
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'swagger-ui.css': 'text/css; charset=utf-8',
};

/** `/openapi.json` (generated from the routes' zod schemas) and the reference page that renders it. */
export function openApiRoutes(_deps: AppDeps) {
  const app = new Hono<AppEnv>();
  let document: string | undefined;
  const assets = new Map<string, Promise<Buffer>>();
  const dist = () => join(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'), '..');

  app.get('/openapi.json', (c) => {
    document ??= JSON.stringify(openApiDocument(routeDocs, TRIAGE_VERSION));
    return c.body(document, 200, { 'content-type': 'application/json' });
  });

  app.get('/docs', (c) => {
    c.set('contentSecurityPolicy', DOCS_CSP);
    return c.html(PAGE);
  });

  app.get('/docs/:asset', async (c) => {
    const name = c.req.param('asset');
    c.set('contentSecurityPolicy', DOCS_CSP);
    if (name === 'init.js') return c.body(INIT, 200, { 'content-type': 'text/javascript; charset=utf-8' });
    const type = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
    if (!type) throw new Problem('not_found', 'no such asset');
    let body = assets.get(name);
    if (!body) {
      body = readFile(join(dist(), name));
      assets.set(name, body);
    }
    // the renderer's files hold no patient data: browsers may keep them
    return c.body(new Uint8Array(await body), 200, { 'content-type': type, 'cache-control': 'public, max-age=3600' });
  });
  return app;
}
