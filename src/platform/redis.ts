import {
  type ChainableCommander,
  Cluster,
  type ClusterNode,
  type ClusterOptions,
  type Command,
  Redis,
  type RedisOptions,
} from 'ioredis';
import type { WriteableStream } from 'ioredis/built/types.js';
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
 *
 * `batchWrites`: on a single Redis, the commands sent during one turn of the event loop leave in one write
 * (BatchingRedis), in place of auto-pipelining; a cluster client is left as the other options say.
 */
export function newRedis(
  url: string,
  options: RedisOptions & Pick<ClusterOptions, 'enableAutoPipelining'> & { batchWrites?: boolean },
): RedisClient {
  const { batchWrites, ...rest } = options;
  const seeds = clusterSeeds(url);
  if (!seeds) {
    if (!batchWrites) return new Redis(url, rest);
    return new BatchingRedis(url, { ...rest, enableAutoPipelining: false });
  }
  return newCluster(seeds, rest);
}

/**
 * A single Redis connection that sends the commands of one event-loop turn in one write: the first command of a
 * turn corks its socket, and the socket is uncorked once the turn's I/O callbacks have run (setImmediate). Many
 * requests read from their sockets in the same turn (submissions arriving together, the worker's jobs finishing
 * together, a job's outcome and BullMQ's completion of it) then cost Redis one read and the process one system
 * call, where each command was a write of its own. Commands keep the order they were sent in, pipelines and
 * transactions included (one socket, one buffer); a command waits at most for the rest of the turn.
 *
 * It replaces ioredis's auto-pipelining on a single Redis, which batches the same way but builds a Pipeline object
 * per batch, and a Pipeline copies every script defined on its connection (BullMQ defines some sixty on the
 * gateway's): that copy was the largest share of the gateway's own CPU per async job (the bench's profile). Auto-
 * pipelining also sent explicit pipelines and transactions ahead of commands issued before them, and kept a second
 * batch waiting until the first was answered.
 */
export class BatchingRedis extends Redis {
  /** the socket corked until the end of this turn, if any */
  #held: Redis['stream'] | undefined;

  constructor(url: string, options: RedisOptions) {
    super(url, { ...options, replyMapping: 'legacy' });
  }

  override sendCommand(command: Command, stream?: WriteableStream): unknown {
    // a command written for a pipeline (`stream` given) reaches the socket in the pipeline's one write
    if (!stream && this.status === 'ready') this.#holdUntilTurnEnds();
    return super.sendCommand(command, stream);
  }

  #holdUntilTurnEnds(): void {
    const socket = this.stream;
    if (!socket || socket === this.#held || !socket.writable) return;
    this.#held = socket;
    socket.cork();
    setImmediate(() => {
      if (this.#held === socket) this.#held = undefined;
      socket.uncork();
    });
  }
}

function newCluster(
  seeds: NonNullable<ReturnType<typeof clusterSeeds>>,
  options: RedisOptions & Pick<ClusterOptions, 'enableAutoPipelining'>,
): RedisClient {
  const { enableAutoPipelining, enableOfflineQueue, lazyConnect, maxRetriesPerRequest, ...perNode } = options;
  return new EndingCluster(seeds.nodes, {
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

/**
 * ioredis's Cluster, never parked without a way out. After a primary's failover a cluster client can be left with an
 * empty connection pool in status `close` with no reconnection scheduled (the pool's drain sets `close`, but only a
 * `close` listener left by an earlier connect() would go on to reconnect or end), and ioredis's `disconnect()` on an
 * empty pool waits for a drain that never comes, so the client never reaches `end`. BullMQ waits for that client to be
 * ready or ended (its blocking reads' recovery; Worker.close): a worker's close after a failover hung
 * (taskforcesh/bullmq#4656 is the same wait on a socketless single-node client). Here a `close` that nothing acts on
 * is handled as ioredis handles any other (reconnect, or end when closing by hand), and a disconnect with no node
 * left ends the client as ioredis already does for one that never connected. BullMQ duplicates the connection it is
 * given for its blocking reads, so duplicates are of this class too.
 */
/** A redirection reply: the slot is served elsewhere now (MOVED) or for this command (ASK). */
const REDIRECTION = /^(MOVED|ASK) \d+ \S+/;

/** ioredis's default reply mapping, the only one Triage uses (its constructor's type names it) */
type LegacyReplies = ConstructorParameters<typeof Cluster<'legacy'>>[1];

class EndingCluster extends Cluster {
  readonly #seeds: ClusterNode[];

  constructor(seeds: ClusterNode[], options: ClusterOptions) {
    super(seeds, options as LegacyReplies);
    this.#seeds = seeds;
    this.on('close', () => {
      // after ioredis's own `close` listeners (connect()'s, when there is one) have had their turn
      setImmediate(() => {
        if (this.status === 'close' && this.nodes().length === 0) this.#internals.handleCloseEvent();
      });
    });
  }

  get #internals() {
    return this as unknown as { setStatus(s: string): void; handleCloseEvent(): void };
  }

  /**
   * A pipeline whose replies include a redirection it did not follow makes the client read the slot map again.
   * ioredis follows MOVED and ASK in a pipeline only when every command got the same one; an auto-pipeline of writes
   * to two slots of one primary, sent to that primary after a failover demoted it (a killed primary restarted on its
   * address rejoins as a replica), hands each caller its raw MOVED instead, and nothing reads the map again: with no
   * `slotsRefreshInterval` the client kept sending there, every such pipeline refused, until a lone command happened
   * to be redirected. Those callers get 503 (isRedisUnavailable) and their retries go to the new primary.
   */
  override pipeline(commands?: unknown[][]): ChainableCommander {
    const pipeline = super.pipeline(commands);
    const exec = pipeline.exec;
    const refresh = (replies: Array<[Error | null, unknown]> | null) => {
      if (replies?.some(([err]) => err && REDIRECTION.test(err.message))) this.refreshSlotsCache();
    };
    pipeline.exec = function (this: ChainableCommander, ...args: Parameters<ChainableCommander['exec']>) {
      const result = exec.apply(this, args);
      result.then(refresh, () => {});
      return result;
    };
    return pipeline;
  }

  override disconnect(reconnect = false): void {
    const stranded = !reconnect && this.nodes().length === 0 && this.status !== 'wait' && this.status !== 'end';
    super.disconnect(reconnect);
    if (stranded) {
      // what ioredis does for a client in `wait`: close, then (closing by hand, so no retry) end
      this.#internals.setStatus('close');
      this.#internals.handleCloseEvent();
    }
  }

  // biome-ignore lint/suspicious/noExplicitAny: ioredis's own signature (its reply-mapping generics)
  override duplicate(overrideStartupNodes: ClusterNode[] = [], overrideOptions: ClusterOptions = {}): any {
    return new EndingCluster(overrideStartupNodes.length > 0 ? overrideStartupNodes : this.#seeds, {
      ...this.options,
      ...overrideOptions,
      redisOptions: { ...this.options.redisOptions, ...overrideOptions.redisOptions },
    });
  }
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
    // the commands of concurrent requests in one write (many small writes were a hot spot): BatchingRedis on a single
    // Redis, auto-pipelining on a cluster
    batchWrites: true,
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

/**
 * Messages (anywhere in an error's message) that say Redis, or the node that holds a slot, could not be used just
 * now. What ioredis and BullMQ raise while a Redis Cluster fails over: node/ioredis/built/cluster/index.js,
 * redis/event_handler.js, Redis.js, Command.js; bullmq/dist/cjs/classes/redis-connection.js.
 */
const UNAVAILABLE_MESSAGES = [
  "Stream isn't writeable",
  'Command timed out',
  'Connection is closed',
  'connect ECONNREFUSED',
  'read ECONNRESET',
  // a pipeline partly answered when its node's connection closed (a primary killed mid-write): ioredis aborts the
  // commands after the last reply (AbortError), and a pipeline of writes is not sent again
  'Command aborted due to connection close',
  // a Redis Cluster between a primary's failure and its replica's promotion
  "Cluster isn't ready",
  'CLUSTERDOWN',
  'Failed to refresh slots cache',
  // the cluster client with no node left to ask (its connection pool emptied by a failover) or closing
  'None of startup nodes is available',
  'Cluster is disconnected',
  'Cluster is disconnecting',
  'Node is disconnected',
  // a node silent past the socket timeout (ioredis's socketTimeout)
  "Socket timeout. Expecting data, but didn't receive any",
  // a slot moving or its node failing over: the command may be sent again shortly
  'TRYAGAIN',
  'Too many Cluster redirections',
  'MASTERDOWN',
  'LOADING',
  // a write that reached a primary just demoted to a replica
  'READONLY',
  // WAIT (TRIAGE_REDIS_REPLICA_ACKS) sent to a node that is a replica now: the old primary, restarted on its address,
  // rejoined as the new primary's replica before the client's slot map caught up
  'WAIT cannot be used with replica instances',
  // a primary with fewer replicas than min-replicas-to-write, as it is while its replica is being replaced
  'NOREPLICAS',
];

/**
 * Replies that are unavailability only as the whole reply (their words are too short to look for anywhere): a MOVED
 * or ASK a pipeline of writes hands back rather than follows (ioredis follows a redirection only when every command
 * of the pipeline got the same one), and a blocking command (WAIT) unblocked because its primary became a replica.
 */
const UNAVAILABLE_REPLY = /^(MOVED \d+ \S+|ASK \d+ \S+|UNBLOCKED )/;

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  // a node's name not resolvable for now (a pod being replaced): a temporary DNS failure, unlike ENOTFOUND
  'EAI_AGAIN',
]);

/**
 * ioredis's and BullMQ's errors for "no Redis to talk to", by class: MaxRetriesPerRequestError (a command that
 * outlived its retries across reconnections), ClusterAllFailedError (no node answered for the slot map; its
 * lastNodeError says why), BullMQ's ConnectionClosedError (its connection closed, or a cluster reconnect timed out).
 */
const UNAVAILABLE_NAMES = new Set(['MaxRetriesPerRequestError', 'ClusterAllFailedError', 'ConnectionClosedError']);

/** Errors of the program itself: never unavailability, whatever their message says. */
const PROGRAMMING_ERRORS = [TypeError, RangeError, ReferenceError, SyntaxError];

/** An error that says Redis could not be reached (not that a command was wrong). */
export function isRedisUnavailable(err: unknown): boolean {
  return unavailable(err, 0);
}

function unavailable(err: unknown, depth: number): boolean {
  if (typeof err !== 'object' || err === null) return false;
  if (PROGRAMMING_ERRORS.some((t) => err instanceof t)) return false;
  const e = err as {
    name?: unknown;
    message?: unknown;
    code?: unknown;
    cause?: unknown;
    lastNodeError?: unknown;
    previousErrors?: unknown;
  };
  if (typeof e.name === 'string' && UNAVAILABLE_NAMES.has(e.name)) return true;
  if (typeof e.code === 'string' && UNAVAILABLE_CODES.has(e.code)) return true;
  const message = typeof e.message === 'string' ? e.message : '';
  if (UNAVAILABLE_REPLY.test(message) || UNAVAILABLE_MESSAGES.some((m) => message.includes(m))) return true;
  if (depth >= 3) return false; // wrapped errors are followed a few levels, never round a cycle
  // a MULTI that Redis discarded (EXECABORT) because a command in it was redirected or refused by a failing node:
  // ioredis puts the commands' errors in `previousErrors`
  if (Array.isArray(e.previousErrors) && e.previousErrors.some((p) => unavailable(p, depth + 1))) return true;
  // an error that wraps the one Redis gave (BullMQ's `cause`, ioredis's `lastNodeError`)
  return unavailable(e.cause, depth + 1) || unavailable(e.lastNodeError, depth + 1);
}
