import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';

/** What every store and queue talks to: one Redis, or a Redis Cluster (the same commands; keys placed by hash tag). */
export type RedisClient = Redis | Cluster;

/**
 * `TRIAGE_REDIS_URL`'s cluster form: `redis-cluster://[user:password@]host1:port1,host2:port2,…` (or
 * `rediss-cluster://` for TLS) names seed nodes of a Redis Cluster; the client learns the rest from them.
 */
export function clusterSeeds(
  url: string,
): { nodes: Array<{ host: string; port: number }>; username?: string; password?: string; tls: boolean } | undefined {
  const m = /^(rediss?)-cluster:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]+)\/?$/.exec(url);
  if (!m) return undefined;
  const nodes = (m[4] as string).split(',').map((hp) => {
    const at = hp.lastIndexOf(':');
    return at < 0 ? { host: hp, port: 6379 } : { host: hp.slice(0, at), port: Number(hp.slice(at + 1)) };
  });
  return {
    nodes,
    ...(m[2] ? { username: decodeURIComponent(m[2]) } : {}),
    ...(m[3] ? { password: decodeURIComponent(m[3]) } : {}),
    tls: m[1] === 'rediss',
  };
}

/**
 * A new connection to the URL's Redis or Redis Cluster with these options (BullMQ workers need their own, blocking,
 * connections). On a cluster the per-node options go to every node, and the client follows MOVED and ASK
 * redirections and refreshes its slot map after a failover.
 */
export function newRedis(
  url: string,
  options: RedisOptions & Pick<ClusterOptions, 'enableAutoPipelining'>,
): RedisClient {
  const seeds = clusterSeeds(url);
  if (!seeds) return new Redis(url, options);
  const { enableAutoPipelining, enableOfflineQueue, lazyConnect, maxRetriesPerRequest, ...perNode } = options;
  return new Cluster(seeds.nodes, {
    ...(enableAutoPipelining !== undefined ? { enableAutoPipelining } : {}),
    ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    // a failover takes seconds: redirections and retries wait for the new primary (bounded by the command timeout)
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    redisOptions: {
      ...perNode,
      ...(maxRetriesPerRequest !== undefined ? { maxRetriesPerRequest } : {}),
      ...(seeds.username ? { username: seeds.username } : {}),
      ...(seeds.password ? { password: seeds.password } : {}),
      ...(seeds.tls ? { tls: {} } : {}),
    },
  });
}

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
): Promise<RedisClient> {
  const redis = newRedis(url, {
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
  // a Redis Cluster between a primary's failure and its replica's promotion
  "Cluster isn't ready",
  'CLUSTERDOWN',
  'Failed to refresh slots cache',
];

/** An error that says Redis could not be reached (not that a command was wrong). */
export function isRedisUnavailable(err: unknown): boolean {
  const e = err as { name?: string; message?: string; code?: string } | undefined;
  if (!e) return false;
  if (e.name === 'MaxRetriesPerRequestError') return true;
  if (e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' || e.code === 'EPIPE') return true;
  return UNAVAILABLE_MESSAGES.some((m) => e.message?.includes(m));
}
