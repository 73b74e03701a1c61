/**
 * The one error type of Triage. Every failure a caller can see is a `Problem`, rendered as RFC 9457
 * `application/problem+json`. `code` is the stable, machine-readable contract; `title` and `detail` are for people.
 */
export const problemCodes = {
  // 400
  malformed_json: { status: 400, title: 'The request body is not valid JSON' },
  invalid_request: { status: 400, title: 'The request does not match the expected shape' },
  invalid_input: { status: 400, title: 'An instance does not match the model input schema' },
  invalid_header: { status: 400, title: 'A request header has an invalid value' },
  batch_too_large: { status: 400, title: 'Too many instances in one request' },
  invalid_callback_url: { status: 400, title: 'The callback URL is not allowed' },
  invalid_input_file: { status: 400, title: 'The batch input file cannot be used' },
  // 401/403
  unauthenticated: { status: 401, title: 'A valid API key or bearer token is required' },
  forbidden: { status: 403, title: 'This API key or token may not do this' },
  // 404/405
  not_found: { status: 404, title: 'No such resource' },
  run_cancelled: { status: 410, title: 'The batch run was cancelled' },
  output_rejected: { status: 410, title: 'A reviewer rejected this output: it is never served' },
  run_failed: { status: 500, title: 'The batch run failed' },
  model_not_found: { status: 404, title: 'No such model' },
  method_not_allowed: { status: 405, title: 'Method not allowed on this resource' },
  // 409/413/415/422
  wrong_tier: { status: 409, title: 'This model is not served on this endpoint' },
  idempotency_conflict: { status: 409, title: 'This idempotency key was used for a different request' },
  already_decided: { status: 409, title: 'This review has already been decided' },
  awaiting_review: { status: 409, title: 'This output is held for clinician review' },
  outcome_conflict: { status: 409, title: 'A different outcome was already recorded for this prediction' },
  evidence_required: { status: 409, title: 'The version lacks the release evidence this change needs' },
  invalid_state: { status: 409, title: 'The job is not in a state that allows this' },
  invalid_manifest: { status: 409, title: 'The manifests on disk are invalid: the previous ones keep serving' },
  threshold_change_unapproved: {
    status: 409,
    title: 'A threshold change needs an approved change request: the previous manifests keep serving',
  },
  insufficient_data: { status: 422, title: 'Not enough data to score: no score, follow the standard protocol' },
  payload_too_large: { status: 413, title: 'The request body is too large' },
  headers_too_large: { status: 431, title: 'The request headers are too large' },
  request_timeout: { status: 408, title: 'The request did not arrive in time' },
  unsupported_media_type: { status: 415, title: 'The request body must be application/json' },
  // 429
  rate_limited: { status: 429, title: 'Too many requests: slow down' },
  // 5xx that are explicit refusals, never crashes
  overloaded: { status: 503, title: 'The model is at capacity: retry shortly' },
  not_ready: { status: 503, title: 'The gateway is not ready' },
  dependency_unavailable: { status: 503, title: 'A shared dependency (Redis) is unavailable: retry shortly' },
  identity_provider_unavailable: { status: 503, title: "The token issuer's keys cannot be fetched: retry shortly" },
  model_suspended: { status: 503, title: 'The model is suspended: no score' },
  deadline_exceeded: { status: 504, title: 'No score: the model did not answer in time' },
  inference_failed: { status: 500, title: 'The model failed to score this request' },
  upstream_failed: { status: 502, title: 'The remote model endpoint failed' },
  internal: { status: 500, title: 'Internal error' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ProblemCode = keyof typeof problemCodes;

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  code: ProblemCode;
  detail?: string;
  instance?: string;
  [extension: string]: unknown;
}

export class Problem extends Error {
  readonly code: ProblemCode;
  readonly status: number;
  readonly extensions: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(
    code: ProblemCode,
    detail?: string,
    options: { extensions?: Record<string, unknown>; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(detail ?? problemCodes[code].title, { cause: options.cause });
    this.name = 'Problem';
    this.code = code;
    this.status = problemCodes[code].status;
    this.extensions = options.extensions ?? {};
    this.headers = options.headers ?? {};
  }

  toBody(instance?: string): ProblemBody {
    const { title } = problemCodes[this.code];
    return {
      type: `https://triage.dev/problems/${this.code.replaceAll('_', '-')}`,
      title,
      status: this.status,
      code: this.code,
      ...(this.message !== title ? { detail: this.message } : {}),
      ...(instance ? { instance } : {}),
      ...this.extensions,
    };
  }
}
