/**
 * The process's deadlines, in one min-heap under one timer. A timer fires only between turns of the event loop, so
 * when a saturated loop spends a long turn reading requests, every per-request `setTimeout` due in that turn fires
 * after it, and a 504 that should leave at its deadline leaves a turn late (up to the admission gate's turn limit,
 * 125 ms). Deadlines kept here are also checked by `sweep()`, which the admission gate calls for every request it
 * sees (src/sync/admission-gate.ts): a busy loop, which is when timers are late, is one that sees requests, so what
 * is due fires within a request's handling of its time. One heap instead of a timer per call is also cheaper on the
 * bedside hot path (a timer armed and cleared per request).
 *
 * Per process, like Node's own timer lists: one event loop, one clock. Nothing runs at import; the timer is armed
 * only while a deadline is pending (so an idle process may exit), and fires for the earliest one.
 */
export interface Deadline {
  /** Drops the deadline: its callback will not run. Idempotent. */
  cancel(): void;
}

interface Entry extends Deadline {
  at: number;
  fire: () => void;
  done: boolean;
}

export class Deadlines {
  /** a binary min-heap on `at`; cancelled entries stay until they reach the top (cheaper than removing them) */
  readonly #heap: Entry[] = [];
  /** entries neither fired nor cancelled: the timer is held only while there are some */
  #live = 0;
  #timer: NodeJS.Timeout | undefined;
  /** when the armed timer is due (performance.now() ms) */
  #armedAt = Number.POSITIVE_INFINITY;
  readonly #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Calls `fire` once `ms` have passed (unless cancelled first), on the next timer or sweep after that. */
  add(ms: number, fire: () => void): Deadline {
    const entry: Entry = {
      at: this.#now() + Math.max(0, ms),
      fire,
      done: false,
      cancel: () => {
        if (entry.done) return;
        entry.done = true;
        if (--this.#live === 0) this.#disarm();
      },
    };
    this.#live++;
    this.#push(entry);
    if (entry.at < this.#armedAt) this.#arm(entry.at);
    return entry;
  }

  /** Fires what is due. Cheap when nothing is: one clock read and one comparison. */
  sweep(): void {
    const top = this.#heap[0];
    if (top === undefined || top.at > this.#now()) return;
    this.#fireDue();
  }

  /** pending deadlines (for tests and metrics) */
  get pending(): number {
    return this.#live;
  }

  #fireDue(): void {
    const now = this.#now();
    for (let top = this.#heap[0]; top !== undefined && (top.done || top.at <= now); top = this.#heap[0]) {
      this.#pop();
      if (top.done) continue;
      top.done = true;
      this.#live--;
      // one deadline's callback throwing must not keep the others from firing
      try {
        top.fire();
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
    this.#disarm();
    const next = this.#heap[0];
    if (next !== undefined && this.#live > 0) this.#arm(next.at);
  }

  #arm(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#armedAt = at;
    // timers have 1 ms resolution and fire no earlier than asked; the sweep catches a deadline due in between
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        this.#armedAt = Number.POSITIVE_INFINITY;
        this.#fireDue();
      },
      Math.max(1, Math.ceil(at - this.#now())),
    );
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedAt = Number.POSITIVE_INFINITY;
    // nothing left to wait for: drop what was cancelled, so the heap does not outgrow the deadlines in flight
    if (this.#live === 0) this.#heap.length = 0;
  }

  #push(entry: Entry): void {
    const heap = this.#heap;
    let i = heap.push(entry) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent] as Entry;
      if (p.at <= entry.at) break;
      heap[i] = p;
      i = parent;
    }
    heap[i] = entry;
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    const n = heap.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const child = r < n && (heap[r] as Entry).at < (heap[l] as Entry).at ? r : l;
      if ((heap[child] as Entry).at >= last.at) break;
      heap[i] = heap[child] as Entry;
      i = child;
    }
    heap[i] = last;
  }
}

/** The process's deadlines (see Deadlines). */
export const deadlines = new Deadlines();
