import net from 'node:net';
import { Redis } from 'ioredis';

let silent = false;
const server = net.createServer((c) => {
  const r = net.connect(6379, '127.0.0.1');
  c.on('data', (d) => {
    if (!silent) r.write(d);
  });
  r.on('data', (d) => c.write(d));
  c.on('error', () => {});
  r.on('error', () => {});
});
await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
const port = (server.address() as net.AddressInfo).port;
for (const auto of [true, false]) {
  const redis = new Redis(`redis://127.0.0.1:${port}`, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    commandTimeout: 1000,
    enableAutoPipelining: auto,
  });
  redis.on('error', () => {});
  await redis.connect();
  silent = true;
  let t = performance.now();
  await redis.get('x').catch((e) => console.log('auto', auto, 'get', e.message, (performance.now() - t).toFixed(0)));
  t = performance.now();
  await redis
    .zrange('x', 0, 1)
    .catch((e) => console.log('auto', auto, 'zrange', e.message, (performance.now() - t).toFixed(0)));
  silent = false;
  redis.disconnect();
}
server.close();
