import type { ExportInput } from './export-request.ts';
import type { FhirServer } from './fhir-servers.ts';
import { IngressError, type TokenSource } from './smart-token.ts';

/**
 * The client side of the FHIR Bulk Data Access IG (v2): kick-off, status polling, file download. Every failure is an
 * IngressError naming its step; messages carry HTTP statuses and OperationOutcome issue codes, never the server's free
 * text (it may echo search parameters, and run errors reach logs).
 */

export interface ExportManifest {
  transactionTime: string;
  requiresAccessToken: boolean;
  output: Array<{ type: string; url: string; count?: number }>;
  error: Array<{ type: string; url: string }>;
}

const READ_TYPES = ['Patient', 'Observation'];

/** The kick-off URL: the level's `$export` with the request's parameters. */
export function kickoffUrl(server: FhirServer, request: ExportInput, since: string | undefined): string {
  const path =
    request.level === 'system'
      ? '$export'
      : request.level === 'patient'
        ? 'Patient/$export'
        : `Group/${encodeURIComponent(request.group as string)}/$export`;
  const url = new URL(`${server.baseUrl}/${path}`);
  url.searchParams.set('_outputFormat', 'application/fhir+ndjson');
  url.searchParams.set('_type', (request.types ?? READ_TYPES).join(','));
  if (since) url.searchParams.set('_since', since);
  for (const f of request.typeFilters ?? []) url.searchParams.append('_typeFilter', f);
  return url.href;
}

/** The issue codes of an OperationOutcome body, for messages (`processing, not-found`). */
async function issueCodes(res: Response): Promise<string> {
  const body = (await res.json().catch(() => undefined)) as { issue?: Array<{ code?: unknown }> } | undefined;
  const codes = (body?.issue ?? []).map((i) => i.code).filter((c): c is string => typeof c === 'string');
  return codes.length ? `, OperationOutcome ${codes.slice(0, 5).join(', ')}` : '';
}

export class BulkClient {
  readonly server: FhirServer;
  readonly #tokens: TokenSource;
  readonly #origins: Set<string>;

  constructor(server: FhirServer, tokens: TokenSource) {
    this.server = server;
    this.#tokens = tokens;
    this.#origins = new Set([new URL(server.baseUrl).origin, ...server.tokenOrigins.map((u) => new URL(u).origin)]);
  }

  /**
   * A request with the access token when the URL is the server's (or a listed origin): a file URL elsewhere (a
   * signed storage URL) never gets it. A 401 is asked once more with a fresh token (revoked or expired early).
   */
  async #fetch(step: IngressError['step'], url: string, init: RequestInit, withToken: boolean): Promise<Response> {
    const send = withToken && this.#origins.has(new URL(url).origin);
    for (let attempt = 0; ; attempt++) {
      const headers = new Headers(init.headers);
      if (send) {
        const token = await this.#tokens.get();
        if (token) headers.set('authorization', `Bearer ${token}`);
      }
      let res: Response;
      try {
        // redirects are not followed: the token must not travel to wherever a server points
        res = await fetch(url, { ...init, headers, redirect: 'manual', signal: AbortSignal.timeout(60_000) });
      } catch (err) {
        throw new IngressError(step, `the server cannot be reached (${(err as Error).name})`, false);
      }
      if (res.status !== 401 || !send || attempt > 0) return res;
      await res.body?.cancel();
      this.#tokens.invalidate();
    }
  }

  /** GET `$export` with `Prefer: respond-async`; returns the status URL (Content-Location). */
  async kickoff(url: string): Promise<string> {
    const res = await this.#fetch(
      'kick-off',
      url,
      { headers: { accept: 'application/fhir+json', prefer: 'respond-async' } },
      true,
    );
    if (res.status !== 202) {
      const why = `the server answered ${res.status}${await issueCodes(res)}`;
      // 429 and 5xx may pass; any other answer (a 4xx: bad parameters, forbidden, unknown group) will not
      throw new IngressError('kick-off', why, res.status !== 429 && res.status < 500);
    }
    await res.body?.cancel();
    const location = res.headers.get('content-location');
    if (!location) throw new IngressError('kick-off', 'the 202 answer has no Content-Location', true);
    const status = new URL(location, url);
    // the token goes to the status URL: it must be the server's own
    if (!this.#origins.has(status.origin)) {
      throw new IngressError('kick-off', 'the status URL is not on the server it was asked of', true);
    }
    return status.href;
  }

  /** One status poll: in progress (with X-Progress and the wait asked for) or the completion manifest. */
  async poll(
    statusUrl: string,
  ): Promise<{ done: false; progress?: string; retryAfterMs?: number } | { done: true; manifest: ExportManifest }> {
    const res = await this.#fetch('status', statusUrl, { headers: { accept: 'application/json' } }, true);
    if (res.status === 202) {
      await res.body?.cancel();
      const progress = res.headers.get('x-progress')?.slice(0, 100);
      const retryAfterMs = retryAfter(res.headers.get('retry-after'));
      return { done: false, ...(progress ? { progress } : {}), ...(retryAfterMs ? { retryAfterMs } : {}) };
    }
    if (res.status === 429 || res.status === 503) {
      await res.body?.cancel();
      const retryAfterMs = retryAfter(res.headers.get('retry-after'));
      return {
        done: false,
        progress: `the server asked to wait (${res.status})`,
        ...(retryAfterMs ? { retryAfterMs } : {}),
      };
    }
    if (res.status !== 200) {
      const codes = await issueCodes(res);
      // an OperationOutcome coded `transient` says: ask again later
      if (codes.includes('transient')) return { done: false, progress: 'the server reported a transient error' };
      throw new IngressError('status', `the export failed on the server (${res.status}${codes})`, true);
    }
    const m = (await res.json().catch(() => undefined)) as Partial<ExportManifest> | undefined;
    if (!m || typeof m.transactionTime !== 'string' || !Array.isArray(m.output)) {
      throw new IngressError('status', 'the completion manifest is not a Bulk Data manifest', true);
    }
    return {
      done: true,
      manifest: {
        transactionTime: m.transactionTime,
        requiresAccessToken: m.requiresAccessToken === true,
        output: m.output.filter((o) => typeof o?.type === 'string' && typeof o?.url === 'string'),
        error: Array.isArray(m.error) ? m.error : [],
      },
    };
  }

  /** One output file's body (a stream); an expired or refused file URL fails the run at this step. */
  async download(url: string, requiresAccessToken: boolean): Promise<ReadableStream<Uint8Array>> {
    const res = await this.#fetch(
      'download',
      url,
      { headers: { accept: 'application/fhir+ndjson' } },
      requiresAccessToken,
    );
    if (res.status !== 200 || !res.body) {
      await res.body?.cancel();
      const why =
        res.status === 404 || res.status === 410
          ? `a file URL has expired or is gone (${res.status})`
          : `a file download was answered ${res.status}`;
      // a file is fetched again on the run's next attempt only if the server might still have it
      throw new IngressError('download', why, res.status < 500);
    }
    return res.body;
  }

  /** Tells the server its files may go (the IG's DELETE on the status URL); a failure here fails nothing. */
  async release(statusUrl: string): Promise<void> {
    const res = await this.#fetch('status', statusUrl, { method: 'DELETE' }, true).catch(() => undefined);
    await res?.body?.cancel();
  }
}

/** Retry-After as milliseconds: delta-seconds or an HTTP date. */
function retryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value.trim())) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}
