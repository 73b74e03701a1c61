import { type CircuitBreakerPolicy, CircuitState, ConsecutiveBreaker, circuitBreaker, handleWhen } from 'cockatiel';
import { RemoteError } from './remote-error.ts';
import type { ResiliencePolicy } from './resilience.ts';

/** A failure that says something about the endpoint's health: it counts toward opening the breaker. */
function countsAgainstEndpoint(err: unknown): boolean {
  return err instanceof RemoteError && err.kind !== 'rejected' && err.kind !== 'unavailable';
}

/** Circuit breakers by endpoint name, so runtimes of the same endpoint (a reload, a shadow) share one. */
export class BreakerRegistry {
  readonly #breakers = new Map<string, CircuitBreakerPolicy>();

  get(
    name: string,
    policy: Pick<ResiliencePolicy, 'breakerThreshold' | 'breakerHalfOpenAfterMs'>,
  ): CircuitBreakerPolicy {
    const key = `${name}\u0000${policy.breakerThreshold}\u0000${policy.breakerHalfOpenAfterMs}`;
    let breaker = this.#breakers.get(key);
    if (!breaker) {
      breaker = circuitBreaker(handleWhen(countsAgainstEndpoint), {
        halfOpenAfter: policy.breakerHalfOpenAfterMs,
        breaker: new ConsecutiveBreaker(policy.breakerThreshold),
      });
      this.#breakers.set(key, breaker);
    }
    return breaker;
  }

  /** `closed`, `open`, `half_open` (or `isolated`) of every breaker, for the breaker-state metric */
  states(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [key, breaker] of this.#breakers) out[key.split('\u0000')[0] as string] = stateName(breaker.state);
    return out;
  }
}

function stateName(state: CircuitState): string {
  switch (state) {
    case CircuitState.Closed:
      return 'closed';
    case CircuitState.Open:
      return 'open';
    case CircuitState.HalfOpen:
      return 'half_open';
    default:
      return 'isolated';
  }
}
