import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { type RateLimitSettings, rateSchema } from './rate-limit.ts';

/**
 * Environment → typed config, parsed once at start. Any `TRIAGE_X` may instead be given as `TRIAGE_X_FILE`, a path
 * whose contents are the value (Kubernetes secret mounts).
 */

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const envSchema = z.object({
  TRIAGE_ENV: z.enum(['development', 'production']).default('development'),
  TRIAGE_HOST: z.string().min(1).optional(),
  TRIAGE_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  TRIAGE_REDIS_URL: z
    .string()
    // the cluster form names seed nodes: redis-cluster://h1:p1,h2:p2 (src/platform/redis.ts)
    .regex(/^rediss?(-cluster)?:\/\//, 'must be a redis://, rediss:// or redis-cluster://host:port,… URL')
    .optional(),
  TRIAGE_REDIS_PREFIX: z.string().min(1).default('{triage}'),
  // replicas that must hold an accepted job or a decision before the caller hears of it (Redis replicates
  // asynchronously; a cluster's failover would otherwise lose the last writes of a killed primary)
  TRIAGE_REDIS_REPLICA_ACKS: z.coerce.number().int().min(0).max(5).default(0),
  TRIAGE_MODELS_DIR: z.string().min(1).default('models'),
  TRIAGE_API_KEYS: z.string().min(1).optional(),
  TRIAGE_OIDC_ISSUERS: z.string().min(1).optional(),
  TRIAGE_FHIR_SERVERS: z.string().min(1).optional(),
  TRIAGE_OBJECT_STORES: z.string().min(1).optional(),
  // S3 presigned and GCS V4 signed URLs both last at most 7 days
  TRIAGE_SIGNED_URL_SECONDS: z.coerce
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 3600)
    .default(3600),
  TRIAGE_HL7_MODELS: z
    .string()
    .regex(/^([a-z0-9][a-z0-9-]*(,[a-z0-9][a-z0-9-]*)*)?$/, 'must be a comma list of model names')
    .default(''),
  TRIAGE_HL7_MLLP_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  TRIAGE_HL7_MLLP_HOST: z.string().min(1).default('127.0.0.1'),
  TRIAGE_DESK_SESSION_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  TRIAGE_CDS_CLIENTS: z.string().min(1).optional(),
  TRIAGE_PUBLIC_URL: z
    .url({ protocol: /^https?$/ })
    .transform((u) => u.replace(/\/+$/, ''))
    .optional(),
  TRIAGE_RATE_LIMIT_PREDICT: rateSchema.prefault('100/1s'),
  TRIAGE_RATE_LIMIT_SUBMIT: rateSchema.prefault('10/1s'),
  TRIAGE_RATE_LIMIT_DEFAULT: rateSchema.prefault('50/1s'),
  TRIAGE_AUTH_FAILURE_LIMIT: rateSchema.prefault('20/1m'),
  TRIAGE_TRUSTED_PROXIES: z
    .string()
    .default('')
    .transform((v) =>
      v
        .split(',')
        .map((p) => p.trim())
        .filter(Boolean),
    )
    .refine((list) => list.every(isCidr), 'must be a comma list of IP addresses or CIDRs (10.0.0.0/8, fd00::/8)'),
  TRIAGE_OPEN_OPS_ENDPOINTS: bool.default(true),
  TRIAGE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  TRIAGE_ACCESS_LOG: bool.default(true),
  TRIAGE_MAX_BODY_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(64 * 1024 * 1024)
    .default(1024 * 1024),
  TRIAGE_SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).max(600_000).default(10_000),
  TRIAGE_SYNC_CEILING_MS: z.coerce.number().int().min(1).max(60_000).default(5_000),
  TRIAGE_WARMUP_RUNS: z.coerce.number().int().min(1).max(10_000).default(50),
  TRIAGE_WARMUP_POLICY: z.enum(['refuse', 'warn']).default('refuse'),
  TRIAGE_ONNX_THREADS: z.coerce.number().int().min(1).max(64).default(1),
  TRIAGE_WORKERS: z
    .string()
    .regex(
      /^(all|none|(inference|callbacks|maintenance|batch)(,(inference|callbacks|maintenance|batch))*)$/,
      'must be all, none, or a comma list of inference, callbacks, maintenance, batch',
    )
    .default('all'),
  // the model shards this process's workers consume (default all the models it loads): KEDA scales per shard
  TRIAGE_WORKER_SHARDS: z
    .string()
    .regex(/^([A-Za-z][A-Za-z0-9_]{0,63}(,[A-Za-z][A-Za-z0-9_]{0,63})*)?$/, 'must be a comma list of model names')
    .default(''),
  TRIAGE_WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(256).default(4),
  TRIAGE_WORKER_LOCK_MS: z.coerce.number().int().min(100).max(600_000).default(30_000),
  TRIAGE_CALLBACK_ATTEMPTS: z.coerce.number().int().min(1).max(50).default(12),
  TRIAGE_CALLBACK_BACKOFF_MS: z.coerce.number().int().min(1).max(3_600_000).default(10_000),
  TRIAGE_CALLBACK_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(10_000),
  TRIAGE_CALLBACK_HTTP_HOSTS: z.string().optional(),
  TRIAGE_DATA_DIR: z.string().min(1).default('data'),
  TRIAGE_WORKER_METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
  TRIAGE_BATCH_MISSED_AFTER_MS: z.coerce.number().int().min(1000).max(86_400_000).default(60_000),
  TRIAGE_PRESSURE_THRESHOLD_MS: z.coerce.number().min(1).max(10_000).default(20),
  TRIAGE_ADMISSION_LAG_MS: z.coerce.number().min(0).max(10_000).default(25),
  // listening sockets on the gateway's port (SO_REUSEPORT; src/platform/listeners.ts): Node accepts one connection
  // per socket per turn of its event loop, so under saturation one socket admits a few dozen new callers a second
  TRIAGE_LISTEN_SOCKETS: z.coerce.number().int().min(1).max(64).default(8),
  TRIAGE_BATCH_NICE: z.coerce.number().int().min(0).max(19).default(10),
  TRIAGE_BATCH_PACE_UTILIZATION: z.coerce.number().min(0).max(1).default(0.8),
  TRIAGE_SHADOW_NICE: z.coerce.number().int().min(0).max(19).default(10),
  TRIAGE_REDIS_COMMAND_TIMEOUT_MS: z.coerce.number().int().min(50).max(60_000).default(500),
  TRIAGE_MAINTENANCE_INTERVAL_MS: z.coerce.number().int().min(100).max(3_600_000).default(15_000),
  TRIAGE_MONITORING: z.enum(['on', 'off']).default('on'),
  TRIAGE_SUSPENDED_RECHECK_MS: z.coerce.number().int().min(10).max(600_000).default(5_000),
});

/** How callbacks are delivered. */
export interface CallbackPolicy {
  attempts: number;
  /** first retry delay; doubles each attempt, with jitter */
  backoffMs: number;
  timeoutMs: number;
  /** hosts allowed over plain http (e.g. loopback in development) */
  httpHosts: readonly string[];
}

export type Config = {
  env: 'development' | 'production';
  host: string;
  port: number;
  redisUrl: string | undefined;
  redisPrefix: string;
  /** replicas that acknowledge an accepted job or a decision (WAIT) before the answer; 0: none asked */
  redisReplicaAcks: number;
  modelsDir: string;
  /** raw API key config (YAML or JSON); undefined = none configured */
  apiKeys: string | undefined;
  /** raw OpenID Connect issuer config (YAML or JSON); undefined = bearer tokens are not accepted */
  oidcIssuers: string | undefined;
  /** raw FHIR servers config for Bulk Data export inputs (src/ingress/fhir-servers.ts); undefined = none */
  fhirServers: string | undefined;
  /** raw object store config (src/batch/bucket-config.ts): S3 and GCS buckets for batch inputs and outputs */
  objectStores: string | undefined;
  /** how long the signed URLs of a manifest's bucket outputs stay valid */
  signedUrlSeconds: number;
  /** the HL7v2 door (src/ingress/hl7/): the sync models it scores, and the MLLP listener (no port: none) */
  hl7: { models: string[]; mllpPort: number | undefined; mllpHost: string };
  /** raw CDS Hooks client config (YAML or JSON): the EHRs whose JWTs are accepted */
  cdsClients: string | undefined;
  rateLimits: RateLimitSettings;
  openOpsEndpoints: boolean;
  logLevel: z.infer<typeof envSchema>['TRIAGE_LOG_LEVEL'];
  accessLog: boolean;
  maxBodyBytes: number;
  /** signs review-desk session cookies; every replica needs the same one */
  deskSessionSecret: string | undefined;
  /** the gateway's public base URL (behind a proxy): absolute URLs in callbacks; else each request's own origin */
  publicUrl: string | undefined;
  shutdownGraceMs: number;
  syncCeilingMs: number;
  warmupRuns: number;
  warmupPolicy: 'refuse' | 'warn';
  onnxThreads: number;
  /** which workers run inside this process */
  workers: Array<'inference' | 'callbacks' | 'maintenance' | 'batch'>;
  /** the model shards the workers consume; empty: every model loaded */
  workerShards: string[];
  workerConcurrency: number;
  /** how long an inference job's lock lasts without renewal: a crashed worker's job is recovered after about this */
  workerLockMs: number;
  callbacks: CallbackPolicy;
  maintenanceIntervalMs: number;
  /** batch inputs and outputs live here */
  dataDir: string;
  /** a standalone worker process serves /metrics and /healthz here (0: not at all) */
  workerMetricsPort: number;
  batchMissedAfterMs: number;
  /** event-loop delay p99 (ms) above which shadows and in-process async work yield to bedside traffic */
  pressureThresholdMs: number;
  /** event-loop lag (ms) which, held, makes the gateway refuse sync scoring early, before the app (0: never) */
  admissionLagMs: number;
  /** listening sockets bound to the gateway's port, where Node has reusePort (one elsewhere) */
  listenSockets: number;
  /** the nice value of batch threads (0-19): the OS gives bedside work the cores first */
  batchNice: number;
  /** event-loop utilization (0-1) above which batch chunks in the gateway's process wait (1: never) */
  batchPaceUtilization: number;
  /** the nice value of the thread that scores in-process shadow versions (0-19) */
  shadowNice: number;
  /** how long a Redis command may wait before the caller gets a 503 (dependency_unavailable) instead of a hang */
  redisCommandTimeoutMs: number;
  /** how soon an async job or batch run waiting on a suspended model looks again */
  suspendedRecheckMs: number;
  /** monitoring taps on the scorer (drift, outputs, overrides per version); off only to measure their cost */
  monitoring: boolean;
};

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Resolves `TRIAGE_X_FILE` indirections; a variable given both ways is an error. */
function resolveFileVariables(env: NodeJS.ProcessEnv): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [key, value] of Object.entries(env)) {
    if (!key.startsWith('TRIAGE_')) continue;
    if (key.endsWith('_FILE')) {
      const target = key.slice(0, -'_FILE'.length);
      if (env[target] !== undefined) throw new ConfigError(`${target} and ${key} are both set: use one`);
      try {
        out[target] = readFileSync(value ?? '', 'utf8').trim();
      } catch (err) {
        throw new ConfigError(`${key}: cannot read ${value}: ${(err as NodeJS.ErrnoException).code ?? err}`);
      }
    } else if (value !== '') {
      out[key] = value;
    }
  }
  return out;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(resolveFileVariables(env));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = String(issue?.path[0] ?? 'environment');
    throw new ConfigError(`${name}: ${issue?.message ?? 'invalid'}`);
  }
  const e = parsed.data;
  const noCredentials = e.TRIAGE_API_KEYS === undefined && e.TRIAGE_OIDC_ISSUERS === undefined;
  const devMode = e.TRIAGE_ENV === 'development' && noCredentials;
  if (e.TRIAGE_ENV === 'production' && noCredentials) {
    throw new ConfigError(
      'TRIAGE_API_KEYS: production needs API keys or token issuers (set TRIAGE_API_KEYS or TRIAGE_OIDC_ISSUERS)',
    );
  }
  if (devMode && e.TRIAGE_HOST !== undefined && !isLoopback(e.TRIAGE_HOST)) {
    throw new ConfigError(
      `TRIAGE_HOST: without API keys the gateway only binds to loopback, not ${e.TRIAGE_HOST}; configure TRIAGE_API_KEYS`,
    );
  }
  return {
    env: e.TRIAGE_ENV,
    host: e.TRIAGE_HOST ?? (devMode ? '127.0.0.1' : '0.0.0.0'),
    port: e.TRIAGE_PORT,
    redisUrl: e.TRIAGE_REDIS_URL,
    redisPrefix: e.TRIAGE_REDIS_PREFIX,
    redisReplicaAcks: e.TRIAGE_REDIS_REPLICA_ACKS,
    modelsDir: e.TRIAGE_MODELS_DIR,
    apiKeys: e.TRIAGE_API_KEYS,
    oidcIssuers: e.TRIAGE_OIDC_ISSUERS,
    fhirServers: e.TRIAGE_FHIR_SERVERS,
    objectStores: e.TRIAGE_OBJECT_STORES,
    signedUrlSeconds: e.TRIAGE_SIGNED_URL_SECONDS,
    hl7: {
      models: e.TRIAGE_HL7_MODELS.split(',').filter(Boolean),
      mllpPort: e.TRIAGE_HL7_MLLP_PORT,
      mllpHost: e.TRIAGE_HL7_MLLP_HOST,
    },
    cdsClients: e.TRIAGE_CDS_CLIENTS,
    rateLimits: {
      classes: {
        predict: e.TRIAGE_RATE_LIMIT_PREDICT,
        submit: e.TRIAGE_RATE_LIMIT_SUBMIT,
        default: e.TRIAGE_RATE_LIMIT_DEFAULT,
      },
      authFailures: e.TRIAGE_AUTH_FAILURE_LIMIT,
      trustedProxies: e.TRIAGE_TRUSTED_PROXIES,
    },
    openOpsEndpoints: e.TRIAGE_OPEN_OPS_ENDPOINTS,
    logLevel: e.TRIAGE_LOG_LEVEL,
    accessLog: e.TRIAGE_ACCESS_LOG,
    maxBodyBytes: e.TRIAGE_MAX_BODY_BYTES,
    deskSessionSecret: e.TRIAGE_DESK_SESSION_SECRET,
    publicUrl: e.TRIAGE_PUBLIC_URL,
    shutdownGraceMs: e.TRIAGE_SHUTDOWN_GRACE_MS,
    syncCeilingMs: e.TRIAGE_SYNC_CEILING_MS,
    warmupRuns: e.TRIAGE_WARMUP_RUNS,
    warmupPolicy: e.TRIAGE_WARMUP_POLICY,
    onnxThreads: e.TRIAGE_ONNX_THREADS,
    workers:
      e.TRIAGE_WORKERS === 'all'
        ? ['inference', 'callbacks', 'maintenance', 'batch']
        : e.TRIAGE_WORKERS === 'none'
          ? []
          : (e.TRIAGE_WORKERS.split(',') as Config['workers']),
    workerShards: e.TRIAGE_WORKER_SHARDS === '' ? [] : e.TRIAGE_WORKER_SHARDS.split(','),
    workerConcurrency: e.TRIAGE_WORKER_CONCURRENCY,
    workerLockMs: e.TRIAGE_WORKER_LOCK_MS,
    callbacks: {
      attempts: e.TRIAGE_CALLBACK_ATTEMPTS,
      backoffMs: e.TRIAGE_CALLBACK_BACKOFF_MS,
      timeoutMs: e.TRIAGE_CALLBACK_TIMEOUT_MS,
      // plain http only where the operator says so: loopback in development, nowhere by default in production
      httpHosts: (e.TRIAGE_CALLBACK_HTTP_HOSTS ?? (e.TRIAGE_ENV === 'development' ? 'localhost,127.0.0.1,::1' : ''))
        .split(',')
        .map((h) => h.trim())
        .filter(Boolean),
    },
    maintenanceIntervalMs: e.TRIAGE_MAINTENANCE_INTERVAL_MS,
    dataDir: e.TRIAGE_DATA_DIR,
    workerMetricsPort: e.TRIAGE_WORKER_METRICS_PORT,
    batchMissedAfterMs: e.TRIAGE_BATCH_MISSED_AFTER_MS,
    pressureThresholdMs: e.TRIAGE_PRESSURE_THRESHOLD_MS,
    admissionLagMs: e.TRIAGE_ADMISSION_LAG_MS,
    listenSockets: e.TRIAGE_LISTEN_SOCKETS,
    batchNice: e.TRIAGE_BATCH_NICE,
    batchPaceUtilization: e.TRIAGE_BATCH_PACE_UTILIZATION,
    shadowNice: e.TRIAGE_SHADOW_NICE,
    redisCommandTimeoutMs: e.TRIAGE_REDIS_COMMAND_TIMEOUT_MS,
    suspendedRecheckMs: e.TRIAGE_SUSPENDED_RECHECK_MS,
    monitoring: e.TRIAGE_MONITORING === 'on',
  };
}

function isCidr(text: string): boolean {
  const [address = '', bits, extra] = text.split('/');
  const family = isIP(address);
  if (family === 0 || extra !== undefined) return false;
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128));
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
