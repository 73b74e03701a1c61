import type { Server as HttpServer } from 'node:http';
import { createAdaptorServer } from '@hono/node-server';
import type { Logger } from 'pino';
import { parseCdsClients } from './cds-hooks/jwt.ts';
import { ensureRedis } from './devtools/local-redis.ts';
import { composeGateway } from './gateway.ts';
import { Hl7Door } from './ingress/hl7/door.ts';
import { startMllp } from './ingress/hl7/mllp.ts';
import { ApiKeyStore } from './platform/auth.ts';
import { answerClientErrors } from './platform/client-errors.ts';
import { type Config, ConfigError, loadConfig } from './platform/config.ts';
import { announceDevelopmentKeys } from './platform/dev-keys.ts';
import { listen } from './platform/listeners.ts';
import { createLogger } from './platform/logger.ts';
import { createMetrics } from './platform/metrics.ts';
import { TokenVerifier } from './platform/oidc.ts';
import { loadModels, ManifestError } from './registry/load.ts';

/** the listening socket's accept queue (connections the kernel completed and the event loop has not yet taken) */
const LISTEN_BACKLOG = 4096;

export interface RunningGateway {
  url: string;
  /** stops accepting, drains in-flight requests (up to the grace period), then closes models and Redis */
  shutdown(): Promise<void>;
  /** re-reads the manifests (SIGHUP) */
  reload(): Promise<string[]>;
}

async function keysFor(config: Config, logger: Logger): Promise<ApiKeyStore> {
  if (config.apiKeys) return ApiKeyStore.parse(config.apiKeys);
  if (config.oidcIssuers) return new ApiKeyStore([]); // tokens only
  const { store, keys, callbackSecret } = ApiKeyStore.generateDevelopmentKeys();
  const banner = [
    '',
    'Triage development mode: no TRIAGE_API_KEYS configured, so the gateway listens on loopback only.',
    'These keys work until the process stops (send them as "Authorization: Bearer <key>"):',
    ...Object.entries(keys).map(([role, key]) => `  ${role.padEnd(9)} ${key}`),
    `Callbacks of the client key go to loopback hosts only and are signed with ${callbackSecret}`,
    '',
  ].join('\n');
  await announceDevelopmentKeys(banner, { stream: process.stderr }, logger);
  return store;
}

export async function startGateway(config: Config, logger: Logger): Promise<RunningGateway> {
  const keys = await keysFor(config, logger);
  const tokens = config.oidcIssuers ? TokenVerifier.parse(config.oidcIssuers) : undefined;
  const cdsClients = config.cdsClients ? parseCdsClients(config.cdsClients) : undefined;
  const localRedis = config.env === 'development' ? await ensureRedis(config.redisUrl) : undefined;
  const redisUrl = localRedis?.url ?? config.redisUrl ?? 'redis://127.0.0.1:6379';
  const loaded = await loadModels(config.modelsDir, config.syncCeilingMs);
  const gateway = await composeGateway({
    config,
    logger,
    redisUrl,
    keys,
    ...(tokens ? { tokens } : {}),
    ...(cdsClients ? { cdsClients } : {}),
    rateLimits: config.rateLimits,
    models: loaded,
    metrics: createMetrics({ defaultMetrics: true }),
    reloadModels: () => loadModels(config.modelsDir, config.syncCeilingMs),
  });
  const { app, deps } = gateway;

  const server = createAdaptorServer({
    fetch: app.fetch,
    hostname: config.host,
    // sync scoring refused before the app while the event loop is saturated (src/sync/admission-gate.ts)
    createServer: gateway.createServer,
  });
  // a request node:http cannot parse gets problem+json too, not Node's bare status line
  answerClientErrors(server as HttpServer);
  // a deep accept queue (the kernel caps it at net.core.somaxconn): Node's default of 511 overflows when many callers
  // connect while the loop is busy (after a stall, a failover, a load balancer's reshuffle), and a connection whose
  // SYN is dropped is retried by the caller's kernel only after 1 s, then 3 s; and several sockets on the port, since
  // Node accepts one connection per socket per turn of the loop (src/platform/listeners.ts)
  const listening = await listen(server as HttpServer, {
    host: config.host,
    port: config.port,
    backlog: LISTEN_BACKLOG,
    sockets: config.listenSockets,
  });
  const { port } = listening;
  if (listening.limitedBy) {
    logger.info(
      { asked: config.listenSockets, sockets: listening.sockets, reason: listening.limitedBy },
      'one listening socket',
    );
  }
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  logger.info(
    { url, sockets: listening.sockets, models: deps.catalog.list().map((m) => `${m.name}@${m.version}:${m.tier}`) },
    'listening',
  );
  // HL7v2 over MLLP beside HTTP: the same door as POST /v1/hl7 (src/ingress/hl7/)
  const { mllpPort, mllpHost, models: hl7Models } = config.hl7;
  const door = new Hl7Door({ catalog: deps.catalog, sync: deps.sync, models: hl7Models, logger });
  const mllp = mllpPort === undefined ? undefined : await startMllp({ host: mllpHost, port: mllpPort, door, logger });
  if (mllp) logger.info({ host: mllpHost, port: mllp.port, models: hl7Models }, 'mllp listening');

  let closing: Promise<void> | undefined;
  const shutdown = () => {
    closing ??= (async () => {
      logger.info('shutting down: no new connections, draining in-flight requests');
      await listening.close();
      const drained = new Promise<void>((resolve) => server.close(() => resolve()));
      // a connection whose last request finishes while draining goes idle but stays open (keep-alive) until its
      // keepAliveTimeout: close idle connections as they appear, not only those idle when shutdown began
      const closeIdle = () => 'closeIdleConnections' in server && server.closeIdleConnections();
      closeIdle();
      const sweep = setInterval(closeIdle, 50);
      const grace = new Promise<'timeout'>((resolve) => setTimeout(resolve, config.shutdownGraceMs, 'timeout').unref());
      const outcome = await Promise.race([drained, grace]);
      clearInterval(sweep);
      if (outcome === 'timeout') {
        logger.warn('grace period over: closing the remaining connections');
        if ('closeAllConnections' in server) server.closeAllConnections();
      }
      await mllp?.close();
      await gateway.close();
      await localRedis?.stop();
      logger.info('stopped');
    })();
    return closing;
  };
  return { url, shutdown, reload: () => (deps.reload ? deps.reload() : Promise.resolve([])) };
}

export async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`triage: configuration error: ${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  let gateway: RunningGateway;
  try {
    gateway = await startGateway(config, logger);
  } catch (err) {
    if (err instanceof ManifestError || err instanceof ConfigError) {
      process.stderr.write(`triage: cannot start:\n${err.message}\n`);
      process.exit(78);
    }
    logger.fatal({ err: { message: (err as Error).message } }, 'cannot start');
    process.exit(1);
  }
  process.on('SIGHUP', () => {
    gateway.reload().then(
      (models) => logger.info({ models }, 'manifests reloaded'),
      (err) =>
        logger.error(
          { err: { message: (err as Error).message } },
          'manifest reload failed: still serving the previous ones',
        ),
    );
  });
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      gateway.shutdown().then(
        () => process.exit(0),
        (err) => {
          logger.error({ err: { message: (err as Error).message } }, 'shutdown failed');
          process.exit(1);
        },
      );
    });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
