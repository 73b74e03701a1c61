import { randomBytes } from 'node:crypto';
import { Hono } from 'hono';
import { parseBody } from 'hono/utils/body';
import type { AppContext, AppDeps, AppEnv } from '../src/context.ts';
import { DESK_CSS, DESK_JS } from '../src/desk/assets.ts';
import { BatchHoldPage, BatchHolds } from '../src/desk/batch-views.tsx';
import { type Panel, panelSvg } from '../src/desk/charts.ts';
import { monitoringPictures, PanelCache, shadowPictures } from '../src/desk/pictures.ts';
import { byClinicalPriority } from '../src/desk/queue.ts';
import { ModelReports, PICTURE_WINDOWS, type ReportKind } from '../src/desk/report-views.tsx';
import { assertSameSiteForm, currentSession, type DeskSession, signIn, signOut } from '../src/desk/session.ts';
import { Hold, Page, Queue, SignIn } from '../src/desk/views.tsx';
import { assertRole, mayUseModel } from '../src/platform/auth.ts';
import { Problem } from '../src/platform/errors.ts';
import { assertDeclaredLength, readCapped, tooLarge } from '../src/platform/http.ts';
import { SECURE_HEADERS } from '../src/platform/secure-headers.ts';
import { MODEL_NAME } from '../src/registry/schema.ts';

/** Pages run only the desk's own script and style: no inline code, no other origin, forms back to this site. */
const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; " +
  "base-uri 'none'; frame-ancestors 'none'";

/** The most holds one queue page ranks: the desk sorts in memory, the store keeps them by age. */
const QUEUE_WINDOW = 500;

/**
 * The clinician review desk: server-rendered pages over the same ReviewService as `/v1/reviews`. Signed in with a
 * reviewer key or a bearer token into a short, signed, HttpOnly cookie; every form carries the session's CSRF token.
 */
export function deskRoutes(deps: AppDeps, sessionSecret = randomBytes(32).toString('base64url')) {
  const app = new Hono<AppEnv>();

  // the app's secure-headers middleware would put the API's `default-src 'none'` on these pages: they set their own
  app.use('*', async (c, next) => {
    await next();
    const headers = c.res.headers;
    for (const [k, v] of Object.entries(SECURE_HEADERS)) headers.set(k, v);
    headers.set('content-security-policy', PAGE_CSP);
    // `no-referrer` makes a browser send `Origin: null` on form posts; `same-origin` keeps the origin for this site
    // only, so the CSRF origin check can be strict
    headers.set('referrer-policy', 'same-origin');
    headers.set('x-request-id', c.get('requestId'));
    if (c.req.path.startsWith('/desk/assets/')) headers.set('cache-control', 'private, max-age=300');
    c.set('requestIdSent', true);
  });

  app.get('/assets/desk.css', (c) => c.body(DESK_CSS, 200, { 'content-type': 'text/css; charset=utf-8' }));
  app.get('/assets/desk.js', (c) => c.body(DESK_JS, 200, { 'content-type': 'text/javascript; charset=utf-8' }));

  app.get('/', (c) => c.redirect('/desk/reviews', 303));
  app.get('/sign-in', (c) => c.html(<SignIn />));
  app.post('/sign-in', async (c) => {
    assertSameSiteForm(c, undefined, undefined);
    const form = await readForm(c);
    const credential = typeof form.credential === 'string' ? form.credential.trim() : '';
    try {
      await signIn(deps, c, credential, sessionSecret);
    } catch (err) {
      if (!(err instanceof Problem) || err.status >= 500) throw err;
      const message = err.code === 'forbidden' ? 'That key or token is not a reviewer’s.' : err.message;
      return c.html(<SignIn error={message} />, err.status as 401);
    }
    return c.redirect('/desk/reviews', 303);
  });

  const session = async (c: AppContext): Promise<DeskSession | Response> => {
    const s = await currentSession(c, sessionSecret);
    return s ?? c.redirect('/desk/sign-in', 303);
  };

  app.post('/sign-out', async (c) => {
    const s = await currentSession(c, sessionSecret);
    assertSameSiteForm(c, s?.csrf, (await readForm(c)).csrf);
    signOut(c);
    return c.redirect('/desk/sign-in', 303);
  });

  app.get('/reviews', async (c) => {
    const s = await session(c);
    if (s instanceof Response) return s;
    const raw = c.req.query('model') || undefined;
    const model =
      raw !== undefined && MODEL_NAME.test(raw) && deps.catalog.get(raw) && mayUseModel(s.principal, raw)
        ? raw
        : undefined;
    const { items, total } = await deps.reviews.pending(s.principal, model, 0, QUEUE_WINDOW);
    const ranked = byClinicalPriority(items, (m) => deps.catalog.get(m)?.manifest);
    const models = deps.catalog
      .list()
      .filter(
        (m) => m.manifest.review && m.manifest.review.policy !== 'never' && mayUseModel(s.principal, m.manifest.name),
      )
      .map((m) => m.manifest.name);
    const batch = await deps.batchReviews.pending(s.principal, model, 0, QUEUE_WINDOW);
    const done = c.req.query('decided');
    return c.html(
      <Page title="Review queue" who={s.principal.name ?? s.principal.id} csrf={s.csrf}>
        <Queue
          items={ranked}
          total={total}
          models={models}
          model={model}
          now={deps.reviews.now()}
          reportModels={s.principal.role === 'admin' ? deps.catalog.list().map((m) => m.manifest.name) : []}
          {...(done ? { notice: `Decision recorded for hold ${done.slice(0, 8)}.` } : {})}
        />
        <BatchHolds items={batch.items} total={batch.total} now={deps.batchReviews.now()} />
      </Page>,
    );
  });

  const holdPage = async (s: DeskSession, id: string, extra: { error?: string; conflict?: string }) => {
    const record = await deps.reviews.reviewItem(s.principal, id);
    return (
      <Page title={`Hold ${record.id.slice(0, 8)}`} who={s.principal.name ?? s.principal.id} csrf={s.csrf}>
        <Hold
          record={record}
          model={deps.catalog.get(record.model)}
          csrf={s.csrf}
          now={deps.reviews.now()}
          {...extra}
        />
      </Page>
    );
  };

  app.get('/reviews/:id', async (c) => {
    const s = await session(c);
    if (s instanceof Response) return s;
    return c.html(await holdPage(s, c.req.param('id'), {}));
  });

  app.post('/reviews/:id', async (c) => {
    const s = await session(c);
    if (s instanceof Response) return s;
    const form = await readForm(c, true);
    assertSameSiteForm(c, s.csrf, form.csrf);
    const id = c.req.param('id');
    const item = await deps.reviews.reviewItem(s.principal, id);
    const model = deps.catalog.get(item.model);
    try {
      await deps.reviews.decide(s.principal, id, decisionBody(form), model);
    } catch (err) {
      if (!(err instanceof Problem) || err.status >= 500) throw err;
      if (err.code === 'already_decided') {
        const d = (await deps.reviews.reviewItem(s.principal, id)).decision;
        const who = d?.byName ?? d?.by ?? 'another reviewer';
        const conflict = `Someone else decided this hold first: ${who} chose “${d?.outcome}”. Your decision was not recorded.`;
        return c.html(await holdPage(s, id, { conflict }), 409);
      }
      return c.html(await holdPage(s, id, { error: err.message }), err.status as 400);
    }
    return c.redirect(`/desk/reviews?decided=${id}`, 303);
  });

  // held batch output: the same BatchReviewService as /v1/batch-reviews (approve or reject, with a reason)
  const batchPage = async (s: DeskSession, runId: string, status: 200 | 400 | 403 | 409, error?: string) => {
    const { hold, run } = await deps.batchReviews.item(s.principal, runId);
    const sample = hold.state === 'held' ? await deps.batchReviews.sample(run) : [];
    const page = (
      <Page title={`Batch run ${runId.slice(0, 8)}`} who={s.principal.name ?? s.principal.id} csrf={s.csrf}>
        <BatchHoldPage
          hold={hold}
          sample={sample}
          csrf={s.csrf}
          now={deps.batchReviews.now()}
          {...(error ? { error } : {})}
        />
      </Page>
    );
    return { page, status };
  };

  app.get('/batch-reviews/:runId', async (c) => {
    const s = await session(c);
    if (s instanceof Response) return s;
    const { page } = await batchPage(s, c.req.param('runId'), 200);
    return c.html(page);
  });

  app.post('/batch-reviews/:runId', async (c) => {
    const s = await session(c);
    if (s instanceof Response) return s;
    const form = await readForm(c);
    assertSameSiteForm(c, s.csrf, form.csrf);
    const runId = c.req.param('runId');
    try {
      await deps.batchReviews.decide(s.principal, runId, { decision: form.decision, reason: form.reason });
    } catch (err) {
      if (!(err instanceof Problem) || err.status >= 500 || err.code === 'not_found') throw err;
      const { page, status } = await batchPage(s, runId, err.status as 400 | 403 | 409, err.message);
      return c.html(page, status);
    }
    return c.redirect(`/desk/reviews?decided=${runId}`, 303);
  });

  // the pictures are for the people who answer for the models: admins (the codebase has no per-model owner role)
  const adminSession = async (c: AppContext): Promise<DeskSession | Response> => {
    const s = await session(c);
    if (!(s instanceof Response)) assertRole(s.principal, ['admin']);
    return s;
  };

  const cache = new PanelCache();
  /** The panels of a report: fresh for its page, the page's own for the pictures on it. */
  const panelsOf = async (
    c: AppContext,
    kind: ReportKind,
    fresh: boolean,
  ): Promise<{ model: string; panels: Panel[]; window?: string }> => {
    const name = c.req.param('model') ?? '';
    const model = MODEL_NAME.test(name) ? deps.catalog.get(name) : undefined;
    if (!model) throw new Problem('model_not_found', 'no model by that name');
    const read = (key: string, load: () => Promise<Panel[]>) => (fresh ? cache.load(key, load) : cache.get(key, load));
    if (kind === 'shadow')
      return { model: name, panels: await read(`shadow:${name}`, () => shadowPictures(deps, model)) };
    const raw = c.req.query('window') ?? 'day';
    const window = PICTURE_WINDOWS.find((w) => w === raw);
    if (!window) throw new Problem('invalid_request', `window must be one of ${PICTURE_WINDOWS.join(', ')}`);
    const panels = await read(`monitoring:${name}:${window}`, () => monitoringPictures(deps, model, window));
    return { model: name, panels, window };
  };

  const reportPage = (kind: ReportKind) => async (c: AppContext) => {
    const s = await adminSession(c);
    if (s instanceof Response) return s;
    const { model, panels, window } = await panelsOf(c, kind, true);
    return c.html(
      <Page title={`${model}: ${kind}`} who={s.principal.name ?? s.principal.id} csrf={s.csrf}>
        <ModelReports model={model} kind={kind} panels={panels} {...(window ? { window } : {})} />
      </Page>,
    );
  };

  const chart = (kind: ReportKind) => async (c: AppContext) => {
    const s = await adminSession(c);
    if (s instanceof Response) return s;
    const id = (c.req.param('file') ?? '').replace(/\.svg$/, '');
    const panel = (await panelsOf(c, kind, false)).panels.find((p) => p.id === id);
    if (!panel) throw new Problem('not_found', 'no such chart');
    return c.body(await panelSvg(panel), 200, { 'content-type': 'image/svg+xml' });
  };

  app.get('/models/:model', reportPage('shadow'));
  app.get('/models/:model/monitoring', reportPage('monitoring'));
  app.get('/models/:model/charts/:file{[A-Za-z0-9._-]+\\.svg}', chart('shadow'));
  app.get('/models/:model/monitoring/charts/:file{[A-Za-z0-9._-]+\\.svg}', chart('monitoring'));

  app.onError((err, c) => {
    if (err instanceof Problem && err.status < 500) {
      return c.html(
        <Page title={err.toBody().title}>
          <h1>{err.toBody().title}</h1>
          <p role="alert">{err.message}</p>
          <p>
            <a href="/desk/reviews">Back to the queue</a>
          </p>
        </Page>,
        err.status as 400,
      );
    }
    throw err;
  });
  return app;
}

/**
 * A form as the API reads a body: 413 past the size limit (declared or read), 400 for a form that cannot be parsed
 * (Hono's parseBody reads without a limit, and a malformed multipart body threw a 500).
 */
async function readForm(c: AppContext, all = false): Promise<Record<string, string | File | (string | File)[]>> {
  assertDeclaredLength(c);
  const max = c.get('maxBodyBytes');
  const text = await readCapped(c.req.raw.body, max, () => tooLarge(max));
  const type = c.req.header('content-type');
  const request = new Request(c.req.url, { method: 'POST', body: text, headers: type ? { 'content-type': type } : {} });
  try {
    return await parseBody(request, { all });
  } catch {
    throw new Problem('invalid_request', 'the form cannot be read');
  }
}

/** The form's flat fields → the API's decision body: `output.<field>` names build the amended output. */
function decisionBody(form: Record<string, string | File | (string | File)[]>): Record<string, unknown> {
  const output: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(form)) {
    if (!k.startsWith('output.')) continue;
    const field = k.slice('output.'.length);
    const values = (Array.isArray(v) ? v : [v]).filter((x): x is string => typeof x === 'string');
    if (field === 'matches') output.matches = values.map((id) => ({ id }));
    else if (values[0] !== undefined && values[0] !== '') {
      output[field] = /^-?\d+(\.\d+)?$/.test(values[0]) ? Number(values[0]) : values[0];
    }
  }
  const decision = form.decision;
  return {
    decision,
    reason: form.reason,
    ...(decision === 'amend' ? { output } : {}),
  };
}
