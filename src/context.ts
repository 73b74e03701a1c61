import type { Context } from 'hono';
import type { Logger } from 'pino';
import type { BatchReviewService } from './batch/review.ts';
import type { ScheduleService } from './batch/schedules.ts';
import type { BatchService } from './batch/service.ts';
import type { DeadLetterService } from './callbacks/replay.ts';
import type { CdsHooksService } from './cds-hooks/service.ts';
import type { ReviewService } from './jobs/reviews.ts';
import type { JobService } from './jobs/service.ts';
import type { MonitoringService } from './monitoring/service.ts';
import type { OutcomeService } from './outcomes/service.ts';
import type { AuditLog } from './platform/audit.ts';
import { type ApiKeyStore, assertModelAllowed, type Principal } from './platform/auth.ts';
import { Problem } from './platform/errors.ts';
import type { Metrics } from './platform/metrics.ts';
import type { TokenVerifier } from './platform/oidc.ts';
import type { RateLimiter } from './platform/rate-limit.ts';
import { MODEL_NAME } from './registry/schema.ts';
import type { KillSwitch } from './releases/kill-switch.ts';
import type { Actor } from './releases/reload.ts';
import type { ReleaseService } from './releases/service.ts';
import type { ThresholdChanges } from './releases/threshold-changes.ts';
import type { CatalogModel, ModelCatalog } from './serving/catalog.ts';
import type { ShadowRecorder } from './serving/shadow.ts';
import type { SyncService } from './sync/service.ts';

/** Everything `createApp` needs, injected: no module reads the environment or opens a connection on import. */
export interface AppDeps {
  catalog: ModelCatalog;
  sync: SyncService;
  jobs: JobService;
  reviews: ReviewService;
  deadLetters: DeadLetterService;
  audit: AuditLog;
  batches: BatchService;
  /** clinician review of batch output (a model's `batch.review`) */
  batchReviews: BatchReviewService;
  schedules: ScheduleService;
  releases: ReleaseService;
  killSwitch: KillSwitch;
  monitoring: MonitoringService;
  thresholdChanges: ThresholdChanges;
  outcomes: OutcomeService;
  shadow: ShadowRecorder;
  /** CDS Hooks services of the models that declare hooks */
  cds?: CdsHooksService;
  /** re-reads the manifests and swaps them in (governed, audited as `actor`); returns the served `name@version`s */
  reload?: (actor?: Actor) => Promise<string[]>;
  keys: ApiKeyStore;
  /** bearer tokens (OpenID Connect / SMART on FHIR) beside API keys, when issuers are configured */
  tokens?: TokenVerifier;
  /** per-client limits and failed-authentication throttling, when configured */
  limiter?: RateLimiter;
  metrics: Metrics;
  logger: Logger;
  /** readiness probes of the shared state: resolves true when Redis answers */
  redisReady: () => Promise<boolean>;
  options: {
    maxBodyBytes: number;
    /** the public base URL behind a proxy (TRIAGE_PUBLIC_URL); else a request's own origin */
    publicUrl?: string;
    /** health and metrics without an API key (inside a cluster) */
    openOpsEndpoints: boolean;
    accessLog: boolean;
    /** the models HL7v2 messages may be scored by (POST /v1/hl7, MLLP) */
    hl7Models?: readonly string[];
    /** signs review-desk session cookies; shared by every replica (else each makes its own) */
    sessionSecret?: string;
  };
}

/** The typed Hono context of every route. */
export interface AppEnv {
  Variables: {
    requestId: string;
    /** the request body limit, for readJson */
    maxBodyBytes: number;
    /** set by handlers that wrote x-request-id and SECURE_HEADERS themselves (the fast path): middleware leaves them */
    requestIdSent: boolean | undefined;
    principal: Principal | undefined;
    /** a Content-Security-Policy that replaces the default one: only the API reference page sets it */
    contentSecurityPolicy: string | undefined;
    /** the deadline of a sync scoring (ms from the request's arrival), so a 504's lateness can be measured */
    deadlineMs: number | undefined;
    /** when the request reached the app (performance.now()): a sync scoring's deadline counts from here */
    arrivedAt: number;
    /** the rate-limit fields of an allowed request (not predict's), for handlers that answer on the fast path */
    rateLimitHeaders: Record<string, string> | undefined;
    /** set by routes that resolve a model, so the access log and metrics can label by it */
    model: CatalogModel | undefined;
  };
}

export type AppContext = Context<AppEnv>;

/** The `:model` path parameter (or a name from elsewhere) → a model the caller may use: 404 unknown, 403 not allowed. */
export function resolveModel(c: AppContext, deps: AppDeps, name = c.req.param('model') ?? ''): CatalogModel {
  const model = MODEL_NAME.test(name) ? deps.catalog.get(name) : undefined;
  if (!model) throw new Problem('model_not_found', 'no model by that name; GET /v1/models lists them');
  const principal = c.get('principal');
  if (principal) assertModelAllowed(principal, name);
  c.set('model', model);
  return model;
}
