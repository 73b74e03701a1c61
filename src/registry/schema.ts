import { z } from 'zod';
import { exportInputSchema } from '../ingress/export-request.ts';
import { checkLineage } from './evidence.ts';
import { checkFhirMapping, fhirMappingSchema } from './fhir-mapping.ts';
import { checkHooks, hooksSchema } from './hooks.ts';
import { versionId, versionSchema } from './versions.ts';

/**
 * The model manifest (`models/<name>/model.yaml`). Field names are the contract with model owners: change them
 * only with a migration note. Every ONNX model takes one float32 input tensor `features` of shape [N, F], its
 * columns in the order of `features` below (booleans as 0/1, enums as the index of the value in `values`).
 */

/** A model name: also its folder and its URL segment (so a path segment that does not match is no model). */
export const MODEL_NAME = /^[a-z][a-z0-9-]{0,62}$/;
const modelName = z
  .string()
  .regex(MODEL_NAME, 'must be lower-case letters, digits and hyphens, starting with a letter');

const numericBounds = {
  unit: z.string().min(1).optional(),
  loinc: z
    .union([z.string(), z.array(z.string()).min(1)])
    .optional()
    .describe('LOINC code(s) that carry this feature in FHIR Observations'),
  min: z.number().finite(),
  max: z.number().finite(),
};

const featureBase = {
  name: z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,63}$/, 'must be an identifier (letters, digits, _)'),
  description: z.string().optional(),
  required: z.boolean().default(true),
  /** how the feature is read from FHIR resources (src/registry/fhir-mapping.ts) */
  fhir: fhirMappingSchema.optional(),
};

export const featureSchema = z
  .discriminatedUnion('type', [
    z.object({ ...featureBase, type: z.literal('number'), ...numericBounds, default: z.number().finite().optional() }),
    z.object({ ...featureBase, type: z.literal('integer'), ...numericBounds, default: z.number().int().optional() }),
    z.object({ ...featureBase, type: z.literal('boolean'), default: z.boolean().optional() }),
    z.object({
      ...featureBase,
      type: z.literal('enum'),
      values: z.array(z.string().min(1)).min(2),
      default: z.string().optional(),
    }),
  ])
  .superRefine((f, ctx) => {
    checkFhirMapping(f, ctx);
    if ((f.type === 'number' || f.type === 'integer') && f.min > f.max) {
      ctx.addIssue({ code: 'custom', message: `min (${f.min}) is greater than max (${f.max})`, path: ['min'] });
    }
    if (!f.required && f.default === undefined) {
      ctx.addIssue({ code: 'custom', message: 'an optional feature needs a default', path: ['default'] });
    }
    if (f.type === 'enum' && f.default !== undefined && !f.values.includes(f.default)) {
      ctx.addIssue({ code: 'custom', message: `default "${f.default}" is not one of values`, path: ['default'] });
    }
  });
export type Feature = z.infer<typeof featureSchema>;

/** An extra output tensor, shaped into the prediction beside the score. */
const extraOutputSchema = z.discriminatedUnion('kind', [
  z.object({ tensor: z.string(), as: z.string(), kind: z.literal('vector'), names: z.array(z.string()).min(1) }),
  z.object({ tensor: z.string(), as: z.string(), kind: z.literal('label'), labels: z.array(z.string()).min(1) }),
]);

/** A single score per instance with an approved threshold (early-warning scores, risk models). */
export const scoreOutputSchema = z.object({
  kind: z.literal('score').default('score'),
  /** the output tensor holding one score per instance, shape [N] or [N, 1] */
  scoreTensor: z.string(),
  /** what the score is called in predictions, e.g. `news2Total`, `deteriorationRisk` */
  scoreName: z.string(),
  description: z.string().optional(),
  min: z.number().optional(),
  max: z.number().optional(),
  /** the approved threshold: a score at or above it is `positive` */
  threshold: z.number().finite(),
  labels: z.object({ positive: z.string(), negative: z.string() }),
  extras: z.array(extraOutputSchema).default([]),
});

/** Class probabilities (document triage): the top class, its confidence, and every class's probability. */
export const classificationOutputSchema = z.object({
  kind: z.literal('classification'),
  /** output tensor of shape [N, labels.length], rows summing to 1 */
  tensor: z.string(),
  labels: z.array(z.string().min(1)).min(2),
  description: z.string().optional(),
  /** the approved operating point: a top-class confidence below it is not `confident` */
  threshold: z.number().min(0).max(1),
});

/** Top-k neighbours in a bundled reference corpus (retrieval). */
export const retrievalOutputSchema = z.object({
  kind: z.literal('retrieval'),
  scoresTensor: z.string(),
  indicesTensor: z.string(),
  /** JSON file in the model folder: an array of {id, title, summary} in the order the model indexes them */
  corpus: z.string().min(1),
  description: z.string().optional(),
  /** the approved similarity below which a neighbour is not reported as a match */
  threshold: z.number().min(-1).max(1),
});

export const outputSchema = z.union([scoreOutputSchema, classificationOutputSchema, retrievalOutputSchema]);
export type OutputSpec = z.infer<typeof outputSchema>;

export const batchFormats = ['ndjson', 'csv', 'fhir-ndjson'] as const;
export const scheduleIdSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be 1-63 of lower-case letters, digits and hyphens');

/** A cron schedule of batch scoring. `input.path` is relative to the data directory. */
export const scheduleSchema = z
  .object({
    id: scheduleIdSchema,
    cron: z.string().min(1).max(120),
    timezone: z.string().min(1).max(64).default('UTC'),
    input: z.union([
      z.object({ path: z.string().min(1).max(1024), format: z.enum(batchFormats) }).strict(),
      exportInputSchema, // a FHIR server's Bulk Data export (src/ingress/)
    ]),
    /** a slot missed while everything was down: skip it, or run once to catch up */
    missed: z.enum(['skip', 'catch-up']).default('skip'),
    /** client key ids that may read this schedule's runs and their files (admins always may) */
    readers: z
      .array(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'a key id'))
      .max(100)
      .optional(),
  })
  .strict();
export type Schedule = z.infer<typeof scheduleSchema>;

export const tierSchema = z.enum(['sync', 'async', 'batch']);
export type Tier = z.infer<typeof tierSchema>;

export const manifestSchema = z
  .object({
    name: modelName,
    title: z.string().min(1),
    description: z.string().optional(),
    disclaimer: z.string().optional(),
    owner: z.object({ team: z.string().min(1), contact: z.string().min(1) }),
    /** the declared tier; checked against what the classifier derives from the facts below */
    tier: tierSchema.optional(),
    /** how long the clinical decision the model informs can wait for an answer */
    decisionWindowMs: z.number().int().positive().optional(),
    input: z.enum(['features', 'document']).default('features'),
    /** the columns of the `features` input (feature models) */
    features: z.array(featureSchema).default([]),
    /** how a document model's text becomes its `features` input (see src/serving/documents.ts) */
    document: z
      .object({
        hashBuckets: z.number().int().min(16).max(65_536),
        maxChars: z.number().int().min(1).max(1_000_000).default(100_000),
      })
      .optional(),
    output: outputSchema,
    versions: z.array(versionSchema).min(1),
    routing: z
      .object({
        primary: versionId,
        /** a weighted split, sticky per subject: `weight` percent of subjects see `version` */
        canary: z
          .object({ version: versionId, weight: z.number().min(0).max(100) })
          .strict()
          .optional(),
        /** versions that score a sample of the same inputs off the request path; recorded, never returned */
        shadow: z
          .object({ versions: z.array(versionId).min(1), sampleRate: z.number().min(0).max(1).default(1) })
          .strict()
          .optional(),
      })
      .strict(),
    sync: z
      .object({
        latencyBudgetMs: z.number().int().min(1).max(60_000),
        maxConcurrency: z.number().int().min(1).max(10_000).default(64),
        maxBatchSize: z.number().int().min(1).max(4096).default(64),
        /** longest a request waits for others to share its ONNX run (dynamic batching) */
        maxBatchWaitMs: z.number().min(0).max(50).default(0),
        maxInstances: z.number().int().min(1).max(10_000).default(100),
      })
      .optional(),
    /** the clinician review hold of async results */
    review: z
      .object({
        policy: z.enum(['never', 'always', 'low-confidence', 'sample']),
        /** low-confidence: hold when the top confidence is below this (default: output.threshold) */
        confidenceBelow: z.number().min(0).max(1).optional(),
        /** sample: the percentage of results held at random, for audit */
        samplePercent: z.number().min(0).max(100).optional(),
        /** a hold older than this is escalated */
        deadlineMinutes: z
          .number()
          .positive()
          .max(60 * 24 * 30)
          .default(240),
        /**
         * how the review desk orders this model's holds after escalated ones: by predicted category (earlier in the
         * list first) or by score; then oldest first
         */
        priority: z
          .union([
            z.object({ by: z.literal('category'), order: z.array(z.string().min(1)).min(1) }).strict(),
            z.object({ by: z.literal('score'), order: z.enum(['desc', 'asc']) }).strict(),
          ])
          .optional(),
      })
      .strict()
      .optional(),
    async: z
      .object({
        /** how long one attempt of the job may run */
        timeoutMs: z.number().int().min(100).max(3_600_000).default(60_000),
        /** attempts for transient failures (bad input is never retried) */
        attempts: z.number().int().min(1).max(20).default(3),
      })
      .strict()
      .optional(),
    /** batch scoring: chunk size of the ONNX runs and the FHIR look-back window */
    batch: z
      .object({
        chunkSize: z.number().int().min(1).max(8192).default(1024),
        lookbackHours: z
          .number()
          .positive()
          .max(24 * 3650)
          .default(72),
        /**
         * clinician review of a run's output before its requester gets it: the whole run, or only the rows at or
         * above the threshold (the rest are released at once). Not the `review` of async results: a batch model stays
         * batch, its runs are held after scoring (src/batch/review-store.ts)
         */
        review: z
          .object({ hold: z.enum(['run', 'above-threshold']) })
          .strict()
          .optional(),
      })
      .strict()
      .optional(),
    /** cron schedules of batch scoring (a model with only schedules is a batch model) */
    schedules: z.array(scheduleSchema).optional(),
    /** CDS Hooks services of the model (src/registry/hooks.ts) */
    hooks: hooksSchema.optional(),
  })
  .strict()
  .superRefine((m, ctx) => {
    checkHooks(m, ctx);
    checkLineage(m, ctx);
    if (m.input === 'features' && m.features.length === 0) {
      ctx.addIssue({ code: 'custom', message: 'a features model needs at least one feature', path: ['features'] });
    }
    if (m.input === 'document' && !m.document) {
      ctx.addIssue({ code: 'custom', message: 'a document model needs a document section', path: ['document'] });
    }
    if (m.input === 'document' && m.features.length > 0) {
      ctx.addIssue({ code: 'custom', message: 'a document model takes no features', path: ['features'] });
    }
    if (m.batch?.review?.hold === 'above-threshold' && m.output.kind !== 'score') {
      ctx.addIssue({
        code: 'custom',
        message: 'hold "above-threshold" needs a score output (its rows are split at output.threshold)',
        path: ['batch', 'review', 'hold'],
      });
    }
    if (m.review?.policy === 'sample' && m.review.samplePercent === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: 'policy "sample" needs samplePercent',
        path: ['review', 'samplePercent'],
      });
    }
  });
export type Manifest = z.infer<typeof manifestSchema>;

export {
  type ModelVersion,
  type ReleaseEvidence,
  type RuntimeSpec,
  runtimeSchema,
  versionSchema,
} from './versions.ts';
