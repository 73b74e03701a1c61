/** Talking to a test gateway: requests through `app.request()`, and readers of what comes back. */
import type { Hono } from 'hono';
import type { AppEnv } from '../../src/context.ts';
import { RUN_TIMEOUT_MS, WAIT_TIMEOUT_MS, waitFor } from './wait.ts';

export interface Reply {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are read field by field
  body: any;
  text: string;
}

/** A request through `app.request()`: JSON in and out, the key as a bearer token; the body parsed when it is JSON. */
export async function httpCall(
  app: { request(url: string, init: RequestInit): Response | Promise<Response> },
  method: string,
  url: string,
  key: string | undefined,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const res = await app.request(url, {
    method,
    headers: {
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...headers,
    },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

/** POST a JSON body to a model's predict endpoint; the raw Response. */
export function predict(
  app: Hono<AppEnv>,
  model: string,
  body: unknown,
  key: string | undefined,
  headers: Record<string, string> = {},
): Promise<Response> {
  return Promise.resolve(
    app.request(`/v1/models/${model}/predict`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(key ? { authorization: `Bearer ${key}` } : {}),
        ...headers,
      },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    }),
  );
}

/** The value of one sample in a Prometheus exposition: `name` with (at least) `labels`; undefined when absent. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const body = match[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => body.includes(`${k}="${v}"`))) return Number(match[3]);
  }
  return undefined;
}

/** Asserting helper: the response is RFC 9457 problem+json; returns its parsed body. */
export async function problemBody(res: Response): Promise<Record<string, unknown>> {
  const type = res.headers.get('content-type') ?? '';
  if (!type.startsWith('application/problem+json')) {
    throw new Error(`expected application/problem+json, got "${type}" (status ${res.status}): ${await res.text()}`);
  }
  return (await res.json()) as Record<string, unknown>;
}

interface Caller {
  call(method: string, url: string, key: string | undefined, body?: unknown): Promise<Reply>;
}

/** All audit entries (GET /v1/audit, paged). */
// biome-ignore lint/suspicious/noExplicitAny: audit entries are read field by field
export async function allAudit(gw: Caller, adminKey: string): Promise<Array<Record<string, any>>> {
  // biome-ignore lint/suspicious/noExplicitAny: as above
  const out: Array<Record<string, any>> = [];
  let url = '/v1/audit?limit=1000';
  for (;;) {
    const res = await gw.call('GET', url, adminKey);
    if (res.status !== 200) throw new Error(`audit: ${res.status} ${res.text}`);
    out.push(...res.body.entries);
    if (res.body.entries.length === 0 || !res.body.links?.next) return out;
    url = res.body.links.next;
  }
}

/** Polls GET /v1/jobs/:id until the job is in one of `states`; returns the job view. */
export async function waitForState(
  gw: Caller,
  key: string,
  id: string,
  states: string | string[],
  timeoutMs = WAIT_TIMEOUT_MS,
): Promise<Reply['body']> {
  const wanted = Array.isArray(states) ? states : [states];
  let last: Reply | undefined;
  await waitFor(
    async () => {
      last = await gw.call('GET', `/v1/jobs/${id}`, key);
      return wanted.includes(last.body?.state);
    },
    () => `job ${id} to be ${wanted.join('|')} (last: ${last?.status} ${last?.body?.state ?? last?.text})`,
    timeoutMs,
  );
  return last?.body;
}

/** The X-Progress header of a run that is still going. */
export const PROGRESS = /^(queued|running): \d+ rows read, \d+ scored, \d+ failed$/;

/**
 * Polls GET /v1/batches/:id until it is no longer 202, checking the 202 shape (X-Progress, Retry-After) every time
 * one is seen. Returns the final reply and how many 202s were seen.
 */
export async function waitForRun(
  gw: Caller,
  key: string,
  id: string,
  timeoutMs = RUN_TIMEOUT_MS,
  onProgress?: (reply: Reply) => void,
): Promise<{ final: Reply; accepted: number }> {
  let last: Reply | undefined;
  let accepted = 0;
  await waitFor(
    async () => {
      last = await gw.call('GET', `/v1/batches/${id}`, key);
      if (last.status !== 202) return true;
      accepted++;
      const progress = last.headers.get('x-progress') ?? '';
      if (!PROGRESS.test(progress)) throw new Error(`bad X-Progress "${progress}"`);
      const retry = last.headers.get('retry-after') ?? '';
      if (!/^\d+$/.test(retry) || Number(retry) < 1) throw new Error(`bad Retry-After "${retry}"`);
      onProgress?.(last);
      return false;
    },
    () => `run ${id} to finish (last: ${last?.status} ${last?.text.slice(0, 200)})`,
    timeoutMs,
  );
  return { final: last as Reply, accepted };
}

/** Downloads a file by its (absolute) manifest URL and parses it as NDJSON. */
export async function download(gw: Caller, key: string, url: string): Promise<Array<Record<string, unknown>>> {
  const res = await gw.call('GET', url, key);
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${res.text.slice(0, 300)}`);
  if (!(res.headers.get('content-type') ?? '').startsWith('application/fhir+ndjson')) {
    throw new Error(`GET ${url}: content-type ${res.headers.get('content-type')}`);
  }
  return parseNdjson(res.text);
}

export function parseNdjson(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The row id an error-file OperationOutcome names (`diagnostics: "row <id>: …"`). */
export function outcomeRowId(outcome: Record<string, unknown>): string {
  const issue = (outcome.issue as Array<{ diagnostics?: string }> | undefined)?.[0];
  const match = /^row (\S+): /.exec(issue?.diagnostics ?? '');
  if (outcome.resourceType !== 'OperationOutcome' || !match) {
    throw new Error(`not an OperationOutcome naming a row: ${JSON.stringify(outcome).slice(0, 200)}`);
  }
  return match[1] as string;
}

/**
 * As a client does with a 503 (Retry-After): sends again until the answer is something else. A busy machine can make
 * a command outlast the gateway's Redis timeout, and a cluster shard without a primary refuses writes; both say
 * "nothing was recorded, retry".
 */
export async function retryingOn503(send: () => Promise<Reply>): Promise<Reply> {
  let res = await send();
  await waitFor(
    async () => {
      if (res.status !== 503) return true;
      res = await send();
      return res.status !== 503;
    },
    () => `an answer other than 503 (last: ${res.text})`,
    60_000,
  );
  return res;
}
