import { Gauge, type Registry } from 'prom-client';

/**
 * How much sync scoring the gateway admits while its event loop is saturated: a share between 0 and 1, cut
 * multiplicatively while the loop's lag stays above a target and raised additively while it is calm (AIMD, as TCP
 * finds a link's capacity). The lag comes from Pressure's fast tick (`onLag`), every 20 ms.
 *
 * Why the lag: when requests arrive faster than one event loop can handle them, the backlog waits in the kernel's
 * socket buffers, where no in-process queue sees it; each loop turn then works through a bigger batch, every answer
 * (200, 503 or 504) waits longer, and timers (deadlines included) fire late. A timer's lateness measures exactly that
 * batch. Only a lag that holds for `sustainedTicks` ticks in a row cuts the share (a standing queue, as CoDel tells it
 * from a burst): one garbage collection or a moment off the CPU is not overload. And only while scoring requests
 * arrive in numbers (`minRequests` a tick): a loop slowed by other work is not relieved by refusing a trickle.
 *
 * Requests are admitted deterministically in proportion to the share (a credit counter, no randomness): at 0.25,
 * one in four.
 *
 * The tick cannot fire in the middle of a long turn of the loop, when a burst that arrived together (a step in the
 * load, a stall's backlog) is all being handled in one go: so each request also reads the lag as it stands right now,
 * and while it is past `turnLimitMs` the rest of the turn is refused whatever the share. That bounds how long one
 * turn can spend admitting work before the share has had a tick to react.
 */
/** What the admission reads the loop's lag from (the gateway's Pressure). */
export interface LagSource {
  /** a reading every tick (ms late) */
  onLag(listener: (lagMs: number) => void): void;
  /** the lag as it stands right now (ms) */
  lagNowMs(): number;
}

export interface AdmissionSettings {
  /** lag (ms) above which the share is cut; 0 turns early refusal off */
  targetLagMs: number;
  /** consecutive ticks above the target before a cut (default 3) */
  sustainedTicks?: number;
  /** the share kept at each cut (default 0.7) */
  decrease?: number;
  /** the share added at each calm tick (default 0.05: from none back to all in 20 ticks, 400 ms) */
  increase?: number;
  /** a lag right now past this refuses at once, whatever the share (default five times the target) */
  turnLimitMs?: number;
  /**
   * scoring requests that must have arrived since the last tick for its lag to count (default 16, i.e. 800/s at a
   * 20 ms tick): a loop lagging on other work (start-up, a reload) with little traffic is not relieved by refusing it
   */
  minRequests?: number;
}

export class Admission {
  readonly #target: number;
  readonly #sustained: number;
  readonly #decrease: number;
  readonly #increase: number;
  readonly #turnLimit: number;
  readonly #minRequests: number;
  /** scoring requests that arrived since the last tick */
  #seen = 0;
  #lagNow: () => number = () => 0;
  #share = 1;
  #credit = 0;
  #lateTicks = 0;
  #refused = 0;
  readonly #listeners: Array<(shedding: boolean, refused: number) => void> = [];

  constructor(settings: AdmissionSettings, registry?: Registry) {
    this.#target = settings.targetLagMs;
    this.#sustained = settings.sustainedTicks ?? 3;
    this.#decrease = settings.decrease ?? 0.7;
    this.#increase = settings.increase ?? 0.05;
    this.#turnLimit = settings.turnLimitMs ?? 5 * settings.targetLagMs;
    this.#minRequests = settings.minRequests ?? 16;
    if (registry) {
      const admission = this;
      new Gauge({
        name: 'triage_admission_ratio',
        help: 'Share of sync scoring requests admitted (1: all); below 1 the rest are refused early, the event loop saturated',
        registers: [registry],
        collect() {
          this.set(admission.share);
        },
      });
    }
  }

  /** the share of sync scoring requests admitted now (1: all) */
  get share(): number {
    return this.#share;
  }

  get enabled(): boolean {
    return this.#target > 0;
  }

  /** Reads the lag from `source` (its ticks, and its reading right now); nothing while the admission is off. */
  follow(source: LagSource): void {
    if (!this.enabled) return;
    source.onLag((lagMs) => this.observe(lagMs));
    this.#lagNow = () => source.lagNowMs();
  }

  /** One reading of the event loop's lag (ms). */
  observe(lagMs: number): void {
    if (!this.enabled) return;
    const before = this.#share;
    const busyWithRequests = this.#seen >= this.#minRequests;
    this.#seen = 0;
    if (lagMs > this.#target && busyWithRequests) {
      this.#lateTicks++;
      if (this.#lateTicks >= this.#sustained) {
        this.#share *= this.#decrease;
        if (this.#share < 0.01) this.#share = 0;
      }
    } else {
      this.#lateTicks = 0;
      this.#share = Math.min(1, this.#share + this.#increase);
    }
    if (before === 1 && this.#share < 1) this.#notify(true);
    else if (before < 1 && this.#share === 1) this.#notify(false);
  }

  /**
   * Whether to admit this request (each call counts as a scoring request arriving): not when many came in a turn
   * already past the limit; else all at share 1, or in proportion to the share.
   */
  admit(): boolean {
    if (!this.enabled) return true;
    this.#seen++;
    if (this.#seen > this.#minRequests && this.#lagNow() > this.#turnLimit) {
      this.#refused++;
      return false;
    }
    if (this.#share === 1) return true;
    this.#credit += this.#share;
    if (this.#credit >= 1) {
      this.#credit -= 1;
      return true;
    }
    this.#refused++;
    return false;
  }

  /** Called when refusing starts (`shedding`) and when it stops, with the requests refused in between. */
  onChange(listener: (shedding: boolean, refused: number) => void): void {
    this.#listeners.push(listener);
  }

  #notify(shedding: boolean): void {
    const refused = this.#refused;
    if (!shedding) this.#refused = 0;
    this.#credit = 0;
    for (const l of this.#listeners) l(shedding, refused);
  }
}
