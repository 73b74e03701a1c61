import YAML from 'yaml';
import { z } from 'zod';
import { ConfigError, isLoopback } from '../platform/config.ts';

/**
 * The buckets batch runs may read and write (TRIAGE_OBJECT_STORES, YAML or JSON), and how each provider is reached.
 * Credentials are not here: each SDK finds its own (AWS: environment, profile, container or instance role; Google:
 * GOOGLE_APPLICATION_CREDENTIALS, workload identity, the metadata server). Endpoints can be overridden for
 * S3-compatible stores (MinIO, Ceph) and private endpoints.
 */
const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;
/** S3's and GCS's common bucket names (lower case, digits, dots, dashes; 3 to 63) */
export const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

const endpoint = z
  .url({ protocol: /^https?$/ })
  .refine((u) => {
    const url = new URL(u);
    // patient data would cross the network in clear
    return url.protocol === 'https:' || isLoopback(url.hostname);
  }, 'must be https (http only to loopback)')
  .transform((u) => u.replace(/\/+$/, ''));

const bucketSchema = z
  .object({
    /** s3://name or gs://name */
    url: z.string().regex(/^(s3|gs):\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be s3://<bucket> or gs://<bucket>'),
    /** client key ids that may name it (inside their own clients/<key id>/ and granted shared/<area>/ prefixes) */
    clients: z.array(z.string().regex(KEY_ID)).max(1000).default([]),
  })
  .strict();

const fileSchema = z
  .object({
    s3: z
      .object({
        /** else the SDK's chain (AWS_REGION, the profile) */
        region: z
          .string()
          .regex(/^[a-z0-9-]{1,40}$/)
          .optional(),
        endpoint: endpoint.optional(),
        /** path-style addressing (most S3-compatible stores need it) */
        forcePathStyle: z.boolean().default(false),
      })
      .strict()
      .default({ forcePathStyle: false }),
    gcs: z
      .object({
        projectId: z.string().min(1).max(100).optional(),
        apiEndpoint: endpoint.optional(),
      })
      .strict()
      .default({}),
    buckets: z.array(bucketSchema).max(100).default([]),
    /**
     * An analytics sink: completed runs' predictions also written as NDJSON under Hive-style partitions
     * (`<url>/dt=YYYY-MM-DD/model=<name>/<run id>.ndjson`), so Athena or BigQuery external tables read them in place.
     * Scheduled runs (the operator's population scoring) by default; `all` adds on-demand runs.
     */
    analytics: z
      .object({
        url: z
          .string()
          .regex(
            /^(s3|gs):\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/[A-Za-z0-9._=-]+)*$/,
            'must be s3:// or gs://<bucket>[/prefix]',
          ),
        runs: z.enum(['scheduled', 'all']).default('scheduled'),
      })
      .strict()
      .optional(),
  })
  .strict();

export type ObjectStoresConfig = z.infer<typeof fileSchema>;
export type BucketConfig = z.infer<typeof bucketSchema>;

/** Parses TRIAGE_OBJECT_STORES; a bad entry stops the start, naming the field. Undefined: no buckets. */
export function parseObjectStores(raw: string | undefined): ObjectStoresConfig {
  if (raw === undefined) return fileSchema.parse({});
  let doc: unknown;
  try {
    doc = YAML.parse(raw);
  } catch {
    throw new ConfigError('TRIAGE_OBJECT_STORES: not valid YAML or JSON');
  }
  const parsed = fileSchema.safeParse(doc ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigError(`TRIAGE_OBJECT_STORES: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  const seen = new Set<string>();
  for (const b of parsed.data.buckets) {
    if (seen.has(b.url)) throw new ConfigError(`TRIAGE_OBJECT_STORES: bucket ${b.url} appears twice`);
    seen.add(b.url);
  }
  const sink = parsed.data.analytics?.url.split('/').slice(0, 3).join('/');
  if (sink && !seen.has(sink)) {
    throw new ConfigError('TRIAGE_OBJECT_STORES: analytics.url: its bucket must be one of buckets');
  }
  return parsed.data;
}
