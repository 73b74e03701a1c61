/**
 * A real HTTP callback receiver on 127.0.0.1 that verifies every request with `standardwebhooks`, as a client's
 * endpoint would.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import type { CloudEvent } from '../../src/callbacks/event.ts';

export interface Delivery {
  id: string;
  status: number;
  verified: boolean;
  body: string;
  headers: Record<string, string>;
  path: string;
}

/**
 * A real HTTP receiver on 127.0.0.1: answers 503 while `down` (or for the next `failNext` requests), otherwise
 * verifies the Standard Webhooks signature and records the event once per webhook-id (receivers de-duplicate).
 * `deliveries` keeps every raw request, retries included.
 */
export class Receiver {
  readonly deliveries: Delivery[] = [];
  readonly events = new Map<string, CloudEvent<Record<string, unknown>>>();
  down = false;
  failNext = 0;
  #server: http.Server;
  #secret: string;
  port = 0;

  private constructor(secret: string) {
    this.#secret = secret;
    this.#server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const headers = Object.fromEntries(
          Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : (v ?? '')]),
        );
        const id = headers['webhook-id'] ?? '';
        const record = (status: number, verified: boolean) => {
          this.deliveries.push({ id, status, verified, body, headers, path: req.url ?? '' });
          res.writeHead(status).end();
        };
        if (this.down) return record(503, false);
        if (this.failNext > 0) {
          this.failNext--;
          return record(503, false);
        }
        let event: CloudEvent<Record<string, unknown>>;
        try {
          event = new Webhook(this.#secret).verify(body, headers) as CloudEvent<Record<string, unknown>>;
        } catch {
          return record(401, false);
        }
        if (!this.events.has(id)) this.events.set(id, event);
        record(204, true);
      });
    });
  }

  static async start(secret: string): Promise<Receiver> {
    const r = new Receiver(secret);
    await new Promise<void>((resolve) => r.#server.listen(0, '127.0.0.1', resolve));
    r.port = (r.#server.address() as AddressInfo).port;
    return r;
  }

  url(pathname = '/hooks'): string {
    return `http://127.0.0.1:${this.port}${pathname}`;
  }

  /** raw requests about one job (event ids are `evt-<job id>-<event>`) */
  deliveriesFor(jobId: string): Delivery[] {
    return this.deliveries.filter((d) => d.id.startsWith(`evt-${jobId}-`));
  }

  eventsFor(jobId: string): Array<CloudEvent<Record<string, unknown>>> {
    return [...this.events.entries()].filter(([id]) => id.startsWith(`evt-${jobId}-`)).map(([, e]) => e);
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
