/**
 * Listening on one port with several sockets (SO_REUSEPORT), all feeding one HTTP server.
 *
 * Node accepts at most one connection per listening socket per turn of the event loop (libuv stopped accepting in a
 * loop in 1.45: libuv/libuv#3696). A saturated turn answers hundreds of requests, so while the loop is saturated a
 * single socket takes ~20–50 new connections a second, and callers that open connections then (a pool growing under
 * slow answers, a load balancer's new backends) wait seconds in the kernel's accept queue before the gateway even sees
 * them — longer than any deadline, and where no admission inside the process can reach. With `n` sockets bound to the
 * same port the kernel spreads new connections over them and the loop accepts up to `n` a turn.
 *
 * `reusePort` came in Node 22.12 (and 23.1): the image's Node has it. On an older Node (or another platform) the
 * gateway listens on one socket, as before, and says why.
 */
import type { Server as HttpServer } from 'node:http';
import { createServer, type Server as NetServer } from 'node:net';

/** Whether this Node can bind several listening sockets to one port (`listen({ reusePort: true })`). */
export function reusePortSupported(
  version: string = process.versions.node,
  platform: NodeJS.Platform = process.platform,
): boolean {
  // the kernels that balance connections over a SO_REUSEPORT group (Node's documentation lists these)
  if (platform !== 'linux' && platform !== 'freebsd') return false;
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

export interface ListenOptions {
  host: string;
  port: number;
  backlog: number;
  /** listening sockets wanted (1: one, as Node does by default) */
  sockets: number;
}

export interface Listening {
  port: number;
  /** the sockets bound (fewer than asked where this Node cannot) */
  sockets: number;
  /** why fewer were bound than asked, if they were */
  limitedBy?: string;
  /** stops every socket from accepting (the HTTP server's own close still drains its connections) */
  close(): Promise<void>;
}

/**
 * Binds `server` and, where supported, `sockets - 1` more sockets on the same port whose connections go to it, as if
 * it had accepted them itself (node:http documents emitting `connection` for this): one server, one set of
 * connections to drain, one request listener.
 */
export async function listen(server: HttpServer, options: ListenOptions): Promise<Listening> {
  const supported = reusePortSupported();
  const count = supported ? options.sockets : 1;
  const reusePort = count > 1;
  await bind(server, { host: options.host, port: options.port, backlog: options.backlog, reusePort });
  const port = (server.address() as { port: number }).port;
  const extra: NetServer[] = [];
  try {
    for (let i = 1; i < count; i++) {
      // as node:http's own listener accepts: no Nagle delay on answers
      const socket = createServer({ noDelay: true }, (connection) => server.emit('connection', connection));
      await bind(socket, { host: options.host, port, backlog: options.backlog, reusePort });
      extra.push(socket);
    }
  } catch (err) {
    await Promise.all(extra.map(closeServer));
    await closeServer(server);
    throw err;
  }
  return {
    port,
    sockets: count,
    ...(count < options.sockets
      ? { limitedBy: `Node ${process.versions.node} on ${process.platform} has no reusePort (Node 22.12+ on Linux)` }
      : {}),
    close: () => Promise.all(extra.map(closeServer)).then(() => undefined),
  };
}

function bind(
  server: HttpServer | NetServer,
  options: { host: string; port: number; backlog: number; reusePort: boolean },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (err: Error) => reject(err);
    server.once('error', failed);
    server.listen(options, () => {
      server.off('error', failed);
      resolve();
    });
  });
}

function closeServer(server: HttpServer | NetServer): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}
