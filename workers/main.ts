/**
 * A worker process on its own: `node --import tsx workers/main.ts [inference,callbacks,maintenance,batch]` (default:
 * the kinds in TRIAGE_WORKERS). The gateway then runs with TRIAGE_WORKERS=none, and workers scale per queue.
 */
import { composeServices } from '../src/compose.ts';
import { ApiKeyStore } from '../src/platform/auth.ts';
import { ConfigError, loadConfig } from '../src/platform/config.ts';
import { createLogger } from '../src/platform/logger.ts';
import { createMetrics } from '../src/platform/metrics.ts';
import { loadModels } from '../src/registry/load.ts';
import { startBatchThreads, startWorkers, type WorkerKind, workerKinds } from './index.ts';
import { startOpsServer, workerHealth } from './ops.ts';

async function main() {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`triage-worker: configuration error: ${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
  const arg = process.argv[2];
  const kinds = (arg ? arg.split(',') : config.workers) as WorkerKind[];
  const unknown = kinds.filter((k) => !workerKinds.includes(k));
  if (unknown.length > 0 || kinds.length === 0) {
    process.stderr.write(`triage-worker: choose from ${workerKinds.join(', ')} (got ${arg ?? 'none'})\n`);
    process.exit(64);
  }
  const logger = createLogger(config.logLevel).child({ role: 'worker', kinds });
  const redisUrl = config.redisUrl ?? 'redis://127.0.0.1:6379';
  // without configured keys there are no client callback secrets to sign with: callbacks dead-letter, visibly
  const keys = config.apiKeys ? ApiKeyStore.parse(config.apiKeys) : new ApiKeyStore([]);
  // the batch thread loads while the models load (the first run after a start finds it ready)
  const batchThreads = kinds.includes('batch') ? startBatchThreads(config, redisUrl, logger) : undefined;
  const services = await composeServices({
    config,
    logger,
    redisUrl,
    keys,
    models: await loadModels(config.modelsDir, config.syncCeilingMs),
    reloadModels: () => loadModels(config.modelsDir, config.syncCeilingMs),
    metrics: createMetrics({ defaultMetrics: true }),
  });
  const workers = startWorkers(kinds, services, batchThreads ? { batchThreads } : {});
  // the counters recorded here (jobs, callbacks, batch rows, last schedule success) exist only in this process
  const ops =
    config.workerMetricsPort > 0
      ? startOpsServer({
          host: config.host,
          port: config.workerMetricsPort,
          registry: services.metrics.registry,
          health: () => workerHealth(services.redis, workers.workers),
          logger,
        })
      : undefined;
  // SIGHUP: re-read the manifests; jobs from the next one on use them (a broken manifest keeps the previous ones)
  process.on('SIGHUP', () => {
    services.reload?.().then(
      (models) => logger.info({ models }, 'manifests reloaded'),
      (err) =>
        logger.error({ err: { message: (err as Error).message } }, 'manifest reload failed: keeping the previous ones'),
    );
  });
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, async () => {
      logger.info('stopping workers: finishing active jobs');
      ops?.close();
      await workers.close();
      await services.close();
      process.exit(0);
    });
  }
}

await main();
