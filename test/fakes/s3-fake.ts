/**
 * A local S3 endpoint (path-style addressing) speaking the REST protocol for the operations Triage uses:
 * GetObject (streamed, with backpressure), HeadObject, PutObject, CreateMultipartUpload, UploadPart,
 * CompleteMultipartUpload (parts under 5 MiB but the last refused with EntityTooSmall, as S3 does) and
 * AbortMultipartUpload, with S3's XML error bodies. No maintained S3 emulator on npm works offline (s3rver was last
 * published in 2021), hence this one.
 *
 * Every request's SigV4 signature is VERIFIED (test/fakes/sigv4.ts: the SDK's own signer over what was received,
 * with the known test credentials): a header-signed request that does not match is a 403 SignatureDoesNotMatch, a
 * presigned URL that does not match is a 403 too, and one past its X-Amz-Expires is a 403 AccessDenied "Request has
 * expired". Objects can be generated line by line as they are sent, so a large input costs the fake no memory.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { SigV4Verifier, TEST_CREDENTIALS } from './sigv4.ts';

export { TEST_CREDENTIALS };

const MIN_PART = 5 * 1024 * 1024;

interface StoredObject {
  /** the bytes, or a generator of the object's lines (sent as they are made) */
  body: Buffer | { size: number; lines: () => Iterable<string> };
  metadata: Record<string, string>;
  contentType: string;
  etag: string;
}

export interface S3Request {
  method: string;
  op: string;
  bucket: string;
  key: string;
  signature: 'valid' | 'invalid' | 'presigned' | 'expired';
}

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export class S3Fake {
  readonly region = 'eu-west-2';
  readonly requests: S3Request[] = [];
  /** added to the clock presigned URLs are checked against (a test moves it past their expiry) */
  clockSkewMs = 0;
  /** writes (PutObject, multipart calls) under these key prefixes answer 500 InternalError, this many times more */
  readonly failingWrites = new Map<string, number>();
  readonly #objects = new Map<string, StoredObject>();
  readonly #uploads = new Map<
    string,
    { bucket: string; key: string; parts: Map<number, Buffer>; meta: StoredObject }
  >();
  readonly #buckets: Set<string>;
  readonly #sockets = new Set<Socket>();
  readonly #server: Server;
  readonly #sigv4: SigV4Verifier;
  #port = 0;

  private constructor(buckets: string[]) {
    this.#buckets = new Set(buckets);
    this.#sigv4 = new SigV4Verifier({
      service: 's3',
      region: this.region,
      uriEscapePath: false,
      port: () => this.#port,
      now: () => Date.now() + this.clockSkewMs,
    });
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: Error) => {
        if (!res.headersSent) this.#error(res, 500, 'InternalError', `fake failed: ${err.message}`);
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

  static async start(buckets: string[]): Promise<S3Fake> {
    const fake = new S3Fake(buckets);
    await new Promise<void>((resolve) => fake.#server.listen(0, '127.0.0.1', resolve));
    fake.#port = (fake.#server.address() as AddressInfo).port;
    return fake;
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  put(bucket: string, key: string, body: string | Buffer, metadata: Record<string, string> = {}): void {
    const bytes = Buffer.from(body);
    this.#objects.set(`${bucket}/${key}`, {
      body: bytes,
      metadata,
      contentType: 'application/octet-stream',
      etag: createHash('md5').update(bytes).digest('hex'),
    });
  }

  delete(bucket: string, key: string): void {
    this.#objects.delete(`${bucket}/${key}`);
  }

  /** An object made line by line while it is sent (`size`: the byte length of all lines) */
  putGenerated(bucket: string, key: string, size: number, lines: () => Iterable<string>): void {
    this.#objects.set(`${bucket}/${key}`, {
      body: { size, lines },
      metadata: {},
      contentType: 'application/x-ndjson',
      etag: randomBytes(16).toString('hex'),
    });
  }

  object(bucket: string, key: string): { text: string; metadata: Record<string, string> } | undefined {
    const o = this.#objects.get(`${bucket}/${key}`);
    if (!o || !Buffer.isBuffer(o.body)) return undefined;
    return { text: o.body.toString('utf8'), metadata: o.metadata };
  }

  keys(bucket: string): string[] {
    return [...this.#objects.keys()].filter((k) => k.startsWith(`${bucket}/`)).map((k) => k.slice(bucket.length + 1));
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  #error(res: ServerResponse, status: number, code: string, message: string, head = false): void {
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xml(message)}</Message><RequestId>fake-${this.requests.length}</RequestId></Error>`;
    res.writeHead(status, { 'content-type': 'application/xml', 'x-amz-request-id': `fake-${this.requests.length}` });
    res.end(head ? undefined : body);
  }

  #objectHeaders(o: StoredObject): Record<string, string | number> {
    const size = Buffer.isBuffer(o.body) ? o.body.length : o.body.size;
    return {
      'content-type': o.contentType,
      'content-length': size,
      etag: `"${o.etag}"`,
      'last-modified': new Date(0).toUTCString(),
      'accept-ranges': 'bytes',
      ...Object.fromEntries(Object.entries(o.metadata).map(([k, v]) => [`x-amz-meta-${k}`, v])),
    };
  }

  /** Sends the object a piece at a time, waiting for the socket to drain: the client's pace sets the fake's. */
  async #send(res: ServerResponse, o: StoredObject): Promise<void> {
    const write = (chunk: string | Buffer) =>
      res.write(chunk) ? Promise.resolve() : new Promise<void>((resolve) => res.once('drain', resolve));
    if (Buffer.isBuffer(o.body)) {
      for (let i = 0; i < o.body.length && !res.destroyed; i += 64 * 1024)
        await write(o.body.subarray(i, i + 64 * 1024));
    } else {
      let batch = '';
      for (const line of o.body.lines()) {
        if (res.destroyed) return;
        batch += line;
        if (batch.length >= 64 * 1024) {
          await write(batch);
          batch = '';
        }
      }
      if (batch) await write(batch);
    }
    res.end();
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const [, bucket = '', ...rest] = url.pathname.split('/');
    const key = decodeURIComponent(rest.join('/'));
    const q = url.searchParams;
    const method = req.method ?? 'GET';
    const op =
      method === 'POST' && q.has('uploads')
        ? 'CreateMultipartUpload'
        : method === 'POST' && q.has('uploadId')
          ? 'CompleteMultipartUpload'
          : method === 'PUT' && q.has('uploadId')
            ? 'UploadPart'
            : method === 'DELETE' && q.has('uploadId')
              ? 'AbortMultipartUpload'
              : ({ GET: 'GetObject', HEAD: 'HeadObject', PUT: 'PutObject' } as Record<string, string>)[method];
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const presigned = q.has('X-Amz-Signature');
    const check = presigned ? await this.#sigv4.verifyPresigned(req, url) : undefined;
    const signature = presigned
      ? check === 'ok'
        ? 'presigned'
        : check === 'expired'
          ? 'expired'
          : 'invalid'
      : (await this.#sigv4.verify(req, url, body))
        ? 'valid'
        : 'invalid';
    this.requests.push({ method, op: op ?? 'unknown', bucket, key, signature });
    const head = method === 'HEAD';
    if (signature === 'expired') return this.#error(res, 403, 'AccessDenied', 'Request has expired', head);
    if (signature === 'invalid') {
      return this.#error(
        res,
        403,
        'SignatureDoesNotMatch',
        'The request signature we calculated does not match the signature you provided.',
        head,
      );
    }
    if (presigned && op !== 'GetObject') return this.#error(res, 403, 'AccessDenied', 'presigned for GET only');
    if (!op || !key) return this.#error(res, 405, 'MethodNotAllowed', 'not supported by this fake', head);
    if (!this.#buckets.has(bucket)) return this.#error(res, 404, 'NoSuchBucket', 'The bucket does not exist', head);
    if (op !== 'GetObject' && op !== 'HeadObject') {
      for (const [prefix, left] of this.failingWrites) {
        if (!key.startsWith(prefix) || left <= 0) continue;
        this.failingWrites.set(prefix, left - 1);
        return this.#error(res, 500, 'InternalError', 'We encountered an internal error. Please try again.');
      }
    }
    const id = `${bucket}/${key}`;
    const meta = (): StoredObject => ({
      body: Buffer.alloc(0),
      contentType: String(req.headers['content-type'] ?? 'binary/octet-stream'),
      metadata: Object.fromEntries(
        Object.entries(req.headers)
          .filter(([k]) => k.startsWith('x-amz-meta-'))
          .map(([k, v]) => [k.slice('x-amz-meta-'.length), String(v)]),
      ),
      etag: '',
    });
    switch (op) {
      case 'GetObject':
      case 'HeadObject': {
        const o = this.#objects.get(id);
        if (!o) return this.#error(res, 404, 'NoSuchKey', 'The specified key does not exist.', head);
        res.writeHead(200, this.#objectHeaders(o));
        if (head) return void res.end();
        return this.#send(res, o);
      }
      case 'PutObject': {
        const o = { ...meta(), body, etag: createHash('md5').update(body).digest('hex') };
        this.#objects.set(id, o);
        res.writeHead(200, { etag: `"${o.etag}"`, 'content-length': 0 });
        return void res.end();
      }
      case 'CreateMultipartUpload': {
        const uploadId = randomBytes(12).toString('hex');
        this.#uploads.set(uploadId, { bucket, key, parts: new Map(), meta: meta() });
        res.writeHead(200, { 'content-type': 'application/xml' });
        return void res.end(
          `<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult><Bucket>${bucket}</Bucket><Key>${xml(key)}</Key><UploadId>${uploadId}</UploadId></InitiateMultipartUploadResult>`,
        );
      }
      case 'UploadPart': {
        const upload = this.#uploads.get(q.get('uploadId') ?? '');
        const part = Number(q.get('partNumber'));
        if (!upload || upload.key !== key) return this.#error(res, 404, 'NoSuchUpload', 'no such upload');
        if (!Number.isInteger(part) || part < 1 || part > 10_000)
          return this.#error(res, 400, 'InvalidArgument', 'partNumber');
        upload.parts.set(part, body);
        res.writeHead(200, { etag: `"${createHash('md5').update(body).digest('hex')}"`, 'content-length': 0 });
        return void res.end();
      }
      case 'CompleteMultipartUpload': {
        const uploadId = q.get('uploadId') ?? '';
        const upload = this.#uploads.get(uploadId);
        if (!upload || upload.key !== key) return this.#error(res, 404, 'NoSuchUpload', 'no such upload');
        const listed = [...body.toString('utf8').matchAll(/<PartNumber>(\d+)<\/PartNumber>/g)].map((m) => Number(m[1]));
        const parts = listed.map((n) => upload.parts.get(n));
        if (listed.length === 0 || parts.some((p) => p === undefined)) {
          return this.#error(res, 400, 'InvalidPart', 'One or more of the specified parts could not be found.');
        }
        if (parts.slice(0, -1).some((p) => (p as Buffer).length < MIN_PART)) {
          return this.#error(
            res,
            400,
            'EntityTooSmall',
            'Your proposed upload is smaller than the minimum allowed size',
          );
        }
        const whole = Buffer.concat(parts as Buffer[]);
        const etag = `${createHash('md5').update(whole).digest('hex')}-${parts.length}`;
        this.#objects.set(id, { ...upload.meta, body: whole, etag });
        this.#uploads.delete(uploadId);
        this.multipartCompleted.push({ key, parts: parts.length });
        res.writeHead(200, { 'content-type': 'application/xml' });
        return void res.end(
          `<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult><Location>${this.url}/${bucket}/${xml(key)}</Location><Bucket>${bucket}</Bucket><Key>${xml(key)}</Key><ETag>"${etag}"</ETag></CompleteMultipartUploadResult>`,
        );
      }
      case 'AbortMultipartUpload':
        this.#uploads.delete(q.get('uploadId') ?? '');
        res.writeHead(204);
        return void res.end();
    }
  }

  /** multipart uploads completed: which key, in how many parts */
  readonly multipartCompleted: Array<{ key: string; parts: number }> = [];
}
