/**
 * `with-redis <command…>`: runs a command with `TRIAGE_REDIS_URL` pointing at a Redis (see ensureRedis), then stops
 * any throwaway server. `npm test` and `npm run bench` run through it so they work on a fresh machine.
 */
import { spawn } from 'node:child_process';
import { ensureRedis } from './local-redis.ts';

const [command, ...args] = process.argv.slice(2);
if (!command) {
  console.error('usage: with-redis <command> [args…]');
  process.exit(2);
}
let redis: Awaited<ReturnType<typeof ensureRedis>>;
try {
  redis = await ensureRedis(process.env.TRIAGE_REDIS_URL || undefined);
} catch (err) {
  console.error((err as Error).message);
  process.exit(1);
}
const child = spawn(command, args, { stdio: 'inherit', env: { ...process.env, TRIAGE_REDIS_URL: redis.url } });
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal));
child.on('exit', async (code, signal) => {
  await redis.stop();
  process.exit(code ?? (signal ? 1 : 0));
});
