/**
 * A local Google Cloud Storage endpoint speaking the JSON API for what Triage uses: object metadata
 * (`GET /storage/v1/b/{bucket}/o/{object}`), media download (`?alt=media`, with `x-goog-hash` for the client's CRC32C
 * check, a `generation` honoured), and resumable uploads (`POST /upload/storage/v1/b/{bucket}/o?uploadType=resumable`
 * opens a session; `PUT` chunks with Content-Range answer 308 with the Range received until the last, which answers
 * the object's metadata with its crc32c and md5Hash). Errors in the JSON API's shape.
 *
 * Credentials are checked as Google does with a service account key: every API call carries a self-signed JWT
 * (RS256) whose signature is VERIFIED with the account's public key. V4 signed URLs (`GET /{bucket}/{object}?X-Goog-…`)
 * are verified too: the canonical request is rebuilt from what was received, the RSA-SHA256 signature checked with
 * the public key, and a URL past X-Goog-Date + X-Goog-Expires is refused (400 ExpiredToken, as GCS's XML API does).
 */
import { createHash, createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, verify } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { CRC32C } from '@google-cloud/storage';
import { jwtVerify } from 'jose';

interface StoredObject {
  body: Buffer;
  generation: string;
  contentType: string;
  metadata: Record<string, string>;
}

export interface GcsRequest {
  method: string;
  op: string;
  bucket: string;
  name: string;
  auth: 'valid' | 'invalid' | 'signed-url' | 'expired' | 'session';
}

/** A service account key file (JSON) with a fresh RSA key: what GOOGLE_APPLICATION_CREDENTIALS points at */
export function serviceAccountKey(projectId = 'triage-test') {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const email = `triage-batch@${projectId}.iam.gserviceaccount.com`;
  return {
    publicKey,
    json: {
      type: 'service_account',
      project_id: projectId,
      private_key_id: randomBytes(20).toString('hex'),
      private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      client_email: email,
      client_id: '100000000000000000001',
      token_uri: 'https://oauth2.googleapis.com/token',
    },
  };
}

const rfc3986 = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

function hashes(body: Buffer): { crc32c: string; md5Hash: string } {
  const crc = new CRC32C();
  crc.update(body);
  return { crc32c: crc.toString(), md5Hash: createHash('md5').update(body).digest('base64') };
}

export class GcsFake {
  readonly requests: GcsRequest[] = [];
  /** added to the clock signed URLs are checked against (a test moves it past their expiry) */
  clockSkewMs = 0;
  /** resumable upload PUTs received, per object name */
  readonly chunks = new Map<string, number>();
  readonly #objects = new Map<string, StoredObject>();
  readonly #sessions = new Map<string, { bucket: string; name: string; meta: StoredObject; received: Buffer[] }>();
  readonly #buckets: Set<string>;
  readonly #publicKey: KeyObject;
  readonly #email: string;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #generation = 1_700_000_000_000_000;
  #port = 0;

  private constructor(buckets: string[], account: { publicKey: KeyObject; email: string }) {
    this.#buckets = new Set(buckets);
    this.#publicKey = account.publicKey.type === 'public' ? account.publicKey : createPublicKey(account.publicKey);
    this.#email = account.email;
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: Error) => {
        if (!res.headersSent) this.#error(res, 500, 'backendError', `fake failed: ${err.message}`);
        else res.destroy();
      });
    });
    // the cloud keeps idle connections longer than its clients do: with Node's 5 s default a client on busy cores
    // reused a socket the fake had just closed (ECONNRESET mid-test)
    this.#server.keepAliveTimeout = 65_000;
    this.#server.on('connection', (s) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
  }

  static async start(buckets: string[], account: { publicKey: KeyObject; email: string }): Promise<GcsFake> {
    const fake = new GcsFake(buckets, account);
    await new Promise<void>((resolve) => fake.#server.listen(0, '127.0.0.1', resolve));
    fake.#port = (fake.#server.address() as AddressInfo).port;
    return fake;
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  put(bucket: string, name: string, body: string | Buffer, metadata: Record<string, string> = {}): void {
    this.#objects.set(`${bucket}/${name}`, {
      body: Buffer.from(body),
      generation: String(this.#generation++),
      contentType: 'application/x-ndjson',
      metadata,
    });
  }

  object(bucket: string, name: string): { text: string; metadata: Record<string, string> } | undefined {
    const o = this.#objects.get(`${bucket}/${name}`);
    return o ? { text: o.body.toString('utf8'), metadata: o.metadata } : undefined;
  }

  names(bucket: string): string[] {
    return [...this.#objects.keys()].filter((k) => k.startsWith(`${bucket}/`)).map((k) => k.slice(bucket.length + 1));
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  #error(res: ServerResponse, code: number, reason: string, message: string): void {
    res.writeHead(code, { 'content-type': 'application/json; charset=UTF-8' });
    res.end(JSON.stringify({ error: { code, message, errors: [{ domain: 'global', reason, message }] } }));
  }

  #resource(bucket: string, name: string, o: StoredObject) {
    return {
      kind: 'storage#object',
      id: `${bucket}/${name}/${o.generation}`,
      name,
      bucket,
      generation: o.generation,
      metageneration: '1',
      contentType: o.contentType,
      size: String(o.body.length),
      ...hashes(o.body),
      ...(Object.keys(o.metadata).length > 0 ? { metadata: o.metadata } : {}),
    };
  }

  async #bearer(req: IncomingMessage): Promise<boolean> {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) return false;
    try {
      await jwtVerify(m[1] as string, this.#publicKey, { issuer: this.#email, algorithms: ['RS256'] });
      return true;
    } catch {
      return false;
    }
  }

  /** A V4 signed URL: the canonical request rebuilt from what was received, its signature checked with the key. */
  #signedUrl(req: IncomingMessage, url: URL): 'signed-url' | 'expired' | 'invalid' {
    const p = url.searchParams;
    const credential = p.get('X-Goog-Credential') ?? '';
    const date = p.get('X-Goog-Date') ?? '';
    const expires = Number(p.get('X-Goog-Expires'));
    const signed = p.get('X-Goog-SignedHeaders') ?? '';
    const [email, ...scopeParts] = credential.split('/');
    if (p.get('X-Goog-Algorithm') !== 'GOOG4-RSA-SHA256' || email !== this.#email || signed !== 'host')
      return 'invalid';
    const query = [...p.entries()]
      .filter(([k]) => k !== 'X-Goog-Signature')
      .map(([k, v]) => [rfc3986(k), rfc3986(v)])
      .sort((a, b) => ((a[0] as string) < (b[0] as string) ? -1 : 1))
      .map(([k, v]) => `${k}=${v}`)
      .join('&');
    const host = String(req.headers.host ?? '').replace(/:\d+$/, '');
    const canonical = [req.method, url.pathname, query, `host:${host}\n`, signed, 'UNSIGNED-PAYLOAD'].join('\n');
    const toSign = [
      'GOOG4-RSA-SHA256',
      date,
      scopeParts.join('/'),
      createHash('sha256').update(canonical).digest('hex'),
    ].join('\n');
    const signature = Buffer.from(p.get('X-Goog-Signature') ?? '', 'hex');
    if (!verify('RSA-SHA256', Buffer.from(toSign), this.#publicKey, signature)) return 'invalid';
    const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(date);
    if (!m || !Number.isInteger(expires)) return 'invalid';
    const start = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
    return Date.now() + this.clockSkewMs > start + expires * 1000 ? 'expired' : 'signed-url';
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const api = /^\/storage\/v1\/b\/([^/]+)\/o\/(.+)$/.exec(url.pathname);
    const upload = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(url.pathname);
    const xmlPath = /^\/([^/]+)\/(.+)$/.exec(url.pathname);
    const sessionId = url.searchParams.get('upload_id');

    if (upload && method === 'PUT' && sessionId) {
      const session = this.#sessions.get(sessionId);
      this.requests.push({
        method,
        op: 'upload-chunk',
        bucket: upload[1] as string,
        name: session?.name ?? '',
        auth: 'session',
      });
      if (!session) return this.#error(res, 404, 'notFound', 'No such upload session');
      const contentRange = String(req.headers['content-range'] ?? '');
      const have = session.received.reduce((n, b) => n + b.length, 0);
      // a status query (a client resuming a session): how many bytes have arrived
      if (/^bytes \*\/(\d+|\*)$/.test(contentRange)) {
        res.writeHead(308, have > 0 ? { range: `bytes=0-${have - 1}`, 'content-length': 0 } : { 'content-length': 0 });
        return void res.end();
      }
      const range = /^bytes (\d+)-(\d+|\*)\/(\d+|\*)$/.exec(contentRange);
      if (!range) return this.#error(res, 400, 'invalid', 'bad Content-Range');
      this.chunks.set(session.name, (this.chunks.get(session.name) ?? 0) + 1);
      if (Number(range[1]) !== have)
        return this.#error(res, 400, 'invalid', 'chunk does not start where the last ended');
      session.received.push(body);
      const total = range[3] === '*' ? undefined : Number(range[3]);
      const now = have + body.length;
      if (total === undefined || now < total) {
        res.writeHead(308, now > 0 ? { range: `bytes=0-${now - 1}`, 'content-length': 0 } : { 'content-length': 0 });
        return void res.end();
      }
      const o = { ...session.meta, body: Buffer.concat(session.received), generation: String(this.#generation++) };
      this.#objects.set(`${session.bucket}/${session.name}`, o);
      this.#sessions.delete(sessionId);
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end(JSON.stringify(this.#resource(session.bucket, session.name, o)));
    }

    if (!api && !upload && xmlPath && url.searchParams.has('X-Goog-Signature')) {
      const [, bucket, encoded] = xmlPath as unknown as string[];
      const name = decodeURIComponent(encoded as string);
      const auth = this.#signedUrl(req, url);
      this.requests.push({ method, op: 'signed-get', bucket: bucket as string, name, auth });
      if (auth === 'expired') {
        res.writeHead(400, { 'content-type': 'application/xml' });
        return void res.end(
          '<?xml version="1.0"?><Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>',
        );
      }
      if (auth === 'invalid' || method !== 'GET') {
        res.writeHead(403, { 'content-type': 'application/xml' });
        return void res.end('<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code></Error>');
      }
      const o = this.#objects.get(`${bucket}/${name}`);
      if (!o) return this.#error(res, 404, 'notFound', 'No such object');
      res.writeHead(200, { 'content-type': o.contentType, 'content-length': o.body.length });
      return void res.end(o.body);
    }

    const [bucket = '', name = ''] = api
      ? [api[1] as string, decodeURIComponent(api[2] as string)]
      : upload
        ? [upload[1] as string, url.searchParams.get('name') ?? '']
        : [];
    const op = upload ? 'upload-start' : url.searchParams.get('alt') === 'media' ? 'media' : 'metadata';
    const valid = await this.#bearer(req);
    this.requests.push({ method, op, bucket, name, auth: valid ? 'valid' : 'invalid' });
    if (!valid) return this.#error(res, 401, 'required', 'Invalid Credentials');
    if (!api && !upload) return this.#error(res, 404, 'notFound', 'Not Found');
    if (!this.#buckets.has(bucket)) return this.#error(res, 404, 'notFound', 'The specified bucket does not exist.');

    if (upload && method === 'POST' && url.searchParams.get('uploadType') === 'resumable' && name) {
      const meta = body.length > 0 ? (JSON.parse(body.toString('utf8')) as { metadata?: Record<string, string> }) : {};
      const id = randomBytes(16).toString('hex');
      this.#sessions.set(id, {
        bucket,
        name,
        received: [],
        meta: {
          body: Buffer.alloc(0),
          generation: '0',
          contentType: String(req.headers['x-upload-content-type'] ?? 'application/octet-stream'),
          metadata: meta.metadata ?? {},
        },
      });
      res.writeHead(200, {
        location: `${this.url}/upload/storage/v1/b/${bucket}/o?uploadType=resumable&name=${encodeURIComponent(name)}&upload_id=${id}`,
        'content-length': 0,
      });
      return void res.end();
    }
    if (!api || method !== 'GET') return this.#error(res, 405, 'invalid', 'not supported by this fake');
    const o = this.#objects.get(`${bucket}/${name}`);
    const generation = url.searchParams.get('generation');
    if (!o || (generation && generation !== o.generation)) {
      return this.#error(res, 404, 'notFound', `No such object: ${bucket}/${name}`);
    }
    if (op === 'metadata') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end(JSON.stringify(this.#resource(bucket, name, o)));
    }
    const h = hashes(o.body);
    res.writeHead(200, {
      'content-type': o.contentType,
      'content-length': o.body.length,
      'x-goog-generation': o.generation,
      'x-goog-hash': `crc32c=${h.crc32c},md5=${h.md5Hash}`,
      'x-goog-stored-content-length': o.body.length,
    });
    res.end(o.body);
  }
}
