/**
 * A local FHIR server on a real socket that follows the Bulk Data Access IG (v2) and SMART Backend Services:
 *
 * - `POST /auth/token`: client_credentials with a client-assertion JWT, VERIFIED (signature against the registered
 *   public key, iss = sub = client id, aud = the token URL, exp at most five minutes out, jti never reused); answers an
 *   access token with `expires_in`, or an OAuth error.
 * - `GET /fhir/$export`, `/fhir/Patient/$export`, `/fhir/Group/{id}/$export`: kick-off (needs `Prefer: respond-async`
 *   and a valid token), 202 + Content-Location; an unknown group is 404; faults per test.
 * - `GET /fhir/status/{job}`: 202 + Retry-After + X-Progress for `pollsBeforeDone` polls, then 200 and the completion
 *   manifest; `DELETE` releases the job.
 * - `GET /fhir/files/{job}/{name}`: the NDJSON, streamed; needs the token when the manifest says so.
 *
 * Every protected endpoint answers 401 to a missing, unknown or expired token. Everything asked is recorded.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { type CryptoKey, jwtVerify } from 'jose';

export interface BulkFakeOptions {
  /** 'smart': tokens from the token endpoint; 'bearer': this one static token; 'none': no auth */
  auth: 'smart' | 'bearer' | 'none';
  clientId?: string;
  publicKey?: CryptoKey;
  staticToken?: string;
  /** resources by type, NDJSON lines; a type given as several arrays becomes several files */
  files: Record<string, string[][]>;
  /** the Observation files served when `_since` is asked (only what changed) */
  changedFiles?: Record<string, string[][]>;
  groups?: string[];
}

export interface Faults {
  /** the kick-off answers this status with an OperationOutcome */
  kickoffStatus?: number;
  pollsBeforeDone: number;
  retryAfter?: string;
  /** the export fails: the status URL answers 500 with an OperationOutcome */
  exportError?: boolean;
  /** file URLs answer 404, as after their expiry */
  filesExpired?: boolean;
  /** files end cleanly after half their lines (the manifest still counts them all) */
  filesCutShort?: boolean;
  requiresAccessToken: boolean;
  tokenExpiresIn: number;
  /** the token endpoint refuses the client */
  tokenError?: string;
}

interface Job {
  id: string;
  polls: number;
  transactionTime: string;
  files: Record<string, string[][]>;
  released: boolean;
}

export interface BulkFake {
  baseUrl: string;
  tokenUrl: string;
  faults: Faults;
  kickoffs: Array<{ path: string; query: URLSearchParams; prefer: string | undefined }>;
  polls: number[];
  tokenRequests: number;
  fileRequests: Array<{ name: string; authorized: boolean }>;
  released: string[];
  /** every header value and body the fake received (to check that nothing secret was sent where it should not be) */
  refused: Array<{ path: string; status: number }>;
  revokeTokens(): void;
  close(): Promise<void>;
}

const outcome = (code: string) =>
  JSON.stringify({
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code, diagnostics: `fake: ${code}` }],
  });

export async function startBulkFake(options: BulkFakeOptions): Promise<BulkFake> {
  const tokens = new Map<string, number>(); // token → expiry (ms)
  const jtis = new Set<string>();
  const jobs = new Map<string, Job>();
  const sockets = new Set<Socket>();
  let base = '';
  const fake: BulkFake = {
    baseUrl: '',
    tokenUrl: '',
    faults: { pollsBeforeDone: 0, requiresAccessToken: true, tokenExpiresIn: 300 },
    kickoffs: [],
    polls: [],
    tokenRequests: 0,
    fileRequests: [],
    released: [],
    refused: [],
    revokeTokens: () => tokens.clear(),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };

  const authorized = (req: IncomingMessage): boolean => {
    if (options.auth === 'none') return true;
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) return false;
    if (options.auth === 'bearer') return m[1] === options.staticToken;
    const until = tokens.get(m[1] as string);
    return until !== undefined && Date.now() < until;
  };

  const send = (res: ServerResponse, status: number, body = '', headers: Record<string, string> = {}) => {
    if (status >= 400) fake.refused.push({ path: res.req.url ?? '', status });
    res.writeHead(status, { ...(body ? { 'content-type': 'application/fhir+json' } : {}), ...headers });
    res.end(body);
  };

  async function token(req: IncomingMessage, res: ServerResponse) {
    fake.tokenRequests++;
    let body = '';
    for await (const c of req) body += c;
    const form = new URLSearchParams(body);
    const error = (e: string, status = 400) => {
      fake.refused.push({ path: '/auth/token', status });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: e, error_description: 'fake says no' }));
    };
    if (fake.faults.tokenError) return error(fake.faults.tokenError, 401);
    if (form.get('grant_type') !== 'client_credentials') return error('unsupported_grant_type');
    if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer')
      return error('invalid_request');
    if (!form.get('scope')) return error('invalid_scope');
    try {
      const { payload } = await jwtVerify(form.get('client_assertion') ?? '', options.publicKey as CryptoKey, {
        issuer: options.clientId,
        subject: options.clientId,
        audience: fake.tokenUrl,
        requiredClaims: ['jti', 'exp'],
      });
      if ((payload.exp as number) > Date.now() / 1000 + 300 + 5) return error('invalid_client', 401);
      if (jtis.has(payload.jti as string)) return error('invalid_client', 401); // a replayed assertion
      jtis.add(payload.jti as string);
    } catch {
      return error('invalid_client', 401);
    }
    const access = randomBytes(24).toString('base64url');
    tokens.set(access, Date.now() + fake.faults.tokenExpiresIn * 1000);
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(
      JSON.stringify({
        access_token: access,
        token_type: 'bearer',
        expires_in: fake.faults.tokenExpiresIn,
        scope: form.get('scope'),
      }),
    );
  }

  function kickoff(req: IncomingMessage, res: ServerResponse, url: URL) {
    fake.kickoffs.push({ path: url.pathname, query: url.searchParams, prefer: String(req.headers.prefer) });
    if (!authorized(req)) return send(res, 401, outcome('login'));
    if (req.headers.prefer !== 'respond-async') return send(res, 400, outcome('invalid'));
    if (fake.faults.kickoffStatus) return send(res, fake.faults.kickoffStatus, outcome('forbidden'));
    const group = /^\/fhir\/Group\/([^/]+)\/\$export$/.exec(url.pathname)?.[1];
    if (group !== undefined && !(options.groups ?? []).includes(decodeURIComponent(group)))
      return send(res, 404, outcome('not-found'));
    const types = (url.searchParams.get('_type') ?? '').split(',').filter(Boolean);
    const source = url.searchParams.has('_since') && options.changedFiles ? options.changedFiles : options.files;
    const files = Object.fromEntries(Object.entries(source).filter(([t]) => types.length === 0 || types.includes(t)));
    const id = randomBytes(8).toString('hex');
    jobs.set(id, { id, polls: 0, transactionTime: new Date().toISOString(), files, released: false });
    send(res, 202, '', { 'content-location': `${base}/fhir/status/${id}` });
  }

  function status(req: IncomingMessage, res: ServerResponse, id: string) {
    const job = jobs.get(id);
    if (!authorized(req)) return send(res, 401, outcome('login'));
    if (!job || job.released) return send(res, 404, outcome('not-found'));
    if (req.method === 'DELETE') {
      job.released = true;
      fake.released.push(id);
      return send(res, 202);
    }
    fake.polls.push(Date.now());
    if (fake.faults.exportError) return send(res, 500, outcome('exception'));
    if (job.polls++ < fake.faults.pollsBeforeDone) {
      const pct = Math.round((100 * job.polls) / (fake.faults.pollsBeforeDone + 1));
      return send(res, 202, '', { 'retry-after': fake.faults.retryAfter ?? '1', 'x-progress': `${pct}% exported` });
    }
    const output = Object.entries(job.files).flatMap(([type, parts]) =>
      parts.map((lines, i) => ({ type, url: `${base}/fhir/files/${id}/${type}-${i}.ndjson`, count: lines.length })),
    );
    send(
      res,
      200,
      JSON.stringify({
        transactionTime: job.transactionTime,
        request: fake.kickoffs.at(-1)?.path,
        requiresAccessToken: fake.faults.requiresAccessToken,
        output,
        error: [],
      }),
      { 'content-type': 'application/json' },
    );
  }

  function file(req: IncomingMessage, res: ServerResponse, id: string, name: string) {
    const ok = authorized(req);
    fake.fileRequests.push({ name, authorized: ok });
    const job = jobs.get(id);
    const m = /^([A-Za-z]+)-(\d+)\.ndjson$/.exec(name);
    const lines = m ? job?.files[m[1] as string]?.[Number(m[2])] : undefined;
    if (fake.faults.requiresAccessToken && !ok) return send(res, 401, outcome('login'));
    if (!job || !lines || fake.faults.filesExpired) return send(res, 404, outcome('not-found'));
    res.writeHead(200, { 'content-type': 'application/fhir+ndjson' });
    const total = fake.faults.filesCutShort ? Math.floor(lines.length / 2) : lines.length;
    // written in pieces, as a large file arrives
    let i = 0;
    const pump = () => {
      while (i < total) {
        if (!res.write(`${lines[i++]}\n`)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  }

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', base);
    const p = url.pathname;
    if (req.method === 'POST' && p === '/auth/token') return void token(req, res);
    if (req.method === 'GET' && /^\/fhir\/((Patient|Group\/[^/]+)\/)?\$export$/.test(p)) return kickoff(req, res, url);
    const s = /^\/fhir\/status\/([0-9a-f]+)$/.exec(p);
    if (s && (req.method === 'GET' || req.method === 'DELETE')) return status(req, res, s[1] as string);
    const f = /^\/fhir\/files\/([0-9a-f]+)\/([^/]+)$/.exec(p);
    if (f && req.method === 'GET') return file(req, res, f[1] as string, f[2] as string);
    send(res, 404, outcome('not-found'));
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.baseUrl = `${base}/fhir`;
  fake.tokenUrl = `${base}/auth/token`;
  return fake;
}
