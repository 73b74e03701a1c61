import type { CdsClient } from './jwt.ts';

const MAX_RESPONSE_BYTES = 5 * 1024 * 1024;

export interface Gathered {
  resources: Record<string, unknown>[];
  /** what could not be had, and why: shown on the card, so a gap is never read as a normal value */
  gaps: string[];
}

export interface GatherArgs {
  templates: Record<string, string>;
  /** the request's `prefetch` (anything: the EHR's) */
  prefetch: unknown;
  patientId: string;
  fhirServer?: string | undefined;
  fhirAuthorization?: { access_token?: unknown; token_type?: unknown } | undefined;
  client: CdsClient;
  timeoutMs: number;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A resource, or a Bundle's resources. */
function resourcesOf(value: Record<string, unknown>): Record<string, unknown>[] {
  if (value.resourceType !== 'Bundle') return [value];
  const entries = Array.isArray(value.entry) ? value.entry : [];
  return entries.map((e) => (isObject(e) ? e.resource : undefined)).filter(isObject);
}

const withoutSlash = (u: string) => u.replace(/\/+$/, '');

/**
 * The patient's record for a call: what the EHR prefetched, and each template it left out (or sent as null)
 * fetched from its `fhirServer` with its `fhirAuthorization`, only when that server is one registered for the
 * client (a token's say-so alone would let a caller point the gateway at any address).
 */
export async function gatherRecord(args: GatherArgs): Promise<Gathered> {
  const prefetch = isObject(args.prefetch) ? args.prefetch : {};
  const resources: Record<string, unknown>[] = [];
  const gaps: string[] = [];
  const missing: Array<[string, string]> = [];
  for (const [key, template] of Object.entries(args.templates)) {
    const value = prefetch[key];
    if (isObject(value)) resources.push(...resourcesOf(value));
    else missing.push([key, template]);
  }
  if (missing.length === 0) return { resources, gaps };
  const server = args.fhirServer === undefined ? undefined : withoutSlash(args.fhirServer);
  const registered = server !== undefined && args.client.fhirServers.some((s) => withoutSlash(s) === server);
  if (!registered) {
    const why = server === undefined ? 'no fhirServer was sent' : 'the fhirServer sent is not registered for this EHR';
    gaps.push(`not prefetched and not fetched (${why}): ${missing.map(([k]) => k).join(', ')}`);
    return { resources, gaps };
  }
  const auth = args.fhirAuthorization;
  const headers: Record<string, string> = { accept: 'application/fhir+json' };
  if (typeof auth?.access_token === 'string') headers.authorization = `Bearer ${auth.access_token}`;
  const fetched = await Promise.all(
    missing.map(async ([key, template]) => {
      const path = template.replaceAll('{{context.patientId}}', encodeURIComponent(args.patientId));
      try {
        const res = await fetch(`${server}/${path}`, {
          headers,
          redirect: 'error',
          signal: AbortSignal.timeout(args.timeoutMs),
        });
        if (!res.ok) {
          await res.body?.cancel();
          return { gap: `${key}: the FHIR server answered ${res.status}` };
        }
        const text = await res.text();
        if (text.length > MAX_RESPONSE_BYTES) return { gap: `${key}: the FHIR server's answer is too large` };
        const body: unknown = JSON.parse(text);
        if (!isObject(body)) return { gap: `${key}: the FHIR server's answer is not a resource` };
        return { resources: resourcesOf(body) };
      } catch (err) {
        const timeout = (err as Error).name === 'TimeoutError';
        return { gap: `${key}: the FHIR server ${timeout ? 'did not answer in time' : 'could not be read'}` };
      }
    }),
  );
  for (const f of fetched) {
    if (f.gap) gaps.push(f.gap);
    if (f.resources) resources.push(...f.resources);
  }
  return { resources, gaps };
}
