import { Ajv2020 } from 'ajv/dist/2020.js';
import { z } from 'zod';
import { Problem, problemCodes } from './errors.ts';

/**
 * One source of truth for request shapes: a route validates its body with the same zod schema that this module
 * turns into the OpenAPI 3.1 document (zod 4's own JSON Schema output, draft 2020-12, which is OpenAPI 3.1's schema
 * dialect). Each route file exports the `RouteDoc`s of what it serves, next to the schemas its handlers parse with.
 */
/** The gateway's version, as /openapi.json and OIP server metadata tell it (a test holds it to package.json's). */
export const TRIAGE_VERSION = '0.1.0';

export interface RouteDoc {
  method: 'get' | 'post' | 'put' | 'delete';
  /** the public path in OpenAPI form: `/v1/models/{model}/predict` */
  path: string;
  summary: string;
  /** more than the summary says (CommonMark), before the roles */
  description?: string;
  tag: string;
  /** who may call it: the roles of `requireRole`, or `public` (no credential; ops endpoints follow their setting) */
  auth: 'public' | 'ops' | readonly ('client' | 'reviewer' | 'approver' | 'admin')[];
  /** the request body schema, the one the handler validates with */
  body?: z.ZodType;
  /** the body's media type when it is not plain JSON */
  bodyType?: string;
  query?: Record<string, { schema: z.ZodType; description: string }>;
  /** success statuses and what they carry; a schema documents the body */
  responses: Record<number, { description: string; schema?: z.ZodType; type?: string }>;
  /** error codes this route answers with, beyond authentication and rate limits (problem+json with a stable code) */
  errors?: readonly (keyof typeof problemCodes)[];
  /** the error body's shape: problem+json, an OperationOutcome (Bulk Data) or OIP's `{"error"}` inside problem+json */
  errorShape?: 'problem' | 'operation-outcome' | 'oip';
}

/**
 * Parses a request body with its route's schema; a mismatch is the same 400 `invalid_request` the hand-written
 * checks gave, with the schema's own message. Issues about the body as a whole (not an object, unknown fields) come
 * first, as they did before.
 */
export function parseBody<T extends z.ZodType>(
  schema: T,
  body: unknown,
  options: { withPath?: boolean } = {},
): z.output<T> {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues;
  const first = issues.find((i) => i.path.length === 0) ?? issues[0];
  const message = first?.message ?? 'the body does not match the expected shape';
  // schemas with zod's own messages (OIP's) say where: `inputs.0.shape: …`
  const where = options.withPath && first && first.path.length > 0 ? `${first.path.join('.')}: ` : '';
  throw new Problem('invalid_request', `${where}${message}`);
}

let ajv: Ajv2020 | undefined;

/**
 * `parseBody` for the hot path (predict): the schema's JSON Schema compiled by Ajv answers "valid" in tens of
 * nanoseconds, where zod takes about half a microsecond; anything Ajv refuses goes through zod, so the verdict and
 * the message stay zod's. Only for schemas without refinements or transforms, whose JSON Schema is at least as strict
 * as they are: the body is then returned as it came, and must be what zod would have returned.
 */
export function compiledParser<T extends z.ZodType>(schema: T): (body: unknown) => z.output<T> {
  ajv ??= new Ajv2020({ strict: false, validateFormats: false });
  const valid = ajv.compile(jsonSchema(schema));
  return (body) => (valid(body) ? (body as z.output<T>) : parseBody(schema, body));
}

/** A strict JSON object: `shape` names the fields in the 400 for a body that is not an object. */
export function bodyObject<S extends z.ZodRawShape>(fields: S, shape = '') {
  const allowed = Object.keys(fields);
  const names = allowed.map((a) => `"${a}"`).join(', ');
  return z.strictObject(fields, {
    error: (iss) =>
      iss.code === 'unrecognized_keys'
        ? `unknown field(s): only ${names} ${allowed.length === 1 ? 'is' : 'are'} allowed`
        : `the body must be a JSON object${shape ? ` ${shape}` : ''}`,
  });
}

/** A required field of any JSON value (zod's `unknown` alone lets a missing key through). */
export function present(message: string) {
  return z.unknown().refine((v) => v !== undefined, message);
}

const problemSchema = {
  type: 'object',
  description: 'RFC 9457 problem details; `code` is the stable, machine-readable contract',
  required: ['type', 'title', 'status', 'code'],
  properties: {
    type: { type: 'string', format: 'uri' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { type: 'string', enum: Object.keys(problemCodes) },
    detail: { type: 'string' },
    instance: { type: 'string' },
    requestId: { type: 'string' },
  },
};

const errorContent = {
  problem: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
  'operation-outcome': { 'application/fhir+json': { schema: { $ref: '#/components/schemas/OperationOutcome' } } },
  oip: {
    'application/problem+json': {
      schema: {
        description: "problem details that are also OIP v2's error object: `error` carries the message",
        allOf: [
          { $ref: '#/components/schemas/Problem' },
          { type: 'object', required: ['error'], properties: { error: { type: 'string' } } },
        ],
      },
    },
  },
};

function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<
    string,
    unknown
  >;
  return rest;
}

function operation(doc: RouteDoc) {
  const params = [...doc.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
    name: m[1],
    in: 'path',
    required: true,
    schema: { type: 'string' },
  }));
  const query = Object.entries(doc.query ?? {}).map(([name, q]) => ({
    name,
    in: 'query',
    required: false,
    description: q.description,
    schema: jsonSchema(q.schema),
  }));
  const errorCodes = new Set<keyof typeof problemCodes>(doc.errors ?? []);
  if (doc.auth !== 'public') {
    errorCodes.add('unauthenticated');
    errorCodes.add('forbidden');
    errorCodes.add('rate_limited');
  }
  if (doc.body) {
    for (const c of ['malformed_json', 'invalid_request', 'payload_too_large', 'unsupported_media_type'] as const)
      errorCodes.add(c);
  }
  const responses: Record<string, unknown> = {};
  for (const [status, r] of Object.entries(doc.responses)) {
    responses[status] = {
      description: r.description,
      ...(r.schema || r.type
        ? { content: { [r.type ?? 'application/json']: { schema: r.schema ? jsonSchema(r.schema) : {} } } }
        : {}),
    };
  }
  const byStatus = new Map<number, string[]>();
  for (const code of errorCodes) {
    const { status } = problemCodes[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  for (const [status, codes] of [...byStatus].sort(([a], [b]) => a - b)) {
    responses[String(status)] ??= {
      description: `error: ${codes.join(', ')}`,
      content: errorContent[doc.errorShape ?? 'problem'],
    };
  }
  const roles = Array.isArray(doc.auth) ? doc.auth : [];
  return {
    summary: doc.summary,
    tags: [doc.tag],
    operationId: `${doc.method}${doc.path.replaceAll(/[^A-Za-z0-9]+(\w)?/g, (_m, ch: string | undefined) => (ch ?? '').toUpperCase())}`,
    ...(doc.description !== undefined || roles.length > 0
      ? {
          description: [
            doc.description,
            roles.length > 0 ? `Roles: ${roles.join(', ')} (admins pass every role check).` : undefined,
          ]
            .filter((d) => d !== undefined)
            .join('\n\n'),
        }
      : {}),
    security: doc.auth === 'public' ? [] : doc.auth === 'ops' ? [{}, { bearer: [] }] : [{ bearer: [] }],
    ...(params.length + query.length > 0 ? { parameters: [...params, ...query] } : {}),
    ...(doc.body
      ? {
          requestBody: {
            required: true,
            content: { [doc.bodyType ?? 'application/json']: { schema: jsonSchema(doc.body) } },
          },
        }
      : {}),
    responses,
  };
}

/** The OpenAPI 3.1 document of the routes described by `docs`. */
export function openApiDocument(docs: readonly RouteDoc[], version: string) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const doc of docs) {
    paths[doc.path] ??= {};
    (paths[doc.path] as Record<string, unknown>)[doc.method] = operation(doc);
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Triage',
      version,
      description:
        'Inference gateway for clinical ML models, routed by latency tier. Errors are RFC 9457 problem+json with a ' +
        'stable `code`; the Bulk Data endpoints answer with FHIR OperationOutcomes carrying the same code.',
    },
    components: {
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description: 'an API key (trg_…) or an OpenID Connect access token; `x-api-key` is also accepted',
        },
      },
      schemas: {
        Problem: problemSchema,
        OperationOutcome: {
          type: 'object',
          description: 'FHIR R4 OperationOutcome; the issue carries the stable code as `details.coding[0].code`',
          required: ['resourceType', 'issue'],
          properties: { resourceType: { const: 'OperationOutcome' }, issue: { type: 'array' } },
        },
      },
    },
    paths,
  };
}
