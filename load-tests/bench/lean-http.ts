/**
 * A lean HTTP/1.1 client for the open-loop bench: raw `net` sockets, one prebuilt request buffer written as is, and a
 * response parser that reads only what the bench reports (the status, Retry-After, where the body ends). node:http's
 * client costs about as much CPU per request as the gateway answering it; on a machine the bench shares with the
 * gateway that starves the gateway and caps the rate the client can offer. One request at a time per connection (no
 * pipelining): a pool opens a new connection when every open one is busy, up to a cap.
 */
import net from 'node:net';

/** Bytes of one request, built once: `POST <path>` with the headers given, a Content-Length and the body. */
export function buildRequest(
  url: URL,
  method: string,
  headers: Record<string, string>,
  body: Buffer = Buffer.alloc(0),
): Buffer {
  const lines = [`${method} ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`];
  for (const [name, value] of Object.entries(headers)) {
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) throw new Error(`header ${name} holds a line break`);
    lines.push(`${name}: ${value}`);
  }
  lines.push(`content-length: ${body.length}`, '', '');
  return Buffer.concat([Buffer.from(lines.join('\r\n'), 'latin1'), body]);
}

export interface LeanResponse {
  status: number;
  /** the Retry-After header's value, when there is one */
  retryAfter: string | undefined;
  /** the server said `Connection: close`: the connection is not used again */
  close: boolean;
}

/** Where `\r\n` (or with `double`, `\r\n\r\n`) starts in `data` from `from`, or -1. A plain loop: Buffer#indexOf's
 * call into C++ cost more than scanning the few hundred bytes of a head. */
function findCrlf(data: Buffer, from: number, double: boolean): number {
  const last = data.length - (double ? 4 : 2);
  for (let i = from; i <= last; i++) {
    if (data[i] === 13 && data[i + 1] === 10 && (!double || (data[i + 2] === 13 && data[i + 3] === 10))) return i;
  }
  return -1;
}
const CONTENT_LENGTH = /\r\ncontent-length:[ \t]*(\d+)/i;
const RETRY_AFTER = /\r\nretry-after:[ \t]*([^\r]*)/i;
const CHUNKED = /\r\ntransfer-encoding:[^\r]*chunked/i;
const CONNECTION_CLOSE = /\r\nconnection:[ \t]*close/i;

/**
 * Incremental parser of HTTP/1.1 responses: feed it the socket's chunks, it calls `onResponse` once a response's body
 * has fully arrived (its bytes are skipped, never kept). Handles Content-Length and chunked bodies, heads and bodies
 * split anywhere across chunks, and several responses in one chunk. Throws on a response it cannot frame.
 */
export class ResponseParser {
  readonly #onResponse: (res: LeanResponse) => void;
  /** bytes of a head (or a chunk-size line) not complete yet */
  #pending: Buffer | undefined;
  #head: LeanResponse | undefined;
  /** body bytes still to skip (Content-Length, or the rest of a chunk plus its CRLF) */
  #skip = 0;
  #chunked = false;
  /** in a chunked body after the last chunk: trailer lines until an empty one */
  #trailers = false;

  constructor(onResponse: (res: LeanResponse) => void) {
    this.#onResponse = onResponse;
  }

  /** true between responses: nothing of a response has arrived that is not finished */
  get idle(): boolean {
    return this.#head === undefined && this.#pending === undefined;
  }

  push(chunk: Buffer): void {
    let data = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
    this.#pending = undefined;
    let at = 0;
    while (at < data.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, data.length - at);
        this.#skip -= n;
        at += n;
        if (this.#skip === 0 && !this.#chunked) this.#finish();
        continue;
      }
      if (this.#head === undefined) {
        const end = findCrlf(data, at, true);
        if (end < 0) break;
        this.#startHead(data.toString('latin1', at, end + 2));
        at = end + 4;
        continue;
      }
      // chunked: a chunk-size line, or a trailer line after the last chunk
      const eol = findCrlf(data, at, false);
      if (eol < 0) break;
      const line = data.toString('latin1', at, eol);
      at = eol + 2;
      if (this.#trailers) {
        if (line === '') this.#finish();
        continue;
      }
      const size = Number.parseInt(line, 16);
      if (!Number.isFinite(size) || size < 0) throw new Error(`bad chunk size line ${JSON.stringify(line)}`);
      if (size === 0) this.#trailers = true;
      else this.#skip = size + 2;
    }
    if (at < data.length) {
      data = data.subarray(at);
      this.#pending = Buffer.from(data); // a copy: the socket's buffer is not ours to keep
    }
  }

  #startHead(head: string): void {
    if (!head.startsWith('HTTP/1.')) throw new Error(`not an HTTP/1.x response: ${JSON.stringify(head.slice(0, 20))}`);
    const status = Number(head.slice(9, 12));
    this.#head = {
      status,
      retryAfter: RETRY_AFTER.exec(head)?.[1]?.trim(),
      close: CONNECTION_CLOSE.test(head),
    };
    this.#chunked = CHUNKED.test(head);
    if (this.#chunked) return;
    const length = CONTENT_LENGTH.exec(head);
    // 1xx, 204 and 304 have no body; any other response here must say its length
    if (status < 200 || status === 204 || status === 304) this.#skip = 0;
    else if (length) this.#skip = Number(length[1]);
    else throw new Error(`a ${status} response with neither Content-Length nor chunked encoding`);
    if (this.#skip === 0) this.#finish();
  }

  #finish(): void {
    const head = this.#head as LeanResponse;
    this.#head = undefined;
    this.#chunked = false;
    this.#trailers = false;
    this.#onResponse(head);
  }
}

export interface PoolStats {
  /** connections opened over the pool's life */
  opened: number;
  /** requests whose connection failed or closed before they were answered */
  socketErrors: number;
}

/**
 * Connections to one server, each with at most one request in flight. `send` takes an idle connection or opens a new
 * one while fewer than `maxConnections` are open, else returns false (the caller counts the request as dropped).
 */
export class LeanPool {
  readonly #host: string;
  readonly #port: number;
  readonly #request: Buffer;
  readonly #maxConnections: number;
  readonly #onResponse: (res: LeanResponse, startedAt: number) => void;
  readonly #idle: Connection[] = [];
  readonly #open = new Set<Connection>();
  #inFlight = 0;
  readonly stats: PoolStats = { opened: 0, socketErrors: 0 };

  constructor(options: {
    host: string;
    port: number;
    request: Buffer;
    maxConnections: number;
    onResponse: (res: LeanResponse, startedAt: number) => void;
  }) {
    this.#host = options.host;
    this.#port = options.port;
    this.#request = options.request;
    this.#maxConnections = options.maxConnections;
    this.#onResponse = options.onResponse;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Sends the request now; false when every connection is busy and no more may be opened. */
  send(): boolean {
    let conn = this.#idle.pop();
    if (!conn) {
      if (this.#open.size >= this.#maxConnections) return false;
      conn = this.#connect();
    }
    this.#inFlight++;
    conn.startedAt = performance.now();
    conn.busy = true;
    conn.socket.write(this.#request);
    return true;
  }

  #connect(): Connection {
    const socket = net.connect({ host: this.#host, port: this.#port, noDelay: true });
    const conn: Connection = { socket, busy: false, startedAt: 0, reusable: true, parser: undefined as never };
    conn.parser = new ResponseParser((res) => {
      conn.busy = false;
      this.#inFlight--;
      if (res.close) conn.reusable = false;
      else this.#idle.push(conn);
      this.#onResponse(res, conn.startedAt);
    });
    this.stats.opened++;
    this.#open.add(conn);
    socket.on('data', (chunk: Buffer) => {
      try {
        conn.parser.push(chunk);
      } catch {
        socket.destroy();
      }
    });
    const gone = () => {
      if (!this.#open.delete(conn)) return;
      if (conn.busy) {
        conn.busy = false;
        this.#inFlight--;
        this.stats.socketErrors++;
      }
      const i = this.#idle.indexOf(conn);
      if (i >= 0) this.#idle.splice(i, 1);
    };
    socket.on('error', gone);
    socket.on('close', gone);
    return conn;
  }

  close(): void {
    for (const conn of this.#open) conn.socket.destroy();
  }
}

interface Connection {
  socket: net.Socket;
  parser: ResponseParser;
  busy: boolean;
  startedAt: number;
  reusable: boolean;
}
