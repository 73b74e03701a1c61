import {
  BrokenCircuitError,
  ExponentialBackoff,
  handleWhen,
  type IBackoff,
  IsolatedCircuitError,
  retry,
  TaskCancelledError,
  TimeoutStrategy,
  timeout,
} from 'cockatiel';
import { BreakerRegistry } from './breakers.ts';
import { RemoteError, type RemoteErrorKind } from './remote-error.ts';
import type { ModelRuntime, OutputTensor, RunOptions } from './types.ts';

export type { RemoteErrorKind } from './remote-error.ts';
export { BreakerRegistry, RemoteError };

/** The version's `resilience` section with its timeout resolved (see factory.ts for the defaults). */
export interface ResiliencePolicy {
  /** most one attempt may take; also the whole call's budget when the caller gives no deadline */
  timeoutMs: number;
  /** retries after the first attempt (throttled and transient failures only) */
  retries: number;
  /** consecutive failed attempts that open the endpoint's breaker */
  breakerThreshold: number;
  /** how long an open breaker fails fast before letting one probe through */
  breakerHalfOpenAfterMs: number;
  /** first retry delay before jitter (default 25 ms) */
  backoffInitialMs?: number;
  /** cap of a retry delay (default 1000 ms) */
  backoffMaxMs?: number;
}

export type ResilienceEvent =
  | { type: 'retry'; name: string; kind: RemoteErrorKind; attempt: number; delayMs: number }
  /** a retryable failure that was not retried: no retries left, or the deadline leaves no room for another attempt */
  | { type: 'give_up'; name: string; kind: RemoteErrorKind; attempt: number; reason: 'retries' | 'deadline' }
  /** the call ended without an answer in time (its attempts so far, its whole budget) */
  | { type: 'timeout'; name: string; attempts: number; budgetMs: number }
  | { type: 'short_circuit'; name: string }
  | { type: 'breaker'; name: string; state: 'open' | 'half_open' | 'closed' };

export interface ResilienceOptions {
  /** the endpoint: names the breaker in a registry, and every event */
  name: string;
  onEvent?: (event: ResilienceEvent) => void;
  /** where breakers live; share one registry so every runtime of an endpoint shares its breaker */
  breakers?: BreakerRegistry;
}

/** Shortest attempt worth starting: with less time left, the call gives up instead. */
const MIN_ATTEMPT_MS = 10;

/**
 * Wraps a remote runtime in the gateway's call policy. Per call:
 * - the call's deadline is `options.deadline`, or now + `timeoutMs` when the caller gives none;
 * - each attempt gets min(`timeoutMs`, time left) (cockatiel aggressive timeout: the attempt's signal is aborted and
 *   its promise abandoned when the budget is spent) → RemoteError `timeout`;
 * - throttled and transient failures are retried with decorrelated-jitter exponential backoff, at most `retries`
 *   times, and only while the delay plus another attempt (as long as the last one took, at least 10 ms) fits before
 *   the deadline; otherwise the last failure is thrown as it is;
 * - every attempt goes through the endpoint's circuit breaker (ConsecutiveBreaker(`breakerThreshold`) over
 *   throttled, transient, timeout and malformed failures); while it is open calls fail fast with RemoteError
 *   `unavailable`, and after `breakerHalfOpenAfterMs` one probe is let through (success closes it again).
 * The call settles by its deadline whatever happens (a guard timer rejects with `timeout`), and never hangs.
 */
export function withResilience(
  runtime: ModelRuntime,
  policy: ResiliencePolicy,
  options: ResilienceOptions,
): ModelRuntime {
  const { name, onEvent } = options;
  const emit = (event: ResilienceEvent) => {
    try {
      onEvent?.(event);
    } catch {
      // an observer's failure is not the call's failure
    }
  };
  const breaker = (options.breakers ?? new BreakerRegistry()).get(name, policy);
  const listeners = onEvent
    ? [
        breaker.onBreak(() => emit({ type: 'breaker', name, state: 'open' })),
        breaker.onHalfOpen(() => emit({ type: 'breaker', name, state: 'half_open' })),
        breaker.onReset(() => emit({ type: 'breaker', name, state: 'closed' })),
      ]
    : [];
  const backoffFactory = new ExponentialBackoff({
    initialDelay: policy.backoffInitialMs ?? 25,
    maxDelay: policy.backoffMaxMs ?? 1000,
  });

  async function attempts(
    input: Float32Array,
    rows: number,
    deadline: number,
    callSignal: AbortSignal,
    call: { attempts: number },
  ): Promise<Record<string, OutputTensor>> {
    let planned: IBackoff<unknown> | undefined;
    let lastAttemptMs = 0;
    // the delay is drawn when the failure is judged, so the judgement knows how long the wait would be
    const plannedBackoff: IBackoff<unknown> = {
      get duration() {
        return planned?.duration ?? 0;
      },
      next: () => plannedBackoff,
    };
    const retryPolicy = retry(
      handleWhen((err) => {
        if (!(err instanceof RemoteError) || !err.retryable) return false;
        if (call.attempts > policy.retries) {
          emit({ type: 'give_up', name, kind: err.kind, attempt: call.attempts, reason: 'retries' });
          return false;
        }
        planned = planned ? planned.next(undefined) : backoffFactory.next();
        const left = deadline - Date.now();
        if (left - planned.duration < Math.max(MIN_ATTEMPT_MS, lastAttemptMs)) {
          emit({ type: 'give_up', name, kind: err.kind, attempt: call.attempts, reason: 'deadline' });
          return false;
        }
        return true;
      }),
      { maxAttempts: policy.retries, backoff: plannedBackoff },
    );
    const retryListener = retryPolicy.onRetry((event) => {
      const err = 'error' in event ? event.error : undefined;
      if (err instanceof RemoteError) {
        emit({ type: 'retry', name, kind: err.kind, attempt: event.attempt, delayMs: event.delay });
      }
    });

    const once = async (signal: AbortSignal): Promise<Record<string, OutputTensor>> => {
      call.attempts++;
      const budgetMs = Math.min(policy.timeoutMs, deadline - Date.now());
      const started = Date.now();
      try {
        return await timeout(budgetMs, TimeoutStrategy.Aggressive).execute(
          ({ signal: attemptSignal }) =>
            runtime.run(input, rows, { deadline: started + budgetMs, signal: attemptSignal }),
          signal,
        );
      } catch (err) {
        if (err instanceof TaskCancelledError || (err instanceof RemoteError && err.kind === 'timeout')) {
          throw new RemoteError('timeout', `${name}: no answer within ${budgetMs} ms`, { endpoint: name, cause: err });
        }
        throw err;
      } finally {
        lastAttemptMs = Date.now() - started;
      }
    };

    try {
      return await retryPolicy.execute(async ({ signal }) => {
        // checked before the breaker: running out of time is not the endpoint's failure
        if (signal.aborted || deadline - Date.now() <= 0) {
          throw new RemoteError('timeout', `${name}: no time left for an attempt`, { endpoint: name });
        }
        try {
          return await breaker.execute(() => once(signal), signal);
        } catch (err) {
          if (err instanceof BrokenCircuitError || err instanceof IsolatedCircuitError) {
            emit({ type: 'short_circuit', name });
            throw new RemoteError('unavailable', `${name}: circuit breaker open, not calling the endpoint`, {
              endpoint: name,
              cause: err,
            });
          }
          if (err instanceof TaskCancelledError) {
            throw new RemoteError('timeout', `${name}: cancelled`, { endpoint: name, cause: err });
          }
          throw err;
        }
      }, callSignal);
    } finally {
      retryListener.dispose();
    }
  }

  return {
    kind: runtime.kind,
    async run(input: Float32Array, rows: number, runOptions: RunOptions = {}) {
      const started = Date.now();
      const deadline = runOptions.deadline ?? started + policy.timeoutMs;
      const call = { attempts: 0 };
      const controller = new AbortController();
      let guardTimer: NodeJS.Timeout | undefined;
      let onCallerAbort: (() => void) | undefined;
      const guard = new Promise<never>((_, reject) => {
        guardTimer = setTimeout(
          () => {
            controller.abort();
            reject(new RemoteError('timeout', `${name}: no answer by the deadline`, { endpoint: name }));
          },
          Math.max(0, deadline - Date.now()),
        );
        const callerSignal = runOptions.signal;
        if (callerSignal) {
          onCallerAbort = () => {
            controller.abort();
            reject(new RemoteError('timeout', `${name}: cancelled by the caller`, { endpoint: name }));
          };
          if (callerSignal.aborted) onCallerAbort();
          else callerSignal.addEventListener('abort', onCallerAbort, { once: true });
        }
      });
      const work = attempts(input, rows, deadline, controller.signal, call);
      work.catch(() => {}); // settled by the guard first: its late failure is nobody's business
      try {
        return await Promise.race([work, guard]);
      } catch (err) {
        if (err instanceof RemoteError && err.kind === 'timeout') {
          emit({ type: 'timeout', name, attempts: call.attempts, budgetMs: deadline - started });
        }
        throw err;
      } finally {
        clearTimeout(guardTimer);
        if (onCallerAbort) runOptions.signal?.removeEventListener('abort', onCallerAbort);
        controller.abort();
      }
    },
    async close() {
      for (const l of listeners) l.dispose();
      await runtime.close();
    },
  };
}
