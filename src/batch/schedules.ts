import { CronExpressionParser } from 'cron-parser';
import type { AuditLog } from '../platform/audit.ts';
import { Problem } from '../platform/errors.ts';
import type { RedisClient } from '../platform/redis.ts';
import { type Schedule, scheduleSchema } from '../registry/schema.ts';

/**
 * Fires a schedule's slots (the batch queue module implements it with BullMQ job schedulers on the schedule's model
 * shard queue).
 */
export interface Scheduler {
  upsert(schedule: Schedule & { model: string }): Promise<void>;
  exists(id: string, model: string): Promise<boolean>;
  remove(id: string, model: string): Promise<void>;
}

export interface StoredSchedule extends Schedule {
  model: string;
  source: 'manifest' | 'api';
  updatedAt: string;
  updatedBy: string;
}

/** Checks a cron pattern and time zone the way BullMQ will read them; a 400 Problem otherwise. */
export function validateCron(cron: string, timezone: string): void {
  try {
    new Intl.DateTimeFormat('en', { timeZone: timezone });
  } catch {
    throw new Problem('invalid_request', `unknown time zone "${timezone}"`);
  }
  try {
    CronExpressionParser.parse(cron, { tz: timezone }).next();
  } catch (err) {
    throw new Problem('invalid_request', `cron: ${(err as Error).message.slice(0, 200)}`);
  }
}

/**
 * Batch schedules: their definitions in Redis and a BullMQ job scheduler each. Upserting is idempotent, so every
 * replica can upsert the manifests' schedules at start without duplicating or dropping one, and BullMQ fires each slot
 * once however many workers listen. The job scheduler lives on the schedule's model shard; the definitions stay in
 * one hash under the global tag: a schedule is named by its id alone (`/v1/schedules/{id}`, whose body may move it to
 * another model), they are few and written only by admins and at start, and a slot reads one field of it.
 */
export class ScheduleService {
  readonly #redis: RedisClient;
  readonly #key: string;
  readonly #scheduler: Scheduler;
  readonly #audit: AuditLog;

  constructor(redis: RedisClient, prefix: string, scheduler: Scheduler, audit: AuditLog) {
    this.#redis = redis;
    this.#key = `${prefix}:schedules`;
    this.#scheduler = scheduler;
    this.#audit = audit;
  }

  async list(): Promise<StoredSchedule[]> {
    const all = await this.#redis.hgetall(this.#key);
    return Object.values(all)
      .map((v) => JSON.parse(v) as StoredSchedule)
      .sort((a, b) => a.id.localeCompare(b.id));
  }

  async get(id: string): Promise<StoredSchedule | undefined> {
    const raw = await this.#redis.hget(this.#key, id);
    return raw ? (JSON.parse(raw) as StoredSchedule) : undefined;
  }

  async put(
    model: string,
    definition: unknown,
    actor: { id: string; role: string },
    source: StoredSchedule['source'],
  ): Promise<{ schedule: StoredSchedule; created: boolean }> {
    const parsed = scheduleSchema.safeParse(definition);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Problem('invalid_request', `${issue?.path.join('.') || 'schedule'}: ${issue?.message}`);
    }
    const s = parsed.data;
    validateCron(s.cron, s.timezone);
    const schedule: StoredSchedule = {
      ...s,
      model,
      source,
      updatedAt: new Date().toISOString(),
      updatedBy: actor.id,
    };
    const previous = await this.get(s.id);
    const unchanged =
      previous &&
      JSON.stringify({ ...previous, updatedAt: '', updatedBy: '' }) ===
        JSON.stringify({ ...schedule, updatedAt: '', updatedBy: '' });
    // unchanged, and its job scheduler is there (a crash between the two writes below must not drop it for good)
    if (unchanged && (await this.#scheduler.exists(s.id, model))) return { schedule: previous, created: false };
    await this.#redis.hset(this.#key, s.id, JSON.stringify(schedule));
    // moved to another model: its slots now fire on that model's shard, never on both
    if (previous && previous.model !== model) await this.#scheduler.remove(s.id, previous.model);
    await this.#scheduler.upsert(schedule);
    await this.#audit.append({
      actor: actor.id,
      role: actor.role,
      action: previous ? 'schedule.update' : 'schedule.create',
      target: s.id,
      model,
      detail: `${s.cron} ${s.timezone} ${'path' in s.input ? `${s.input.format}:${s.input.path}` : `fhir-export:${s.input.fhirServer}`} missed=${s.missed}`,
    });
    return { schedule, created: !previous };
  }

  /**
   * Puts back a stored schedule's job scheduler when it is missing: lost to a crash between put's two writes, or a
   * schedule from before shards, whose scheduler was on the global batch queue. True when it was missing.
   */
  async restore(schedule: StoredSchedule): Promise<boolean> {
    if (await this.#scheduler.exists(schedule.id, schedule.model)) return false;
    await this.#scheduler.upsert(schedule);
    return true;
  }

  async remove(id: string, actor: { id: string; role: string }): Promise<boolean> {
    const previous = await this.get(id);
    if (!previous) return false;
    await this.#scheduler.remove(id, previous.model);
    await this.#redis.hdel(this.#key, id);
    await this.#audit.append({
      actor: actor.id,
      role: actor.role,
      action: 'schedule.delete',
      target: id,
      model: previous.model,
    });
    return true;
  }
}

/**
 * Makes Redis match the manifests: upserts every manifest schedule and removes manifest-sourced ones no manifest
 * declares any more; schedules created through the API are kept, their job schedulers put back if missing.
 */
export async function syncManifestSchedules(
  service: ScheduleService,
  manifests: ReadonlyArray<{ name: string; schedules?: Schedule[] | undefined }>,
): Promise<void> {
  const system = { id: 'system', role: 'system' };
  const declared = new Set<string>();
  for (const m of manifests) {
    for (const s of m.schedules ?? []) {
      declared.add(s.id);
      await service.put(m.name, s, system, 'manifest');
    }
  }
  for (const s of await service.list()) {
    if (s.source === 'manifest' && !declared.has(s.id)) await service.remove(s.id, system);
    else if (s.source === 'api') await service.restore(s);
  }
}
