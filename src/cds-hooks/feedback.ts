import { Counter, type Registry } from 'prom-client';
import type { KeySpace } from '../platform/keyspace.ts';
import type { RedisClient } from '../platform/redis.ts';
import { OVERRIDE_SYSTEM } from './cards.ts';

/** What a card was, kept so its feedback is counted against the model version that made it. */
export interface IssuedCard {
  service: string;
  model: string;
  version: string;
  kind: 'score' | 'no-score';
  indicator: string;
  client: string;
}

export interface FeedbackEntry {
  card: string;
  outcome: 'accepted' | 'overridden';
  reason?: string;
  comment?: string;
  at: string;
}

/** Per version: accepted and overridden cards, and overrides by reason (`other` for a reason not offered). */
export type FeedbackCounts = Record<
  string,
  { accepted: number; overridden: number; overrideReasons: Record<string, number> }
>;

const CARD_TTL_SECONDS = 7 * 24 * 3600; // feedback comes minutes to days after the card
const FEEDBACK_TTL_SECONDS = 90 * 24 * 3600;

/**
 * Records a card's outcome once and counts it, in one step on the model's shard: KEYS[1] the card's feedback record
 * (set only if absent, with its expiry), KEYS[2] the model's counts; ARGV: the record, its TTL, then the count fields.
 */
const RECORD = `
if not redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX') then return 0 end
for i = 3, #ARGV do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
return 1
`;

/**
 * CDS Hooks feedback, per model version. Redis keys:
 * - `<global>:cds:card:<uuid>`, the issued card (7 days), under the global tag: the EHR's feedback names a card by
 *   its uuid alone, and it is that record that says which model (shard) the card was of;
 * - in the model's shard `{<base>:<model>}:cds:`: `feedback:<uuid>`, the card's one recorded outcome (90 days; the
 *   clinician's comment stays here, never in logs or labels), and `feedback-counts`, a hash `<version>|accepted`,
 *   `<version>|overridden`, `<version>|overridden|<reason code>` (`counts(model)`). Both are written in one script.
 * Feedback recorded before model shards (`<global>:cds:feedback…`) is still honoured: a card answered then is not
 * counted again, and its counts are added to the shard's.
 */
export class FeedbackStore {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;
  readonly #prefix: string;
  readonly #counter: Counter<'model' | 'version' | 'outcome'>;
  readonly cards: Counter<'model' | 'version' | 'indicator'>;

  constructor(redis: RedisClient, keys: KeySpace, registry: Registry) {
    this.#redis = redis;
    this.#keys = keys;
    this.#prefix = `${keys.global}:cds`;
    this.#counter = new Counter({
      name: 'triage_cds_feedback_total',
      help: 'CDS Hooks card feedback by model, version and outcome (accepted, overridden), each card counted once',
      labelNames: ['model', 'version', 'outcome'] as const,
      registers: [registry],
    });
    this.cards = new Counter({
      name: 'triage_cds_cards_total',
      help: 'CDS Hooks cards returned by model, version and indicator (no-score for the standard-protocol card)',
      labelNames: ['model', 'version', 'indicator'] as const,
      registers: [registry],
    });
  }

  async issued(cards: Array<{ uuid: string } & IssuedCard>): Promise<void> {
    if (cards.length === 0) return;
    const multi = this.#redis.multi();
    for (const { uuid, ...card } of cards) {
      multi.set(`${this.#prefix}:card:${uuid}`, JSON.stringify(card), 'EX', CARD_TTL_SECONDS);
      this.cards.inc({
        model: card.model,
        version: card.version,
        indicator: card.kind === 'no-score' ? 'no-score' : card.indicator,
      });
    }
    await multi.exec();
  }

  async card(uuid: string): Promise<IssuedCard | undefined> {
    const raw = await this.#redis.get(`${this.#prefix}:card:${uuid}`);
    return raw ? (JSON.parse(raw) as IssuedCard) : undefined;
  }

  /** Records a card's outcome once (an EHR's retry is not a second clinician); true when it was new. */
  async record(card: IssuedCard, entry: FeedbackEntry): Promise<boolean> {
    if ((await this.#redis.exists(`${this.#prefix}:feedback:${entry.card}`)) === 1) return false; // before shards
    const shard = `${this.#keys.shard(card.model)}:cds`;
    const fields = [`${card.version}|${entry.outcome}`];
    if (entry.outcome === 'overridden') fields.push(`${card.version}|overridden|${entry.reason ?? 'none'}`);
    const fresh = await this.#redis.eval(
      RECORD,
      2,
      `${shard}:feedback:${entry.card}`,
      `${shard}:feedback-counts`,
      JSON.stringify({ ...entry, model: card.model, version: card.version, client: card.client }),
      FEEDBACK_TTL_SECONDS,
      ...fields,
    );
    if (fresh !== 1) return false;
    this.#counter.inc({ model: card.model, version: card.version, outcome: entry.outcome });
    return true;
  }

  async counts(model: string): Promise<FeedbackCounts> {
    const hashes = await Promise.all([
      this.#redis.hgetall(`${this.#prefix}:feedback-counts:${model}`),
      this.#redis.hgetall(`${this.#keys.shard(model)}:cds:feedback-counts`),
    ]);
    const counts: FeedbackCounts = {};
    for (const [field, n] of hashes.flatMap((h) => Object.entries(h))) {
      const [version, outcome, reason] = field.split('|') as [string, 'accepted' | 'overridden', string?];
      const v = counts[version] ?? { accepted: 0, overridden: 0, overrideReasons: {} };
      counts[version] = v;
      if (reason !== undefined) v.overrideReasons[reason] = (v.overrideReasons[reason] ?? 0) + Number(n);
      else v[outcome] += Number(n);
    }
    return counts;
  }
}

/** An override reason as counted: one of the card's own codes, else `other` (a free code would be unbounded). */
export function reasonCode(reason: unknown, offered: readonly string[]): string | undefined {
  const r = (reason as { reason?: { system?: unknown; code?: unknown } } | undefined)?.reason;
  if (!r) return undefined;
  return r.system === OVERRIDE_SYSTEM && typeof r.code === 'string' && offered.includes(r.code) ? r.code : 'other';
}
