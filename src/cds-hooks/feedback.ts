import { Counter, type Registry } from 'prom-client';
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
 * CDS Hooks feedback, per model version. Redis keys (prefix `<p>:cds:`): `card:<uuid>` the issued card (7 days),
 * `feedback:<uuid>` its one recorded outcome (90 days; the clinician's comment stays here, never in logs or labels),
 * and `feedback-counts:<model>`, a hash `<version>|accepted`, `<version>|overridden`,
 * `<version>|overridden|<reason code>`: what a monitoring report per version reads (`counts(model)`).
 */
export class FeedbackStore {
  readonly #redis: RedisClient;
  readonly #prefix: string;
  readonly #counter: Counter<'model' | 'version' | 'outcome'>;
  readonly cards: Counter<'model' | 'version' | 'indicator'>;

  constructor(redis: RedisClient, prefix: string, registry: Registry) {
    this.#redis = redis;
    this.#prefix = `${prefix}:cds`;
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
    const fresh = await this.#redis.set(
      `${this.#prefix}:feedback:${entry.card}`,
      JSON.stringify({ ...entry, model: card.model, version: card.version, client: card.client }),
      'EX',
      FEEDBACK_TTL_SECONDS,
      'NX',
    );
    if (fresh !== 'OK') return false;
    const key = `${this.#prefix}:feedback-counts:${card.model}`;
    const multi = this.#redis.multi().hincrby(key, `${card.version}|${entry.outcome}`, 1);
    if (entry.outcome === 'overridden') multi.hincrby(key, `${card.version}|overridden|${entry.reason ?? 'none'}`, 1);
    await multi.exec();
    this.#counter.inc({ model: card.model, version: card.version, outcome: entry.outcome });
    return true;
  }

  async counts(model: string): Promise<FeedbackCounts> {
    const raw = await this.#redis.hgetall(`${this.#prefix}:feedback-counts:${model}`);
    const counts: FeedbackCounts = {};
    for (const [field, n] of Object.entries(raw)) {
      const [version, outcome, reason] = field.split('|') as [string, 'accepted' | 'overridden', string?];
      const v = counts[version] ?? { accepted: 0, overridden: 0, overrideReasons: {} };
      counts[version] = v;
      if (reason !== undefined) v.overrideReasons[reason] = Number(n);
      else v[outcome] = Number(n);
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
