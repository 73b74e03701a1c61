/**
 * Shards that appear after a worker process started: a model a reload added (in this process or another) is
 * announced in `{<base>}:shards`; once the key space has learned it, this process starts the model's shard workers, so
 * its jobs are consumed without a restart. Only once this process serves the model: a model announced elsewhere that
 * its catalog lacks makes it re-read its own manifests once (the deployment's manifests gained a model); a job taken
 * without the manifest would fail as "no longer served". Processes told their shards (TRIAGE_WORKER_SHARDS) keep to them.
 */
import type { Logger } from 'pino';
import type { KeySpace } from '../src/platform/keyspace.ts';
import type { ModelCatalog } from '../src/serving/catalog.ts';

export interface ShardFollowDeps {
  /** the key space, refreshed from Redis by the services (compose.ts) */
  keys: KeySpace;
  catalog: ModelCatalog;
  /** the models whose shard workers run already */
  served: readonly string[];
  /** starts a model's shard workers */
  start: (model: string) => void;
  /** re-reads this process's manifests (absent: a model announced elsewhere waits for this process's own reload) */
  reload?: (() => Promise<unknown>) | undefined;
  everyMs: number;
  logger: Logger;
}

export function followShards(deps: ShardFollowDeps) {
  const { keys, catalog, logger } = deps;
  const started = new Set(deps.served);
  // the models this process has served or already re-read its manifests for: any other shard was announced elsewhere
  const seen = new Set([...deps.served, ...catalog.list().map((m) => m.name)]);
  const check = async () => {
    for (const m of catalog.list()) seen.add(m.name);
    const announced = keys
      .shards()
      .map((x) => x.model)
      .filter((m) => !seen.has(m));
    if (announced.length > 0 && deps.reload) {
      for (const m of announced) seen.add(m);
      logger.info({ models: announced }, 'models announced by another process: re-reading the manifests');
      await deps
        .reload()
        .catch((err: Error) =>
          logger.warn({ err: { message: err.message } }, 'manifest reload for announced models failed'),
        );
    }
    for (const { model } of keys.shards()) {
      if (started.has(model) || !catalog.get(model)) continue;
      deps.start(model);
      started.add(model);
      logger.info({ model }, 'shard workers started for a model added since start');
    }
  };
  let running: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    running = check().catch((err: Error) => logger.warn({ err: { message: err.message } }, 'shard check failed'));
  }, deps.everyMs);
  timer.unref();
  return {
    /** one look now (tests) */
    check,
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}
