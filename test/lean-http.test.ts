/**
 * The open-loop bench's lean HTTP client (load-tests/bench/lean-http.ts) against a real node:http server on a real
 * socket: statuses, Retry-After, Content-Length and chunked bodies, empty bodies, several responses on one keep-alive
 * connection, a server that closes, and responses cut anywhere across chunks.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { buildRequest, LeanPool, type LeanResponse, ResponseParser } from '../load-tests/bench/lean-http.ts';
import { waitFor } from './support/index.ts';

let server: Server;
let port: number;
const seen: Array<{ method: string; url: string; body: string; auth: string | undefined }> = [];

before(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      body += c;
    });
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', body, auth: req.headers.authorization });
      switch (req.url) {
        case '/busy':
          res.writeHead(503, { 'retry-after': '7', 'content-type': 'application/problem+json' });
          res.end(JSON.stringify({ code: 'overloaded' }));
          return;
        case '/chunked':
          // no Content-Length: node:http sends it chunked, in several writes
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('a'.repeat(5000));
          setImmediate(() => {
            res.write('b'.repeat(70_000));
            res.end('c');
          });
          return;
        case '/empty':
          res.writeHead(204);
          res.end();
          return;
        case '/close':
          res.writeHead(200, { connection: 'close', 'content-length': '2' });
          res.end('ok');
          return;
        default:
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ ok: true, big: 'x'.repeat(100_000) }));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** The raw bytes a real server sends for these requests on one connection, in order. */
async function rawResponses(paths: string[]): Promise<Buffer> {
  const socket = net.connect({ host: '127.0.0.1', port });
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const url = (p: string) => new URL(`http://127.0.0.1:${port}${p}`);
  for (const p of paths) socket.write(buildRequest(url(p), 'GET', {}));
  const parsed: LeanResponse[] = [];
  const parser = new ResponseParser((r) => parsed.push(r));
  // parse as it arrives too, to know when all have come
  let fed = 0;
  await waitFor(() => {
    while (fed < chunks.length) parser.push(chunks[fed++] as Buffer);
    return parsed.length === paths.length;
  }, 'every response');
  socket.destroy();
  return Buffer.concat(chunks);
}

describe('lean-http ResponseParser', () => {
  it('reads status, Retry-After and where each body ends, however the bytes are cut', async () => {
    const paths = ['/busy', '/chunked', '/empty', '/', '/busy'];
    const bytes = await rawResponses(paths);
    const expected = [
      { status: 503, retryAfter: '7', close: false },
      { status: 200, retryAfter: undefined, close: false },
      { status: 204, retryAfter: undefined, close: false },
      { status: 200, retryAfter: undefined, close: false },
      { status: 503, retryAfter: '7', close: false },
    ];
    // whole, byte by byte, and in pieces of a few sizes (cuts inside heads, chunk-size lines and bodies)
    for (const size of [bytes.length, 1, 2, 3, 7, 100, 4096]) {
      const out: LeanResponse[] = [];
      const parser = new ResponseParser((r) => out.push(r));
      for (let i = 0; i < bytes.length; i += size) parser.push(bytes.subarray(i, i + size));
      assert.deepEqual(out, expected, `pieces of ${size}`);
      assert.equal(parser.idle, true);
    }
  });

  it('refuses what is not HTTP', () => {
    const parser = new ResponseParser(() => {});
    assert.throws(() => parser.push(Buffer.from('SSH-2.0-OpenSSH\r\n\r\n')), /not an HTTP/);
  });
});

describe('lean-http LeanPool', () => {
  it('sends the prebuilt request and reuses idle connections', async () => {
    const url = new URL(`http://127.0.0.1:${port}/busy`);
    const answers: LeanResponse[] = [];
    const pool = new LeanPool({
      host: '127.0.0.1',
      port,
      request: buildRequest(
        url,
        'POST',
        { authorization: 'Bearer k', 'content-type': 'application/json' },
        Buffer.from('{"a":1}'),
      ),
      maxConnections: 4,
      onResponse: (res, startedAt) => {
        assert.ok(performance.now() >= startedAt);
        answers.push(res);
      },
    });
    seen.length = 0;
    for (let i = 0; i < 3; i++) assert.equal(pool.send(), true);
    await waitFor(() => answers.length === 3, 'three answers');
    for (let i = 0; i < 3; i++) assert.equal(pool.send(), true);
    await waitFor(() => answers.length === 6, 'six answers');
    assert.equal(pool.stats.opened, 3, 'the second three went over the first three connections');
    assert.ok(answers.every((a) => a.status === 503 && a.retryAfter === '7'));
    assert.deepEqual(seen[0], { method: 'POST', url: '/busy', body: '{"a":1}', auth: 'Bearer k' });
    assert.equal(pool.stats.socketErrors, 0);
    pool.close();
  });

  it('refuses a request when every connection is busy and no more may open (a dropped request)', async () => {
    const pool = new LeanPool({
      host: '127.0.0.1',
      port,
      request: buildRequest(new URL(`http://127.0.0.1:${port}/`), 'GET', {}),
      maxConnections: 2,
      onResponse: () => {},
    });
    assert.equal(pool.send(), true);
    assert.equal(pool.send(), true);
    assert.equal(pool.send(), false);
    assert.equal(pool.inFlight, 2);
    await waitFor(() => pool.inFlight === 0, 'both answered');
    assert.equal(pool.send(), true);
    await waitFor(() => pool.inFlight === 0, 'answered');
    pool.close();
  });

  it('opens a new connection after the server closes one', async () => {
    let answered = 0;
    const pool = new LeanPool({
      host: '127.0.0.1',
      port,
      request: buildRequest(new URL(`http://127.0.0.1:${port}/close`), 'GET', {}),
      maxConnections: 1,
      onResponse: (res) => {
        assert.equal(res.close, true);
        answered++;
      },
    });
    assert.equal(pool.send(), true);
    await waitFor(() => answered === 1, 'the first answer');
    // the closed connection leaves the pool: the next request opens another
    await waitFor(() => pool.send(), 'a free place once the closed connection is gone');
    await waitFor(() => answered === 2, 'the second answer');
    assert.equal(pool.stats.opened, 2);
    assert.equal(pool.stats.socketErrors, 0);
    pool.close();
  });
});
