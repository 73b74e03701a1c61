import { z } from 'zod';
import { releaseEvidenceSchema } from './evidence.ts';
import { sha256, versionId } from './ids.ts';

export type { ReleaseEvidence } from './evidence.ts';
export { sha256, versionId };

/* A model version in its manifest: where it runs, how remote calls behave, and its release evidence. */

const onnxRuntimeSchema = z.object({
  kind: z.literal('onnx'),
  /** path of the .onnx file relative to the model's folder; must stay inside it */
  path: z.string().min(1),
  sha256,
});

/** An AWS SageMaker real-time endpoint, called with InvokeEndpoint through the SDK's credential chain. */
const sagemakerRuntimeSchema = z
  .object({
    kind: z.literal('sagemaker'),
    endpointName: z.string().regex(/^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/, 'must be a SageMaker endpoint name'),
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'must be an AWS region such as eu-west-2'),
    /** endpoint override (VPC endpoints, tests) */
    endpointUrl: z.url().optional(),
    contentType: z.enum(['application/json', 'text/csv']).default('application/json'),
    targetModel: z.string().min(1).optional(),
    targetVariant: z.string().min(1).optional(),
  })
  .strict();

/** A Google Vertex AI endpoint, called with PredictionServiceClient.predict. */
const vertexRuntimeSchema = z
  .object({
    kind: z.literal('vertex'),
    endpoint: z
      .string()
      .regex(/^projects\/[^/]+\/locations\/[^/]+\/endpoints\/[^/]+$/, 'must be projects/…/locations/…/endpoints/…'),
    /** api endpoint override, e.g. europe-west2-aiplatform.googleapis.com (tests: localhost:port) */
    apiEndpoint: z.string().min(1).optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

/** How a remote runtime is called: timeout and retries inside the caller's deadline, and a circuit breaker. */
const resilienceSchema = z
  .object({
    timeoutMs: z.number().int().min(1).max(600_000).optional(),
    retries: z.number().int().min(0).max(10).default(2),
    breakerThreshold: z.number().int().min(1).max(1000).default(5),
    breakerHalfOpenAfterMs: z.number().int().min(100).max(3_600_000).default(10_000),
  })
  .strict();

export const runtimeSchema = z.discriminatedUnion('kind', [
  onnxRuntimeSchema,
  sagemakerRuntimeSchema,
  vertexRuntimeSchema,
]);
export type RuntimeSpec = z.infer<typeof runtimeSchema>;

export const versionSchema = z.object({
  version: versionId,
  description: z.string().optional(),
  runtime: runtimeSchema,
  resilience: resilienceSchema.optional(),
  /** the version that answers when this (remote) one cannot: the response says `fallback: true` */
  fallback: versionId.optional(),
  evidence: releaseEvidenceSchema.optional(),
});
export type ModelVersion = z.infer<typeof versionSchema>;
