/**
 * A local SageMaker runtime endpoint that speaks the real wire protocol of InvokeEndpoint (restJson1):
 * `POST /endpoints/{EndpointName}/invocations`, the body as sent, `X-Amzn-SageMaker-Target-Model` /
 * `-Target-Variant` headers, and AWS error shapes (`x-amzn-ErrorType` header, `{"__type", "message"}` body).
 *
 * Every request's SigV4 signature is VERIFIED: the fake recomputes it with @smithy/signature-v4 (service
 * `sagemaker`, its region, the known test credentials, a node:crypto SHA-256) over the received method, path, query,
 * signed headers and body, and answers 403 InvalidSignatureException when it differs. Faults are set per test.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { SigV4Verifier, TEST_CREDENTIALS } from './sigv4.ts';

export { TEST_CREDENTIALS };

/** The scores of one request's rows: per row a number, a list of numbers, or an object keyed by tensor names. */
export type Scorer = (rows: number[][]) => unknown[] | Promise<unknown[]>;

export type SageMakerFault =
  | { mode: 'ok' }
  /** answers correctly after `ms` (or never, if the client gives up first) */
  | { mode: 'slow'; ms: number }
  /** ModelError: 424 with the container's 5xx as OriginalStatusCode; ServiceUnavailable 503; InternalFailure 500 */
  | { mode: '5xx'; error?: 'ModelError' | 'ServiceUnavailable' | 'InternalFailure' }
  /** ThrottlingException, HTTP 400, as SageMaker sends it */
  | { mode: 'throttled' }
  /** ValidationError, HTTP 400 */
  | { mode: 'validation' }
  /** 200 with a body that is not a usable reply */
  | { mode: 'malformed'; shape: 'not-json' | 'wrong-count' | 'non-numbers' };

export interface RecordedRequest {
  endpointName: string;
  contentType: string | undefined;
  accept: string | undefined;
  targetModel: string | undefined;
  targetVariant: string | undefined;
  /** the signature was recomputed and matched */
  signatureValid: boolean;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** the feature rows the request carried (JSON instances or CSV lines) */
  rows: number[][];
  fault: SageMakerFault['mode'] | 'bad-signature';
}

const sumScorer: Scorer = (rows) => rows.map((r) => r.reduce((a, b) => a + b, 0));

export class SageMakerFake {
  readonly region: string;
  readonly requests: RecordedRequest[] = [];
  /** faults for the next requests, in order; then `fault` */
  readonly queue: SageMakerFault[] = [];
  fault: SageMakerFault = { mode: 'ok' };
  scorer: Scorer;
  #server: Server;
  #port = 0;
  #sockets = new Set<Socket>();
  #timers = new Set<NodeJS.Timeout>();
  #sigv4: SigV4Verifier;

  private constructor(region: string, scorer: Scorer | undefined) {
    this.region = region;
    this.scorer = scorer ?? sumScorer;
    this.#sigv4 = new SigV4Verifier({ service: 'sagemaker', region, port: () => this.#port });
    this.#server = this.#newServer();
  }

  static async start(options: { region?: string; scorer?: Scorer } = {}): Promise<SageMakerFake> {
    const fake = new SageMakerFake(options.region ?? 'eu-west-2', options.scorer);
    await fake.#listen(0);
    return fake;
  }

  get port(): number {
    return this.#port;
  }

  /** the endpoint override for the SDK client */
  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** requests that reached the handler (whatever the answer) */
  get count(): number {
    return this.requests.length;
  }

  /** Stops listening and drops every open connection: new connections are refused (ECONNREFUSED). */
  async refuseConnections(): Promise<void> {
    await this.#shutdown();
  }

  /** Listens again on the same port. */
  async acceptConnections(): Promise<void> {
    this.#server = this.#newServer();
    await this.#listen(this.#port);
  }

  async close(): Promise<void> {
    await this.#shutdown();
  }

  #newServer(): Server {
    const server = createServer((req, res) => {
      this.#handle(req, res).catch((err: Error) => {
        if (!res.headersSent) this.#awsError(res, 500, 'InternalFailure', `fake failed: ${err.message}`);
      });
    });
    server.keepAliveTimeout = 5_000;
    server.on('connection', (socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    return server;
  }

  #listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, '127.0.0.1', () => {
        this.#port = (this.#server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  async #shutdown(): Promise<void> {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    await closed;
  }

  #awsError(res: ServerResponse, status: number, type: string, message: string, extra: object = {}): void {
    const body = JSON.stringify({ __type: type, message, Message: message, ...extra });
    res.writeHead(status, {
      'content-type': 'application/json',
      'x-amzn-errortype': `${type}:http://internal.amazon.com/coral/com.amazon.sagemaker/`,
      'x-amzn-requestid': `fake-${this.requests.length}`,
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const url = new URL(req.url ?? '/', 'http://fake');
    const route = /^\/endpoints\/([^/]+)\/invocations$/.exec(url.pathname);
    if (req.method !== 'POST' || !route) {
      this.#awsError(res, 404, 'UnknownOperationException', `no route ${req.method} ${url.pathname}`);
      return;
    }
    const header = (name: string) => {
      const v = req.headers[name];
      return Array.isArray(v) ? v.join(',') : v;
    };
    const contentType = header('content-type');
    const text = body.toString('utf8');
    const signatureValid = await this.#sigv4.verify(req, url, body);
    const fault = signatureValid ? (this.queue.shift() ?? this.fault) : undefined;
    let rows: number[][] = [];
    try {
      rows = contentType?.includes('csv')
        ? text
            .split('\n')
            .filter((l) => l !== '')
            .map((l) => l.split(',').map(Number))
        : (JSON.parse(text) as { instances: number[][] }).instances;
    } catch {
      rows = [];
    }
    this.requests.push({
      endpointName: decodeURIComponent(route[1] as string),
      contentType,
      accept: header('accept'),
      targetModel: header('x-amzn-sagemaker-target-model'),
      targetVariant: header('x-amzn-sagemaker-target-variant'),
      signatureValid,
      headers: { ...req.headers },
      body: text,
      rows,
      fault: fault?.mode ?? 'bad-signature',
    });
    if (!fault) {
      this.#awsError(
        res,
        403,
        'InvalidSignatureException',
        'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
      );
      return;
    }
    switch (fault.mode) {
      case 'throttled':
        this.#awsError(res, 400, 'ThrottlingException', 'Rate exceeded');
        return;
      case 'validation':
        this.#awsError(res, 400, 'ValidationError', 'Endpoint does not accept this input');
        return;
      case '5xx': {
        const error = fault.error ?? 'ModelError';
        if (error === 'ModelError') {
          this.#awsError(res, 424, 'ModelError', 'Received server error (500) from primary with message "boom"', {
            OriginalStatusCode: 500,
            OriginalMessage: 'boom',
            LogStreamArn: 'arn:aws:logs:eu-west-2:000000000000:log-group:/aws/sagemaker/Endpoints/fake',
          });
        } else {
          this.#awsError(res, error === 'ServiceUnavailable' ? 503 : 500, error, `${error} (fake)`);
        }
        return;
      }
      case 'malformed': {
        const payload =
          fault.shape === 'not-json'
            ? '<html><body>502 Bad Gateway</body></html>'
            : fault.shape === 'wrong-count'
              ? JSON.stringify({ predictions: [] })
              : JSON.stringify({ predictions: rows.map(() => 'high') });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(payload);
        return;
      }
      case 'slow': {
        const wait = new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            this.#timers.delete(t);
            resolve();
          }, fault.ms);
          this.#timers.add(t);
          res.on('close', () => {
            clearTimeout(t);
            this.#timers.delete(t);
            resolve();
          });
        });
        await wait;
        if (res.destroyed || res.writableEnded) return;
        break;
      }
      case 'ok':
        break;
    }
    const predictions = await this.scorer(rows);
    const accept = header('accept') ?? contentType ?? 'application/json';
    const csv = accept.includes('csv');
    const payload = csv
      ? predictions.map((p) => (Array.isArray(p) ? p.join(',') : String(p))).join('\n')
      : JSON.stringify({ predictions });
    res.writeHead(200, {
      'content-type': csv ? 'text/csv' : 'application/json',
      'x-amzn-invoked-production-variant': header('x-amzn-sagemaker-target-variant') ?? 'AllTraffic',
    });
    res.end(payload);
  }
}

/**
 * A real SageMakerRuntimeClient pointed at the fake: static test credentials (or others, to prove the signature is
 * checked), one attempt per send, as the gateway configures it.
 */
export async function sagemakerTestClient(
  fake: SageMakerFake,
  credentials: { accessKeyId: string; secretAccessKey: string } = TEST_CREDENTIALS,
) {
  const { createSageMakerClient } = await import('../../src/runtime/sagemaker.ts');
  return createSageMakerClient({ region: fake.region, endpointUrl: fake.url }, { credentials });
}
