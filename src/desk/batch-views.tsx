import type { RunHold } from '../batch/review-store.ts';
import { ageText } from './views.tsx';

const holdText = (h: RunHold) => (h.hold === 'run' ? 'whole run' : 'rows at or above the threshold');

/** The queue's second list: batch runs whose output waits for a reviewer (src/batch/review.ts), oldest first. */
export function BatchHolds(props: { items: RunHold[]; total: number; now: number }) {
  return (
    <section aria-labelledby="batch-holds">
      <h2 id="batch-holds">Batch output waiting for review ({props.total})</h2>
      {props.items.length === 0 ? (
        <p>No batch output is waiting.</p>
      ) : (
        <table id="batch-queue">
          <caption>Oldest first: a run's output reaches its requester only once approved</caption>
          <thead>
            <tr>
              <th scope="col">Run</th>
              <th scope="col">Model</th>
              <th scope="col">Held</th>
              <th scope="col">Rows held / scored</th>
              <th scope="col">Waiting</th>
            </tr>
          </thead>
          <tbody>
            {props.items.map((h) => (
              <tr data-run={h.runId}>
                <td>
                  <a href={`/desk/batch-reviews/${h.runId}`}>{h.runId.slice(0, 8)}</a>
                </td>
                <td>
                  {h.model} v{h.version}
                </td>
                <td>{holdText(h)}</td>
                <td>
                  {h.heldRows} / {h.scored}
                </td>
                <td>{ageText(props.now - h.heldAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** One held run: its counts, a sample of the held rows, and the decision form (approve or reject, with a reason). */
export function BatchHoldPage(props: {
  hold: RunHold;
  sample: Array<Record<string, unknown>>;
  csrf: string;
  now: number;
  error?: string;
}) {
  const h = props.hold;
  return (
    <>
      <h1>
        Batch run {h.runId.slice(0, 8)}: {h.model} v{h.version}
      </h1>
      {props.error !== undefined && (
        <p role="alert" class="error" id="form-error">
          {props.error}
        </p>
      )}
      <dl>
        <dt>Held</dt>
        <dd>
          {holdText(h)}, {ageText(props.now - h.heldAt)} ago; requested by {h.requestedBy}
        </dd>
        <dt>Rows</dt>
        <dd>
          {h.scored} scored, {h.above} at or above the threshold, {h.heldRows} held
        </dd>
      </dl>
      <h2>Sample of the held rows ({props.sample.length})</h2>
      <table id="sample">
        <thead>
          <tr>
            <th scope="col">Row</th>
            <th scope="col">Output</th>
          </tr>
        </thead>
        <tbody>
          {props.sample.map((row) => (
            <tr>
              <td>{String(row.id ?? (row.subject as { reference?: string } | undefined)?.reference ?? '—')}</td>
              <td>
                <code>{JSON.stringify(row.prediction ?? row)}</code>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {h.decision ? (
        <p id="decided">
          Decided: {h.decision.outcome} by {h.decision.byName ?? h.decision.by} — {h.decision.reason}
        </p>
      ) : (
        <form method="post" action={`/desk/batch-reviews/${h.runId}`} id="decide">
          <input type="hidden" name="csrf" value={props.csrf} />
          <fieldset>
            <legend>Decision</legend>
            <label class="choice">
              <input type="radio" name="decision" value="approve" required /> Approve: release to the requester
            </label>
            <label class="choice">
              <input type="radio" name="decision" value="reject" /> Reject: never released
            </label>
          </fieldset>
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
