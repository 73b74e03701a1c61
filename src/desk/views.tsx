import type { Child } from 'hono/jsx';
import type { JobRecord } from '../jobs/store.ts';
import type { OutputSpec } from '../registry/schema.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { documentText } from '../serving/documents.ts';
import { predictionOf } from './queue.ts';

export function Page(props: { title: string; who?: string; csrf?: string; children: Child }) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{props.title} · Triage review desk</title>
        <link rel="stylesheet" href="/desk/assets/desk.css" />
        <script src="/desk/assets/desk.js" defer />
      </head>
      <body>
        <header>
          <a href="/desk/reviews" class="brand">
            Triage review desk
          </a>
          {props.who !== undefined && (
            <form method="post" action="/desk/sign-out" class="inline">
              <span>Signed in as {props.who}</span> <input type="hidden" name="csrf" value={props.csrf} />
              <button type="submit">Sign out</button>
            </form>
          )}
        </header>
        <main id="main">{props.children}</main>
      </body>
    </html>
  );
}

export function SignIn(props: { error?: string }) {
  return (
    <Page title="Sign in">
      <h1>Sign in</h1>
      {props.error !== undefined && (
        <p role="alert" class="error">
          {props.error}
        </p>
      )}
      <form method="post" action="/desk/sign-in">
        <label for="credential">Reviewer key or bearer token</label>
        <input id="credential" name="credential" type="password" autocomplete="off" required />
        <button type="submit">Sign in</button>
      </form>
    </Page>
  );
}

export const ageText = (ms: number) => {
  const m = Math.max(0, Math.round(ms / 60000));
  return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
};

export function Queue(props: {
  items: JobRecord[];
  total: number;
  models: string[];
  model: string | undefined;
  now: number;
  notice?: string;
  /** every served model, for links to its report pictures (admins only: empty for reviewers) */
  reportModels: string[];
}) {
  return (
    <>
      <h1>Waiting for review ({props.total})</h1>
      {props.notice !== undefined && <p role="status">{props.notice}</p>}
      <form method="get" action="/desk/reviews" class="inline">
        <label for="model">Model</label>
        <select id="model" name="model">
          <option value="">all models</option>
          {props.models.map((m) => (
            <option value={m} selected={m === props.model}>
              {m}
            </option>
          ))}
        </select>
        <button type="submit">Filter</button>
      </form>
      {props.reportModels.length > 0 && (
        <nav aria-label="Model reports">
          Pictures (admins):{' '}
          {props.reportModels.map((m) => (
            <>
              <a href={`/desk/models/${m}`}>{m}: shadow</a> <a href={`/desk/models/${m}/monitoring`}>{m}: monitoring</a>
              {' · '}
            </>
          ))}
        </nav>
      )}
      {props.items.length === 0 ? (
        <p>Nothing is waiting for review.</p>
      ) : (
        <table id="queue">
          <caption>Most urgent first: escalated holds, then each model's clinical priority, then the oldest</caption>
          <thead>
            <tr>
              <th scope="col">Hold</th>
              <th scope="col">Model</th>
              <th scope="col">Predicted</th>
              <th scope="col">Confidence</th>
              <th scope="col">Waiting</th>
            </tr>
          </thead>
          <tbody>
            {props.items.map((r, i) => {
              const p = predictionOf(r);
              return (
                <tr data-id={r.id}>
                  <td>
                    <a href={`/desk/reviews/${r.id}`} data-row={String(i)}>
                      {r.id.slice(0, 8)}
                    </a>
                    {r.escalated && <strong class="flag"> escalated</strong>}
                  </td>
                  <td>{r.model}</td>
                  <td class="predicted">{String(p?.category ?? p?.verdict ?? '—')}</td>
                  <td>{typeof p?.confidence === 'number' ? p.confidence.toFixed(2) : '—'}</td>
                  <td>{ageText(props.now - (r.heldAt ?? r.createdAt))}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </>
  );
}

/** What the model saw: the decoded note for document models, the features for the others. */
function ModelInput(props: { record: JobRecord; model: CatalogModel | undefined }) {
  const m = props.model?.manifest;
  if (m?.input === 'document') {
    let text: string;
    try {
      text = documentText(props.record.input, m.document?.maxChars ?? 100_000);
    } catch {
      text = '(the note could not be decoded)';
    }
    return (
      <section aria-labelledby="note-h">
        <h2 id="note-h">The note</h2>
        <pre id="note" class="note">
          {text}
        </pre>
      </section>
    );
  }
  const input = props.record.input;
  const rows = typeof input === 'object' && input !== null ? Object.entries(input) : [];
  return (
    <section aria-labelledby="input-h">
      <h2 id="input-h">What the model saw</h2>
      <table>
        <tbody>
          {rows.map(([k, v]) => (
            <tr>
              <th scope="row">{k}</th>
              <td>{typeof v === 'object' ? JSON.stringify(v) : String(v)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

/** The amendment fields, built from the model's output schema: one field per thing a clinician can say. */
function AmendFields(props: { spec: OutputSpec | undefined; model: CatalogModel | undefined; current?: unknown }) {
  const spec = props.spec;
  if (!spec) return <p>This model's output cannot be amended here.</p>;
  if (spec.kind === 'classification') {
    return (
      <fieldset>
        <legend>Amended category</legend>
        {spec.labels.map((l) => (
          <label class="choice">
            <input type="radio" name="output.category" value={l} checked={l === props.current} /> {l}
          </label>
        ))}
      </fieldset>
    );
  }
  if (spec.kind === 'retrieval') {
    return (
      <fieldset>
        <legend>Matching cases</legend>
        {(props.model?.corpus ?? []).map((e) => (
          <label class="choice">
            <input type="checkbox" name="output.matches" value={e.id} /> {e.title}
          </label>
        ))}
      </fieldset>
    );
  }
  return (
    <p>
      <label for="amend-score">Amended {spec.scoreName}</label>
      <input id="amend-score" name={`output.${spec.scoreName}`} type="number" step="any" />
    </p>
  );
}

export function Hold(props: {
  record: JobRecord;
  model: CatalogModel | undefined;
  csrf: string;
  now: number;
  error?: string;
  conflict?: string;
}) {
  const r = props.record;
  const p = predictionOf(r);
  const decided = r.decision !== undefined;
  return (
    <>
      <h1>
        Hold {r.id.slice(0, 8)}: {r.model} v{r.version}
      </h1>
      {props.conflict !== undefined && (
        <p role="alert" class="error" id="conflict">
          {props.conflict}
        </p>
      )}
      {props.error !== undefined && (
        <p role="alert" class="error" id="form-error">
          {props.error}
        </p>
      )}
      <p>
        Held {ageText(props.now - (r.heldAt ?? r.createdAt))} ago ({r.holdReason ?? 'review policy'})
        {r.escalated && <strong class="flag"> · escalated</strong>}
      </p>
      <ModelInput record={r} model={props.model} />
      <section aria-labelledby="output-h">
        <h2 id="output-h">The model's output</h2>
        <dl id="output">
          {Object.entries(p ?? {}).map(([k, v]) => (
            <>
              <dt>{k}</dt>
              <dd>{typeof v === 'object' ? JSON.stringify(v) : String(v)}</dd>
            </>
          ))}
        </dl>
      </section>
      {decided ? (
        <p id="decided">
          Decided: {r.decision?.outcome} by {r.decision?.byName ?? r.decision?.by} — {r.decision?.reason}
        </p>
      ) : (
        <form method="post" action={`/desk/reviews/${r.id}`} id="decide">
          <input type="hidden" name="csrf" value={props.csrf} />
          <fieldset>
            <legend>Decision (keys: a approve, x reject, m amend; Ctrl+Enter sends)</legend>
            <label class="choice">
              <input type="radio" name="decision" value="approve" required /> Approve
            </label>
            <label class="choice">
              <input type="radio" name="decision" value="reject" /> Reject
            </label>
            <label class="choice">
              <input type="radio" name="decision" value="amend" /> Amend
            </label>
          </fieldset>
          <AmendFields spec={props.model?.manifest.output} model={props.model} current={p?.category} />
          <p>
            <label for="reason">Reason</label>
            <textarea id="reason" name="reason" required maxlength={2000} rows={3} />
          </p>
          <button type="submit">Send decision</button>
        </form>
      )}
    </>
  );
}
