/**
 * A worker process's own small HTTP server (TRIAGE_WORKER_METRICS_PORT): /metrics for Prometheus (the counters a
 * worker records exist only in its process) and /healthz for the kubelet's startup and liveness probes.
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { RedisClient } from '../src/platform/redis.ts';

/** What /healthz needs of a BullMQ Worker. */
export interface RunningWorker {
  readonly name: string;
  isRunning(): boolean;
  readonly closing: Promise<void> | undefined;
}

export interface WorkerHealth {
  ok: boolean;
  redis: 'ok' | 'unreachable';
  workers: Record<string, 'running' | 'stopped'>;
}

/**
 * Healthy when Redis answers a PING within `timeoutMs` and every BullMQ worker this process started still runs. The
 * timeout matters: a worker's connection retries forever (BullMQ needs maxRetriesPerRequest: null), so a PING sent
 * while Redis is away would wait until it is back, and the probe would time out instead of reading "unreachable".
 */
export async function workerHealth(
  redis: Pick<RedisClient, 'ping'>,
  workers: readonly RunningWorker[],
  timeoutMs = 1000,
): Promise<WorkerHealth> {
  let timer: NodeJS.Timeout | undefined;
  const pinged = await Promise.race([
    redis.ping().then(
      (pong) => pong === 'PONG',
      () => false,
    ),
    new Promise<false>((resolve) => {
      timer = setTimeout(resolve, timeoutMs, false);
    }),
  ]);
  clearTimeout(timer);
  const states = Object.fromEntries(
    workers.map((w) => [w.name, w.isRunning() && w.closing === undefined ? 'running' : 'stopped'] as const),
  );
  return {
    ok: pinged && Object.values(states).every((s) => s === 'running'),
    redis: pinged ? 'ok' : 'unreachable',
    workers: states,
  };
}

/** Serves GET /metrics and GET /healthz (200 when healthy, else 503, with the report as JSON). */
export function startOpsServer(options: {
  host: string;
  port: number;
  registry: Registry;
  health: () => Promise<WorkerHealth>;
  logger: Logger;
}): Server {
  const { registry, health, logger } = options;
  return createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/metrics') {
      registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
        () => res.writeHead(500).end(),
      );
    } else if (req.method === 'GET' && req.url === '/healthz') {
      health().then(
        (report) => {
          if (!report.ok) logger.warn({ health: report }, 'worker unhealthy');
          res
            .writeHead(report.ok ? 200 : 503, { 'content-type': 'application/json' })
            .end(JSON.stringify({ status: report.ok ? 'ok' : 'unhealthy', ...report }));
        },
        () => res.writeHead(503).end(),
      );
    } else {
      res.writeHead(404).end();
    }
  })
    .on('error', (err: NodeJS.ErrnoException) =>
      logger.warn({ port: options.port, code: err.code }, 'worker /metrics not served'),
    )
    .listen(options.port, options.host);
}
