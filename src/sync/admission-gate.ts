import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { Admission } from '../platform/admission.ts';
import { deadlines } from '../platform/deadlines.ts';
import { Problem } from '../platform/errors.ts';
import { requestIdOf } from '../platform/http.ts';
import type { Metrics } from '../platform/metrics.ts';
import { SECURE_HEADERS } from '../platform/secure-headers.ts';
import { NO_SCORE_ACTION } from '../serving/refusals.ts';

/** The sync scoring routes: `POST /v1/models/{model}/predict` and the OIP `POST /v2/models/{model}/infer`. */
const SCORING = /^\/v(?:1\/models\/([^/?#]+)\/predict|2\/models\/([^/?#]+)\/infer)(?:[?#]|$)/;
/** where the request id goes in a prebuilt body */
const ID_SLOT = '{requestId}';
const PREDICT_ROUTE = '/v1/models/:model/predict';
const INFER_ROUTE = '/v2/models/:model/infer';

/** the headers every early refusal carries: those of the app's other responses, then the refusal's own */
const FIXED_HEADERS: readonly string[] = [
  ...Object.entries(SECURE_HEADERS).flat(),
  'content-type',
  'application/problem+json',
  'retry-after',
  '1',
];

/** What the gate needs of the catalog: the models it knows, by name (labels never take a name it does not know). */
export interface KnownModels {
  get(name: string): { name: string } | undefined;
}

/** A refusal prebuilt per model and route: the body around the request id, and its refusals not yet counted. */
interface Refusal {
  head: string;
  tail: string;
  model: string;
  pending: number;
}

/**
 * The cheapest refusal the gateway can make: in node:http's request listener, before the Hono app (no routing,
 * authentication, body read or validation), a sync scoring request is answered 503 `overloaded` (reason `event_loop`,
 * `Retry-After: 1`) when the admission share says so (src/platform/admission.ts). Under overload a refusal must cost
 * far less than an answer, or refusing does not free the loop; refused later (in the scorer) a request had already
 * cost about as much as scoring it. Everything else (health, readiness, /metrics, jobs, reviews) always goes through:
 * only the two scoring routes are ever refused here, and only while the loop is saturated.
 *
 * Refusals are counted in `triage_shed_total{reason="event_loop"}`, added once per event-loop turn: prom-client checks
 * and hashes the labels at every increment, and with the request histogram's that came to about 20 µs a refusal in a
 * profile, more than the refusal's own code. So they are not in the request histogram either: the sync SLO rules add
 * the counter (k8s/monitoring).
 * The request's body is left unread (node:http discards it and keeps the connection).
 */
export function admissionGate(options: { admission: Admission; catalog: KnownModels; metrics: Metrics }) {
  const { admission, catalog, metrics } = options;
  const refusals = new Map<string, Refusal>();
  let flushing = false;
  const flush = () => {
    flushing = false;
    for (const refusal of refusals.values()) {
      if (refusal.pending === 0) continue;
      metrics.shed.inc({ model: refusal.model, reason: 'event_loop' }, refusal.pending);
      refusal.pending = 0;
    }
  };

  const refusalFor = (model: { name: string }, route: string): Refusal => {
    const key = `${route} ${model.name}`;
    let refusal = refusals.get(key);
    if (refusal) return refusal;
    const instance = route.replace(':model', model.name);
    const problem = new Problem('overloaded', 'the gateway is saturated: retry shortly, or at another replica', {
      extensions: { reason: 'event_loop', action: NO_SCORE_ACTION },
    });
    const [head, tail] = JSON.stringify({ ...problem.toBody(instance), requestId: ID_SLOT }).split(`"${ID_SLOT}"`);
    refusal = { head: head as string, tail: tail as string, model: model.name, pending: 0 };
    // bounded by the catalog's models (a reload may add some): a name from a URL is never a key
    refusals.set(key, refusal);
    return refusal;
  };

  const refuse = (req: IncomingMessage, res: ServerResponse, refusal: Refusal) => {
    const requestId = requestIdOf(req.headers['x-request-id']);
    const body = `${refusal.head}"${requestId}"${refusal.tail}`;
    // a flat [name, value, …] list: node:http takes it as is, without walking an object per response
    res.writeHead(503, [
      ...FIXED_HEADERS,
      'content-length',
      String(Buffer.byteLength(body)),
      'x-request-id',
      requestId,
    ]);
    res.end(body);
    refusal.pending++;
    if (!flushing) {
      flushing = true;
      setImmediate(flush);
    }
  };

  /** `listener` behind the gate. */
  const guard =
    (listener: RequestListener): RequestListener =>
    (req, res) => {
      // what is due answers now, not after this turn of the loop: a saturated loop's long turns are made of requests
      // (src/platform/deadlines.ts)
      deadlines.sweep();
      if (admission.enabled && req.method === 'POST') {
        const match = SCORING.exec(req.url ?? '');
        const name = match?.[1] ?? match?.[2];
        const model = name === undefined ? undefined : catalog.get(name);
        // an unknown model is the app's to answer (404): its name never becomes a label
        if (model && !admission.admit()) {
          refuse(req, res, refusalFor(model, match?.[1] ? PREDICT_ROUTE : INFER_ROUTE));
          return;
        }
      }
      listener(req, res);
    };

  return {
    guard,
    /** node:http's createServer with the gate in front of the listener, for @hono/node-server's `createServer` option */
    createServer: ((serverOptions: Parameters<typeof createServer>[0], listener: RequestListener) =>
      createServer(serverOptions ?? {}, guard(listener))) as typeof createServer,
  };
}
