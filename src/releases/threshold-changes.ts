import { randomUUID } from 'node:crypto';
import type { AuditLog } from '../platform/audit.ts';
import { mayUseModel, type Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { CatalogModel, ModelCatalog } from '../serving/catalog.ts';

export type ChangeState = 'proposed' | 'approved' | 'rejected';

/** A threshold change request: proposed by one person with the evidence, decided by another. */
export interface ThresholdChange {
  id: string;
  model: string;
  from: number;
  to: number;
  reason: string;
  evidenceUrl: string;
  proposedBy: string;
  proposedAt: string;
  state: ChangeState;
  decidedBy?: string;
  decidedAt?: string;
  decisionReason?: string;
}

/** Decides a request once: only from `proposed`, in one atomic step (two approvers at once: one wins). */
const DECIDE = `
if redis.call('HGET', KEYS[1], 'state') ~= 'proposed' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
`;

const ID = /^[0-9a-f-]{36}$/;

/**
 * Governed threshold changes (two people): a change request is proposed with a reason and a link to its evidence,
 * and approved or rejected by someone else holding the approver role. An approval applies the threshold through
 * the catalog (every replica and worker within a second) and is audited with the before and after. A manifest
 * reload that would change a threshold in force needs the latest approved request of that model to say so.
 *
 * Kept under the global tag, not in the model's shard: a request is release state like the routing and thresholds
 * it changes (which are global), it is found by its id alone (`GET /v1/threshold-changes/{id}`, ids already handed
 * out), and it is written a few times a year, so it adds nothing a primary would notice.
 */
export class ThresholdChanges {
  readonly #redis: RedisClient;
  readonly #prefix: string;
  readonly #catalog: ModelCatalog;
  readonly #audit: AuditLog;
  readonly #now: () => number;

  constructor(o: { redis: RedisClient; prefix: string; catalog: ModelCatalog; audit: AuditLog; now?: () => number }) {
    this.#redis = o.redis;
    this.#prefix = o.prefix;
    this.#catalog = o.catalog;
    this.#audit = o.audit;
    this.#now = o.now ?? Date.now;
  }

  #key(id: string): string {
    return `${this.#prefix}:threshold-change:${id}`;
  }

  #index(model: string): string {
    return `${this.#prefix}:threshold-changes:${model}`;
  }

  async propose(principal: Principal, model: CatalogModel, body: Record<string, unknown>): Promise<ThresholdChange> {
    const { threshold, reason, evidenceUrl } = body;
    const from = model.manifest.output.threshold;
    if (typeof threshold !== 'number' || !Number.isFinite(threshold)) {
      throw new Problem('invalid_request', 'threshold must be a number');
    }
    const out = model.manifest.output;
    const [lo, hi] = out.kind === 'score' ? [out.min ?? -Infinity, out.max ?? Infinity] : [0, 1];
    if (threshold < lo || threshold > hi) throw new Problem('invalid_request', `threshold must be within ${lo}..${hi}`);
    if (threshold === from) throw new Problem('invalid_request', `the threshold is already ${from}`);
    if (typeof reason !== 'string' || reason.trim() === '' || reason.length > 2000) {
      throw new Problem('invalid_request', 'reason is required (1-2000 characters)');
    }
    if (typeof evidenceUrl !== 'string' || !URL.canParse(evidenceUrl) || !/^https?:/.test(evidenceUrl)) {
      throw new Problem('invalid_request', 'evidenceUrl must be an http(s) link to the evidence for the change');
    }
    const now = this.#now();
    const change: ThresholdChange = {
      id: randomUUID(),
      model: model.name,
      from,
      to: threshold,
      reason,
      evidenceUrl,
      proposedBy: principal.id,
      proposedAt: new Date(now).toISOString(),
      state: 'proposed',
    };
    await this.#redis
      .multi()
      .hset(this.#key(change.id), flatten(change))
      .zadd(this.#index(model.name), now, change.id)
      .exec();
    await this.#audit.append({
      actor: principal.id,
      role: principal.role,
      action: 'threshold.propose',
      target: change.id,
      model: model.name,
      reason,
      detail: `threshold ${from} → ${threshold}; evidence ${evidenceUrl}`,
    });
    return change;
  }

  /** A request the caller may see: one for a model outside its `models` is a 404, like an unknown id. */
  async get(principal: Principal, id: string): Promise<ThresholdChange> {
    const raw = ID.test(id) ? await this.#redis.hgetall(this.#key(id)) : {};
    if (!raw.id || !mayUseModel(principal, raw.model as string)) {
      throw new Problem('not_found', 'no such threshold change request');
    }
    return parse(raw);
  }

  /** A model's requests, newest first. */
  async list(model: string, limit = 100): Promise<ThresholdChange[]> {
    const ids = await this.#redis.zrevrange(this.#index(model), 0, limit - 1);
    const all = await Promise.all(ids.map((id) => this.#redis.hgetall(this.#key(id))));
    return all.filter((r) => r.id).map(parse);
  }

  async approve(principal: Principal, id: string, reason: unknown): Promise<ThresholdChange> {
    const change = await this.#decidable(principal, id, reason);
    const model = await this.#catalog.fresh(change.model);
    if (!model) throw new Problem('invalid_state', `model "${change.model}" is no longer served`);
    if (model.manifest.output.threshold !== change.from) {
      throw new Problem(
        'invalid_state',
        `the threshold in force is ${model.manifest.output.threshold}, not ${change.from} as proposed: propose again`,
      );
    }
    const decided = await this.#decide(principal, change, 'approved', reason as string);
    await this.#catalog.setThreshold(model.name, {
      threshold: change.to,
      basedOn: model.loaded.manifest.output.threshold,
      requestId: change.id,
      proposedBy: change.proposedBy,
      approvedBy: principal.id,
      at: decided.decidedAt as string,
    });
    return decided;
  }

  async reject(principal: Principal, id: string, reason: unknown): Promise<ThresholdChange> {
    return this.#decide(principal, await this.#decidable(principal, id, reason), 'rejected', reason as string);
  }

  async #decidable(principal: Principal, id: string, reason: unknown): Promise<ThresholdChange> {
    if (typeof reason !== 'string' || reason.trim() === '' || reason.length > 2000) {
      throw new Problem('invalid_request', 'reason is required (1-2000 characters)');
    }
    const change = await this.get(principal, id);
    if (change.state !== 'proposed') throw new Problem('already_decided', `this request was already ${change.state}`);
    if (change.proposedBy === principal.id) {
      throw new Problem('forbidden', 'two people: whoever proposed a threshold change cannot decide it');
    }
    return change;
  }

  async #decide(p: Principal, change: ThresholdChange, state: ChangeState, reason: string): Promise<ThresholdChange> {
    const decidedAt = new Date(this.#now()).toISOString();
    const fields = { state, decidedBy: p.id, decidedAt, decisionReason: reason };
    const ok = await this.#redis.eval(DECIDE, 1, this.#key(change.id), ...Object.entries(fields).flat());
    if (ok !== 1) throw new Problem('already_decided', 'this request was already decided');
    await this.#audit.append({
      actor: p.id,
      role: p.role,
      action: state === 'approved' ? 'threshold.approve' : 'threshold.reject',
      target: change.id,
      model: change.model,
      reason,
      detail: `threshold ${change.from} → ${change.to}${state === 'approved' ? ' applied' : ' not applied'}; proposed by ${change.proposedBy}; evidence ${change.evidenceUrl}`,
    });
    return { ...change, ...fields };
  }

  /**
   * Refuses a reload that changes a threshold in force (the model's, or a served version's approved one) unless
   * the model's latest approved request is for that threshold. Returns what it refused, for the audit trail.
   */
  async ungoverned(current: readonly CatalogModel[], next: readonly CatalogModel[]): Promise<string[]> {
    const refused: string[] = [];
    for (const n of next) {
      const c = current.find((m) => m.name === n.name);
      if (!c) continue; // a new model: its release evidence is checked at load
      const changed = new Map<string, [number, number]>();
      if (n.manifest.output.threshold !== c.manifest.output.threshold) {
        changed.set('output.threshold', [c.manifest.output.threshold, n.manifest.output.threshold]);
      }
      for (const v of n.manifest.versions) {
        const before = c.manifest.versions.find((x) => x.version === v.version)?.evidence?.approvedThreshold;
        const after = v.evidence?.approvedThreshold;
        if (before !== undefined && after !== undefined && before !== after) {
          changed.set(`versions[${v.version}].evidence.approvedThreshold`, [before, after]);
        }
      }
      if (changed.size === 0) continue;
      const approved = (await this.list(n.name)).find((r) => r.state === 'approved');
      for (const [field, [before, after]] of changed) {
        if (approved?.to !== after) refused.push(`${n.name} ${field} ${before} → ${after}: no approved change request`);
      }
    }
    return refused;
  }
}

function flatten(change: ThresholdChange): Record<string, string> {
  return Object.fromEntries(Object.entries(change).map(([k, v]) => [k, String(v)]));
}

function parse(raw: Record<string, string>): ThresholdChange {
  return { ...(raw as unknown as ThresholdChange), from: Number(raw.from), to: Number(raw.to) };
}
