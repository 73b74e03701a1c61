/**
 * The CLI's HTTP side: one request helper, and exit codes a script can branch on. A problem+json error is printed
 * as its code and detail (never the key), and its HTTP status picks the exit code.
 */
export const EXIT = {
  ok: 0,
  /** the thing asked about failed: a manifest that does not validate, a batch run that failed */
  failed: 1,
  usage: 2,
  /** 401 / 403: the key or token is missing, wrong, or not allowed */
  auth: 3,
  notFound: 4,
  /** 409: someone decided first, or the state moved on */
  conflict: 5,
  /** any other 4xx: the request was refused as invalid */
  invalid: 6,
  /** 429, 5xx or no answer: worth retrying later */
  unavailable: 7,
} as const;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    readonly body?: unknown,
  ) {
    super(message);
  }
}

export function exitCodeFor(status: number): number {
  if (status === 401 || status === 403) return EXIT.auth;
  if (status === 404) return EXIT.notFound;
  if (status === 409) return EXIT.conflict;
  if (status === 429 || status >= 500) return EXIT.unavailable;
  return EXIT.invalid;
}

export interface Connection {
  baseUrl: string;
  key: string | undefined;
}

export interface Answer {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: answers are printed or read field by field
  body: any;
}

/** One API call; a non-2xx answer becomes a CliError with the problem's code and the status's exit code. */
export async function call(conn: Connection, method: string, path: string, body?: unknown): Promise<Answer> {
  let res: Response;
  try {
    res = await fetch(new URL(path, conn.baseUrl), {
      method,
      headers: {
        accept: 'application/json',
        ...(conn.key ? { authorization: `Bearer ${conn.key}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (err) {
    throw new CliError(
      `cannot reach ${conn.baseUrl}: ${(err as Error).cause ?? (err as Error).message}`,
      EXIT.unavailable,
    );
  }
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {}
  if (!res.ok) {
    // problem+json, or an OperationOutcome (the Bulk Data endpoints) carrying the same stable code
    const p = (parsed ?? {}) as { code?: string; detail?: string; title?: string };
    const issue = (
      parsed as { issue?: Array<{ diagnostics?: string; details?: { coding?: Array<{ code?: string }> } }> }
    )?.issue?.[0];
    const code = p.code ?? issue?.details?.coding?.[0]?.code ?? `http_${res.status}`;
    const detail = p.detail ?? p.title ?? issue?.diagnostics ?? text;
    throw new CliError(`${res.status} ${code}: ${detail}`, exitCodeFor(res.status), parsed);
  }
  return { status: res.status, headers: res.headers, body: parsed };
}
