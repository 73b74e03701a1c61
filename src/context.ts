import type { Context } from 'hono';
import type { Logger } from 'pino';
import type { ScheduleService } from './batch/schedules.ts';
import type { BatchService } from './batch/service.ts';
import type { AdminService } from './jobs/admin.ts';
import type { JobService } from './jobs/service.ts';
import type { ApiKeyStore, Principal } from './platform/auth.ts';
import type { Metrics } from './platform/metrics.ts';
import type { ReleaseService } from './releases/service.ts';
import type { ShadowRecorder } from './serving/shadow.ts';
import type { ModelService, ServedModel } from './sync/service.ts';

/** Everything `createApp` needs, injected: no module reads the environment or opens a connection on import. */
export interface AppDeps {
  models: ModelService;
  jobs: JobService;
  admin: AdminService;
  batches: BatchService;
  schedules: ScheduleService;
  releases: ReleaseService;
  shadow: ShadowRecorder;
  /** re-reads the manifests and swaps them in; returns the served `name@version`s */
  reload?: () => Promise<string[]>;
  keys: ApiKeyStore;
  metrics: Metrics;
  logger: Logger;
  /** readiness probes of the shared state: resolves true when Redis answers */
  redisReady: () => Promise<boolean>;
  options: {
    maxBodyBytes: number;
    /** health and metrics without an API key (inside a cluster) */
    openOpsEndpoints: boolean;
    accessLog: boolean;
  };
}

/** The typed Hono context of every route. */
export interface AppEnv {
  Variables: {
    requestId: string;
    /** the request body limit, for readJson */
    maxBodyBytes: number;
    /** set by handlers that wrote x-request-id themselves */
    requestIdSent: boolean | undefined;
    principal: Principal | undefined;
    /** set by routes that resolve a model, so the access log and metrics can label by it */
    model: ServedModel | undefined;
  };
}

export type AppContext = Context<AppEnv>;
