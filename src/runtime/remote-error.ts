/**
 * How a remote call failed, as the gateway acts on it:
 * - `throttled`: the endpoint refused for load (429, ThrottlingException, RESOURCE_EXHAUSTED): retried with backoff
 * - `transient`: 5xx, connection refused/reset, UNAVAILABLE, INTERNAL: retried with backoff
 * - `rejected`: the endpoint refused this request (4xx validation, bad signature): never retried
 * - `malformed`: the endpoint answered, but not with scores we can read: never retried
 * - `timeout`: no answer within the call's budget (serving: 504 deadline_exceeded)
 * - `unavailable`: the endpoint's circuit breaker is open: failed fast without calling it
 */
export type RemoteErrorKind = 'throttled' | 'transient' | 'rejected' | 'malformed' | 'timeout' | 'unavailable';

const RETRYABLE: ReadonlySet<RemoteErrorKind> = new Set(['throttled', 'transient']);

/**
 * The one error a remote runtime throws. The message names the endpoint and the upstream status, never the
 * upstream's own text (which could echo the request); that is kept in `cause` for logs.
 */
export class RemoteError extends Error {
  override readonly name = 'RemoteError';
  readonly kind: RemoteErrorKind;
  readonly retryable: boolean;
  /** the endpoint, as the runtime names it (e.g. `sagemaker:eu-west-2/news2-v2`) */
  readonly endpoint: string | undefined;
  /** what the upstream said: an HTTP status, an AWS error type, a gRPC status name */
  readonly upstream: string | undefined;

  constructor(
    kind: RemoteErrorKind,
    message: string,
    options: { endpoint?: string; upstream?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.retryable = RETRYABLE.has(kind);
    this.endpoint = options.endpoint;
    this.upstream = options.upstream;
  }
}
