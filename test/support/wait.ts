/** Waiting for events, never for time: bounded polling of a condition, and a clock tests move themselves. */

/** A plain delay: for a stand-in that must be slow (a model run, an endpoint), never to wait for something. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** How long a wait may take before it counts as a hang: far beyond what any event takes, even on busy cores. */
export const WAIT_TIMEOUT_MS = 30_000;

/**
 * How long a batch run may take to finish before it counts as a hang: a run starts a thread and loads its model
 * before it scores, and with six test suites on two cores a small run once took longer than WAIT_TIMEOUT_MS.
 */
export const RUN_TIMEOUT_MS = 120_000;

/**
 * A whole describe block's bound: only there to end a hang. Blocks that build several gateways take minutes on cores
 * other work keeps busy, so a tighter bound would make a pass depend on the machine's speed.
 */
export const HANG_GUARD_MS = 300_000;

/** Polls `condition` every `everyMs`; throws (naming `what`) rather than hangs if it is still false after `timeoutMs`. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string | (() => string),
  timeoutMs = WAIT_TIMEOUT_MS,
  everyMs = 2,
): Promise<void> {
  // performance.now(): a test may mock Date
  const started = performance.now();
  while (!(await condition())) {
    if (performance.now() - started > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    }
    await sleep(everyMs);
  }
}

/** Strictly increasing milliseconds near wall time (so holds order deterministically), plus a settable offset. */
export class TestClock {
  #last = 0;
  offsetMs = 0;
  readonly now = (): number => {
    const t = Math.max(Date.now() + this.offsetMs, this.#last + 1);
    this.#last = t;
    return t;
  };
  advance(ms: number): void {
    this.offsetMs += ms;
  }
}

/** Runs `fn(i)` for i in [0, n) with at most `concurrency` at a time; results in order. */
export async function pool<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  const lane = async () => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
  return out;
}
