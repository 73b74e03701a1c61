import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { ensureRedis, pingRedis } from '../src/devtools/local-redis.ts';

/** A port nothing listens on: bound, read, released. */
function unusedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

describe('the Redis of npm start and npm test on a fresh machine', () => {
  it('a configured TRIAGE_REDIS_URL is used as it is', async () => {
    const handle = await ensureRedis('redis://example.invalid:6390');
    assert.equal(handle.url, 'redis://example.invalid:6390');
    await handle.stop();
  });

  it('with nothing answering, a throwaway redis-server from PATH is started (noeviction, no persistence) and stopped', async () => {
    const port = await unusedPort();
    assert.equal(await pingRedis(port), false, 'precondition: nothing on the probe port');
    const handle = await ensureRedis(undefined, { defaultPort: port });
    const url = new URL(handle.url);
    assert.notEqual(Number(url.port), port, 'a fresh server on a port of its own');
    const client = new Redis(handle.url, { lazyConnect: true });
    await client.connect();
    try {
      assert.equal(await client.ping(), 'PONG');
      const [, policy] = (await client.config('GET', 'maxmemory-policy')) as [string, string];
      assert.equal(policy, 'noeviction', 'BullMQ needs noeviction');
      const [, save] = (await client.config('GET', 'save')) as [string, string];
      assert.equal(save, '', 'throwaway: nothing written to disk');
    } finally {
      client.disconnect();
      await handle.stop();
    }
    assert.equal(await pingRedis(Number(url.port)), false, 'stopped with its handle');
  });
});
