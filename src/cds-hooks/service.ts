import { z } from 'zod';
import type { PatientRow } from '../fhir/observations.ts';
import { onePatient, readingsRefused } from '../fhir/one-patient.ts';
import { Problem } from '../platform/errors.ts';
import type { KeySpace } from '../platform/keyspace.ts';
import type { Metrics } from '../platform/metrics.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { CatalogModel, ModelCatalog } from '../serving/catalog.ts';
import type { SyncService } from '../sync/service.ts';
import { type Card, noScoreCard, OVERRIDE_REASONS, scoreCard } from './cards.ts';
import { type CdsService, cdsServices, validServiceId } from './discovery.ts';
import { FeedbackStore, reasonCode } from './feedback.ts';
import { gatherRecord } from './fhir-fetch.ts';
import { type CdsClient, type CdsClientsConfig, CdsTokenVerifier } from './jwt.ts';

const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const requestSchema = z.object({
  hook: z.string(),
  hookInstance: z.string().min(1).max(200),
  fhirServer: z.string().max(2048).optional(),
  fhirAuthorization: z.object({ access_token: z.string(), token_type: z.string() }).loose().nullish(),
  context: z.object({ patientId: z.string().regex(FHIR_ID, 'must be a FHIR id') }).loose(),
  prefetch: z.record(z.string(), z.unknown()).nullish(),
});
const feedbackSchema = z.object({
  feedback: z
    .array(
      z
        .object({
          card: z.string().uuid(),
          outcome: z.enum(['accepted', 'overridden']),
          overrideReason: z
            .object({
              reason: z.object({ system: z.string(), code: z.string() }).loose().optional(),
              userComment: z.string().optional(),
            })
            .loose()
            .optional(),
          outcomeTimestamp: z.iso.datetime({ offset: true }),
        })
        .loose(),
    )
    .min(1)
    .max(100),
});

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new Problem('invalid_request', `${issue?.path.join('.') || '(body)'}: ${issue?.message}`);
}

export interface CdsHooksOptions {
  catalog: ModelCatalog;
  sync: SyncService;
  redis: RedisClient;
  keys: KeySpace;
  metrics: Metrics;
  clients?: CdsClientsConfig | undefined;
  fetchTimeoutMs?: number;
  /** told of each card's first feedback (monitoring counts overridden score cards in the version's override rate) */
  onFeedback?: (model: string, version: string, outcome: 'accepted' | 'overridden', reason?: string) => void;
}

/** CDS Hooks 2.0: discovery, a card per call scored on the sync tier through the FHIR mapping, and feedback. */
export class CdsHooksService {
  readonly feedback: FeedbackStore;
  readonly #catalog: ModelCatalog;
  readonly #sync: SyncService;
  readonly #verifier: CdsTokenVerifier | undefined;
  readonly #baseUrl: string | undefined;
  readonly #fetchTimeoutMs: number;
  readonly #onFeedback: CdsHooksOptions['onFeedback'];

  constructor(o: CdsHooksOptions) {
    this.#onFeedback = o.onFeedback;
    this.#catalog = o.catalog;
    this.#sync = o.sync;
    this.feedback = new FeedbackStore(o.redis, o.keys, o.metrics.registry);
    this.#verifier = o.clients ? new CdsTokenVerifier(o.clients.clients, o.redis, o.keys.global) : undefined;
    this.#baseUrl = o.clients?.serviceBaseUrl?.replace(/\/+$/, '');
    this.#fetchTimeoutMs = o.fetchTimeoutMs ?? 3000;
  }

  services(): CdsService[] {
    return cdsServices(this.#catalog.list());
  }

  /** The service and its model: 404 for an id that is not one. */
  resolve(id: string): { service: CdsService; model: CatalogModel } {
    const service = validServiceId(id) ? this.services().find((s) => s.id === id) : undefined;
    const model = service && this.#catalog.get(service.model);
    if (!service || !model) throw new Problem('not_found', 'no such CDS service: GET /cds-services lists them');
    return { service, model };
  }

  /** The EHR's JWT, whose audience is this service's URL (the configured public base, else the request's origin). */
  authenticate(authorization: string | undefined, serviceId: string, requestUrl: string): Promise<CdsClient> {
    if (!this.#verifier) {
      throw new Problem('unauthenticated', 'no CDS clients are registered (TRIAGE_CDS_CLIENTS)', {
        headers: { 'www-authenticate': 'Bearer realm="cds-services"' },
      });
    }
    const base = this.#baseUrl ?? new URL(requestUrl).origin;
    const url = `${base}/cds-services/${serviceId}`;
    return this.#verifier.verify(authorization, [url, `${url}/feedback`]);
  }

  async call(id: string, body: unknown, client: CdsClient, requestId?: string): Promise<{ cards: Card[] }> {
    const { service, model } = this.resolve(id);
    const req = parse(requestSchema, body);
    if (req.hook !== service.hook) throw new Problem('invalid_request', `this service answers ${service.hook}`);
    const { manifest } = model;
    const title = service.title;
    const gathered = await gatherRecord({
      templates: service.prefetch,
      prefetch: req.prefetch,
      patientId: req.context.patientId,
      fhirServer: req.fhirServer,
      fhirAuthorization: req.fhirAuthorization ?? undefined,
      client,
      timeoutMs: this.#fetchTimeoutMs,
    });
    let card: Card;
    let version = model.version;
    let row: PatientRow | undefined;
    const why: string[] = [];
    try {
      const one = onePatient(manifest, gathered.resources, Date.now(), req.context.patientId);
      row = one.row;
      gathered.gaps.push(...one.unread.map((u) => `a resource could not be read (${u})`));
    } catch (err) {
      if (!(err instanceof Problem)) throw err;
      why.push(err.message);
    }
    if (row && !row.values) why.push(row.error ?? 'data missing');
    if (row?.values && manifest.sync) {
      try {
        const result = await this.#sync.predict(model, [row.values], manifest.sync.latencyBudgetMs, {
          subjectKey: row.id,
          // what an outcome reported later names the prediction by (`request:<id>#0`)
          ...(requestId !== undefined ? { requestId } : {}),
        });
        // a silent deployment is scored and recorded, never shown: no card at all, as if the service had nothing
        // to say (a "no score" card on every chart opened would change the clinicians' work the trial must not touch)
        if (result.silent) return { cards: [] };
        version = result.version;
        const prediction = result.predictions[0] as Record<string, unknown>;
        card = scoreCard({ manifest, title, version, row, prediction, gaps: gathered.gaps });
      } catch (err) {
        // any refusal (a reading out of range, capacity, the deadline, a failed run) is a card, never silence
        const named = readingsRefused(err);
        if (!(named instanceof Problem)) throw err;
        why.push(`the model did not score: ${named.message}`);
      }
    }
    card ??= noScoreCard({ manifest, title, version, why: [...why, ...gathered.gaps] });
    const kind = card.overrideReasons ? 'score' : 'no-score';
    await this.feedback.issued([
      { uuid: card.uuid, service: id, model: model.name, version, kind, indicator: card.indicator, client: client.id },
    ]);
    return { cards: [card] };
  }

  /** Records each card's outcome once; a card this service did not give this EHR is 404, and nothing is recorded. */
  async recordFeedback(id: string, body: unknown, client: CdsClient): Promise<{ recorded: number; repeated: number }> {
    this.resolve(id);
    const { feedback } = parse(feedbackSchema, body);
    const cards = await Promise.all(feedback.map((f) => this.feedback.card(f.card)));
    cards.forEach((card, i) => {
      if (!card || card.service !== id || card.client !== client.id)
        throw new Problem('not_found', `feedback[${i}]: no card ${feedback[i]?.card} of this service for this EHR`);
    });
    const offered = OVERRIDE_REASONS.map((r) => r.code);
    let recorded = 0;
    for (const [i, f] of feedback.entries()) {
      const reason = f.outcome === 'overridden' ? reasonCode(f.overrideReason, offered) : undefined;
      const comment = f.overrideReason?.userComment?.slice(0, 2000);
      const card = cards[i] as NonNullable<(typeof cards)[number]>;
      const fresh = await this.feedback.record(card, {
        card: f.card,
        outcome: f.outcome,
        ...(reason ? { reason } : {}),
        ...(comment ? { comment } : {}),
        at: f.outcomeTimestamp,
      });
      if (!fresh) continue;
      recorded++;
      // a no-score card carried no output of the model: there is nothing of the version's to accept or override
      if (card.kind === 'score') this.#onFeedback?.(card.model, card.version, f.outcome, reason);
    }
    return { recorded, repeated: feedback.length - recorded };
  }
}
