import type { Logger } from 'pino';
import { MonitoringRecorder } from './monitoring/recorder.ts';
import { MonitoringService } from './monitoring/service.ts';
import { registerOutcomeGauges } from './outcomes/gauges.ts';
import { PredictionLog } from './outcomes/prediction-log.ts';
import { OutcomeService, type OutcomeServiceRecords } from './outcomes/service.ts';
import type { AuditLog } from './platform/audit.ts';
import type { KeySpace } from './platform/keyspace.ts';
import type { Metrics } from './platform/metrics.ts';
import type { RedisClient } from './platform/redis.ts';
import { governThresholds } from './releases/reload.ts';
import { ThresholdChanges } from './releases/threshold-changes.ts';
import type { ModelCatalog } from './serving/catalog.ts';

/**
 * The accountability loop of one process, for the composition root: threshold change requests (and the reload check
 * every process that reloads applies), and, unless monitoring is off, the taps every scorer of the process gets
 * (monitoring counters, the prediction log for outcomes) with the services that read what they record.
 */
export function composeAccountability(o: {
  redis: RedisClient;
  keys: KeySpace;
  config: { monitoring?: boolean };
  catalog: ModelCatalog;
  audit: AuditLog;
  /** the records that say whose a job or a batch run is (who may report its outcomes) */
  records: OutcomeServiceRecords;
  metrics: Metrics;
  logger: Logger;
  now: () => number;
}) {
  const { redis, keys, catalog, audit, logger, now } = o;
  const on = o.config.monitoring !== false;
  // threshold changes are release state like routing and thresholds themselves: global (src/releases/threshold-changes.ts)
  const thresholdChanges = new ThresholdChanges({ redis, prefix: keys.global, catalog, audit, now });
  governThresholds(catalog, thresholdChanges);
  // one recorder per process, on every scorer of it: the taps count in memory, a flush a second writes to Redis
  // each writes and reads a model's state in the model's shard (src/platform/keyspace.ts)
  const recorder = on ? new MonitoringRecorder({ redis, keys, logger, now }) : undefined;
  const predictionLog = on ? new PredictionLog({ redis, keys, logger, now }) : undefined;
  const monitoring = new MonitoringService({ redis, keys, recorder, catalog, metrics: o.metrics, now });
  const outcomes = new OutcomeService({ redis, keys, log: predictionLog, records: o.records, audit, now });
  registerOutcomeGauges(o.metrics, { models: () => catalog.list(), figures: (m, v) => outcomes.figures(m, v) });
  return {
    thresholdChanges,
    monitoring,
    outcomes,
    observers: recorder && predictionLog ? [recorder, predictionLog] : [],
    /** writes what the taps counted since their last flush */
    async close() {
      await recorder?.close();
      await predictionLog?.close();
    },
  };
}
