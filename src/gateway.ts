import { adoptPreShardBatchQueue } from '../workers/batch-pre-shard.ts';
import { startBatchThreads, startWorkers, type WorkerKind } from '../workers/index.ts';
import { createApp } from './app.ts';
import { syncManifestSchedules } from './batch/schedules.ts';
import type { CdsClientsConfig } from './cds-hooks/jwt.ts';
import { CdsHooksService } from './cds-hooks/service.ts';
import { composeServices, type ServicesConfig, type ServicesOptions } from './compose.ts';
import type { AppDeps } from './context.ts';
import { Admission, type AdmissionSettings, type LagSource } from './platform/admission.ts';
import type { Config } from './platform/config.ts';
import { createMetrics } from './platform/metrics.ts';
import type { TokenVerifier } from './platform/oidc.ts';
import { Pressure } from './platform/pressure.ts';
import { RateLimiter, type RateLimitSettings } from './platform/rate-limit.ts';
import { KillSwitch } from './releases/kill-switch.ts';
import { ReleaseService } from './releases/service.ts';
import { observedRuntimeFactory } from './runtime/observed.ts';
import type { RuntimeFactory } from './serving/runners.ts';
import { Scorer } from './serving/scorer.ts';
import { admissionGate } from './sync/admission-gate.ts';
import { SyncRunners } from './sync/runners.ts';
import { SyncService } from './sync/service.ts';

export type GatewayConfig = ServicesConfig &
  Pick<
    Config,
    | 'maxBodyBytes'
    | 'publicUrl'
    | 'openOpsEndpoints'
    | 'accessLog'
    | 'warmupRuns'
    | 'warmupPolicy'
    | 'pressureThresholdMs'
    | 'admissionLagMs'
    | 'batchPaceUtilization'
  > & {
    workers: readonly WorkerKind[];
    deskSessionSecret?: string | undefined;
  };

export interface ComposeOptions extends ServicesOptions {
  config: GatewayConfig;
  /** bearer tokens beside the keys; and per-client rate limits (none when absent) */
  tokens?: TokenVerifier;
  rateLimits?: RateLimitSettings;
  /** the EHRs that call CDS Hooks services (TRIAGE_CDS_CLIENTS); without them only discovery answers */
  cdsClients?: CdsClientsConfig;
  /** tests: where the admission reads the event loop's lag (default: the gateway's Pressure, every 20 ms) */
  loopLag?: LagSource;
  /** tests: admission settings over the defaults (the target is TRIAGE_ADMISSION_LAG_MS) */
  admission?: Partial<AdmissionSettings>;
}

/** The gateway: the services, the warm sync tier, the HTTP app and (optionally) workers in this process. */
export async function composeGateway(options: ComposeOptions) {
  const { config, logger } = options;
  const metrics = options.metrics ?? createMetrics();
  const pressure = new Pressure({
    thresholdMs: config.pressureThresholdMs,
    batchPaceUtilization: config.batchPaceUtilization,
    registry: metrics.registry,
  });
  // early refusal of sync scoring while the loop is saturated (before the app: src/sync/admission-gate.ts)
  const admission = new Admission({ targetLagMs: config.admissionLagMs, ...options.admission }, metrics.registry);
  admission.follow(options.loopLag ?? pressure);
  admission.onChange((shedding, refused) => {
    if (shedding) logger.warn('event loop saturated: refusing part of sync scoring early (503 overloaded)');
    else logger.warn({ refused }, 'event loop calm again: admitting all sync scoring');
  });
  // the batch worker's thread loads (at its nice value) while the gateway loads its models and warms up, so the first
  // run after a start does not wait for it
  const batchThreads = config.workers.includes('batch')
    ? startBatchThreads(config, options.redisUrl, logger, pressure)
    : undefined;
  /** a start-up step: a gateway that fails to start leaves no batch thread behind */
  const starting = async <T>(step: () => Promise<T>): Promise<T> => {
    try {
      return await step();
    } catch (err) {
      await batchThreads?.close();
      throw err;
    }
  };
  const services = await starting(() => composeServices({ ...options, metrics, pressure }));
  const { catalog, redis } = services;
  const syncFactory = options.runtimeFactory
    ? undefined
    : observedRuntimeFactory({ onnxThreads: config.onnxThreads, metrics, logger, breakers: services.breakers });
  const runners = new SyncRunners({
    factory: options.runtimeFactory ?? (syncFactory as RuntimeFactory),
    metrics,
    logger,
    warmupRuns: config.warmupRuns,
    warmupPolicy: config.warmupPolicy,
  });
  const scorer = new Scorer({
    catalog,
    runners,
    shadow: services.shadow,
    ...(services.shadowThread ? { shadowThread: services.shadowThread } : {}),
    metrics,
    pressure,
    observers: services.observers,
    ...(options.random ? { random: options.random } : {}),
  });
  const sync = new SyncService({ catalog, runners, scorer, metrics });
  await starting(async () => {
    await sync.start();
    // a deployment upgraded from the pre-shard layout: what waited on the global batch queue moves to the model shards
    await adoptPreShardBatchQueue({
      redis: services.redis,
      keys: services.keyspace,
      queues: services.queues.batch,
      runs: services.runs,
      schedules: services.schedules,
      logger: services.logger,
    });
    await syncManifestSchedules(
      services.schedules,
      catalog.list().map((m) => m.manifest),
    );
  });
  const releases = new ReleaseService(
    catalog,
    services.audit,
    logger,
    (model, version) => model.tier !== 'sync' || sync.versions(model.name).includes(version),
  );
  const deps: AppDeps = {
    catalog,
    sync,
    jobs: services.jobs,
    reviews: services.reviews,
    deadLetters: services.deadLetterService,
    audit: services.audit,
    batches: services.batches,
    batchReviews: services.batchReviews,
    schedules: services.schedules,
    releases,
    killSwitch: new KillSwitch(catalog, services.audit, logger, services.now, metrics),
    monitoring: services.monitoring,
    thresholdChanges: services.thresholdChanges,
    outcomes: services.outcomes,
    shadow: services.shadow,
    cds: new CdsHooksService({
      catalog,
      sync,
      redis,
      keys: services.keyspace,
      metrics,
      clients: options.cdsClients,
      onFeedback: (model, version, outcome, reason) =>
        services.monitoring.recordFeedback(model, version, outcome, reason),
    }),
    ...(services.reload ? { reload: services.reload } : {}),
    keys: options.keys,
    ...(options.tokens ? { tokens: options.tokens } : {}),
    ...(options.rateLimits
      ? {
          limiter: new RateLimiter({
            redis,
            prefix: config.redisPrefix,
            settings: options.rateLimits,
            now: options.now ?? Date.now,
          }),
        }
      : {}),
    metrics,
    logger,
    redisReady: async () => (await redis.ping()) === 'PONG',
    options: {
      maxBodyBytes: config.maxBodyBytes,
      ...(config.publicUrl ? { publicUrl: config.publicUrl } : {}),
      openOpsEndpoints: config.openOpsEndpoints,
      accessLog: config.accessLog,
      hl7Models: config.hl7?.models ?? [],
      ...(config.deskSessionSecret ? { sessionSecret: config.deskSessionSecret } : {}),
    },
  };
  const app = createApp(deps);
  const gate = admissionGate({ admission, catalog, metrics });
  const workers =
    config.workers.length > 0
      ? startWorkers(config.workers, services, batchThreads ? { batchThreads } : {})
      : undefined;
  return {
    app,
    deps,
    services,
    workers,
    metrics,
    admission,
    /** for @hono/node-server's `serve`: node:http's createServer with the admission gate before the app */
    createServer: gate.createServer,
    /** closes workers, the sync tier, then the services (queues, runtimes, Redis), in that order */
    async close() {
      await workers?.close();
      pressure.close();
      await sync.close();
      await syncFactory?.close();
      await services.close();
    },
  };
}

export type Gateway = Awaited<ReturnType<typeof composeGateway>>;
