import type { KeySpace } from '../platform/keyspace.ts';
import type { Metrics } from '../platform/metrics.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { CatalogModel, ModelCatalog } from '../serving/catalog.ts';
import { registerMonitoringGauges } from './metrics.ts';
import type { MonitoringRecorder, ReviewDecision } from './recorder.ts';
import { monitoringReport } from './report.ts';
import { hourlySeries } from './series.ts';
import type { WindowName } from './windows.ts';

/** Monitoring per model version: the recorder (when switched on), the report and the gauges. */
export class MonitoringService {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;
  readonly recorder: MonitoringRecorder | undefined;
  readonly #now: () => number;

  constructor(options: {
    redis: RedisClient;
    keys: KeySpace;
    recorder: MonitoringRecorder | undefined;
    catalog: ModelCatalog;
    metrics: Metrics;
    now?: () => number;
  }) {
    this.#redis = options.redis;
    this.#keys = options.keys;
    this.recorder = options.recorder;
    this.#now = options.now ?? Date.now;
    const { catalog } = options;
    registerMonitoringGauges(options.metrics, {
      models: () => catalog.list(),
      report: (m, windows) => this.report(m, windows),
    });
  }

  get enabled(): boolean {
    return this.recorder !== undefined;
  }

  report(model: CatalogModel, windows?: readonly WindowName[]) {
    return monitoringReport(this.#redis, this.#keys, model, { now: this.#now(), ...(windows ? { windows } : {}) });
  }

  /** CDS Hooks: a clinician accepted or overrode (with a reason code) a card this version's score made. */
  recordFeedback(model: string, version: string, outcome: 'accepted' | 'overridden', reason?: string): void {
    this.recorder?.recordFeedback(model, version, outcome, reason);
  }

  /** Each version's last week hour by hour, oldest first (the pictures over time). */
  series(model: CatalogModel) {
    const now = this.#now();
    const shard = this.#keys.shard(model.name);
    return Promise.all(
      model.manifest.versions.map(async (v) => ({
        version: v.version,
        hours: await hourlySeries(this.#redis, shard, v.version, now),
      })),
    );
  }

  /** For the review desk: a decision on a held result of this version. */
  recordDecision(model: string, version: string, decision: ReviewDecision): void {
    this.recorder?.recordDecision(model, version, decision);
  }
}
