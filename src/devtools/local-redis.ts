import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';

export interface RedisHandle {
  url: string;
  /** stops the throwaway server, if this process started one */
  stop(): Promise<void>;
}

const DEFAULT_URL = 'redis://127.0.0.1:6379';
export const INSTALL_HINT =
  'Triage needs Redis: install redis-server (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set TRIAGE_REDIS_URL';

/** Sends PING over a raw socket: answers whether a Redis is listening, without a client library. */
export function pingRedis(port: number, host = '127.0.0.1', timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (chunk) => done(chunk.toString().startsWith('+PONG')));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * The Redis for development and tests: `TRIAGE_REDIS_URL` when set; else one already answering on 127.0.0.1:6379;
 * else a throwaway `redis-server` from PATH on a free port, memory only, `noeviction` as BullMQ requires.
 */
export async function ensureRedis(
  configuredUrl: string | undefined,
  options: { defaultPort?: number } = {},
): Promise<RedisHandle> {
  const none = async () => {};
  const defaultPort = options.defaultPort ?? 6379;
  if (configuredUrl) return { url: configuredUrl, stop: none };
  if (await pingRedis(defaultPort))
    return { url: defaultPort === 6379 ? DEFAULT_URL : `redis://127.0.0.1:${defaultPort}`, stop: none };

  const probe = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) throw new Error(`${INSTALL_HINT}.`);
  const port = await freePort();
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--maxmemory-policy',
      'noeviction',
    ],
    { stdio: 'ignore' },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let i = 0; i < 100; i++) {
    if (await pingRedis(port)) {
      return {
        url: `redis://127.0.0.1:${port}`,
        async stop() {
          child.kill('SIGTERM');
          await exited;
        },
      };
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server did not start on port ${port}. ${INSTALL_HINT}.`);
}
