import { Redis } from 'ioredis';
import type { Logger } from 'pino';

/** How long a command may wait for Redis before the caller gets a 503 instead of a hang. */
export const REDIS_COMMAND_TIMEOUT_MS = 500;

/**
 * The shared connection of a process's services. It fails fast while Redis is away (no offline queue, one retry,
 * a command timeout), so callers answer 503 within about a second and accept only what Redis acknowledged; it
 * reconnects by itself, so the process recovers without a restart.
 */
export async function connectRedis(
  url: string,
  logger: Logger,
  commandTimeoutMs = REDIS_COMMAND_TIMEOUT_MS,
): Promise<Redis> {
  const redis = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    commandTimeout: commandTimeoutMs,
    // auto-pipelining sends the commands of concurrent requests in one write (many small writes were a hot spot)
    enableAutoPipelining: true,
  });
  // one JSON line per error, at most one a second: an outage must not flood the log
  let lastLogged = 0;
  redis.on('error', (err: Error) => {
    const now = Date.now();
    if (now - lastLogged < 1000) return;
    lastLogged = now;
    logger.warn({ err: { message: err.message } }, 'redis connection error');
  });
  await redis.connect();
  return redis;
}

const UNAVAILABLE_MESSAGES = [
  "Stream isn't writeable",
  'Command timed out',
  'Connection is closed',
  'connect ECONNREFUSED',
  'read ECONNRESET',
];

/** An error that says Redis could not be reached (not that a command was wrong). */
export function isRedisUnavailable(err: unknown): boolean {
  const e = err as { name?: string; message?: string; code?: string } | undefined;
  if (!e) return false;
  if (e.name === 'MaxRetriesPerRequestError') return true;
  if (e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' || e.code === 'EPIPE') return true;
  return UNAVAILABLE_MESSAGES.some((m) => e.message?.includes(m));
}
