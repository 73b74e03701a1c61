import { Hl7Message, Hl7Segment } from '@medplum/core';
import type { Logger } from 'pino';
import { FhirAggregator } from '../../fhir/observations.ts';
import { hl7Ref, requestRef } from '../../outcomes/prediction-log.ts';
import { Problem } from '../../platform/errors.ts';
import type { CatalogModel, ModelCatalog } from '../../serving/catalog.ts';
import { SILENT_ACTION } from '../../serving/refusals.ts';
import type { SyncService } from '../../sync/service.ts';
import { checkHeader, Hl7Refusal, oruResources } from './oru.ts';

export type AckCode = 'AA' | 'AE' | 'AR';
export interface Hl7Answer {
  ack: Hl7Message;
  code: AckCode;
}

/** Text for an HL7 field: the delimiters escaped (\F\ \S\ \T\ \R\ \E\), line breaks flattened. */
function hl7Text(text: string): string {
  return text
    .replace(/\\/g, '\\E\\')
    .replace(/\|/g, '\\F\\')
    .replace(/\^/g, '\\S\\')
    .replace(/&/g, '\\T\\')
    .replace(/~/g, '\\R\\')
    .replace(/[\r\n]+/g, ' ');
}

const TABLE_0357: Record<string, string> = {
  '100': 'Segment sequence error',
  '101': 'Required field missing',
  '102': 'Data type error',
  '103': 'Table value not found',
  '200': 'Unsupported message type',
  '203': 'Unsupported version id',
  '204': 'Unknown key identifier',
  '207': 'Application internal error',
};

/** ERR (v2.5 layout): ERR-3 the table 0357 code, ERR-4 severity, ERR-8 the reason for a person. */
function errSegment(code: string, reason: string): Hl7Segment {
  return Hl7Segment.parse(`ERR|||${code}^${TABLE_0357[code] ?? ''}^HL70357|E||||${hl7Text(reason.slice(0, 500))}`);
}

/** A refusal's reason: an invalid input names each feature and what is wrong with it. */
function problemText(p: Problem): string {
  const errors = p.extensions.errors as Array<{ pointer: string; detail: string }> | undefined;
  return errors?.length ? errors.map((e) => `${e.pointer.split('/').pop()}: ${e.detail}`).join('; ') : p.message;
}

/** An AR for a message that could not even be parsed: there is no MSH to answer to. */
function rejectUnparsed(reason: string): Hl7Message {
  const now = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const msh = `MSH|^~\\&|TRIAGE||||${now}||ACK|${Date.now()}|P|2.5.1`;
  return new Hl7Message([Hl7Segment.parse(msh), Hl7Segment.parse('MSA|AR|'), errSegment('100', reason)]);
}

/** MSH-1 and MSH-2: five distinct printable, non-alphanumeric ASCII characters (`|^~\&` almost always). */
function declaresDelimiters(message: Hl7Message): boolean {
  const c = message.context;
  const all = [
    c.fieldSeparator,
    c.componentSeparator,
    c.repetitionSeparator,
    c.escapeCharacter,
    c.subcomponentSeparator,
  ];
  return all.every((d) => typeof d === 'string' && /^[!-/:-@[-`{-~]$/.test(d)) && new Set(all).size === all.length;
}

/**
 * HL7v2 ORU^R01 in, an ACK out. MSH-5 (receiving application) names the model (one of the models the HL7 door serves;
 * with one, it is the default). The OBX vital signs and the PID go through the manifest's FHIR mapping, the patient's
 * features are scored through the sync tier (admission, deadline, the scorer), and the answer is an ACK: AA with the
 * score in MSA-3, AE with the reason in ERR when the message was taken but cannot be scored (missing or unusable
 * readings, invalid values, no capacity), AR when it cannot be taken (no MSH, not ORU^R01, a version not read, an
 * unknown receiving application). Nothing of the message is logged: the model, the ACK code and the error code only.
 */
export class Hl7Door {
  readonly #catalog: ModelCatalog;
  readonly #sync: SyncService;
  readonly #models: readonly string[];
  readonly #logger: Logger;
  readonly #now: () => number;

  constructor(o: {
    catalog: ModelCatalog;
    sync: SyncService;
    models: readonly string[];
    logger: Logger;
    now?: () => number;
  }) {
    this.#catalog = o.catalog;
    this.#sync = o.sync;
    this.#models = o.models;
    this.#logger = o.logger;
    this.#now = o.now ?? Date.now;
  }

  /**
   * Answers one message, given as text (HTTP) or as parsed by the MLLP framing. Never throws. The prediction is
   * logged for outcomes under the message's control id within its sender (MSH-10, MSH-3, MSH-4: what every sender
   * keeps and the ACK echoes) and, over HTTP, under the request id too (`requestId`, the X-Request-Id answered), as on
   * the other doors; both name the one prediction. `owner`: the calling client over HTTP (MLLP has none), the one
   * client that may report the outcome.
   */
  async handle(
    input: string | Hl7Message,
    mayUse: (model: string) => boolean = () => true,
    requestId?: string,
    owner?: string,
  ): Promise<Hl7Answer> {
    let message: Hl7Message;
    try {
      message = typeof input === 'string' ? Hl7Message.parse(input.replace(/^\uFEFF/, '').trim()) : input;
    } catch {
      return this.#answer({ ack: rejectUnparsed('the message does not start with an MSH segment'), code: 'AR' }, '100');
    }
    // an ACK is built with the message's own delimiters: a header that declares none (a bare `MSH`) or control
    // characters would be answered with an ACK no one can read
    if (!declaresDelimiters(message)) {
      return this.#answer(
        { ack: rejectUnparsed('MSH-1 and MSH-2 do not declare five distinct printable delimiters'), code: 'AR' },
        '100',
      );
    }
    let model: CatalogModel | undefined;
    try {
      const header = checkHeader(message);
      model = this.#model(header.receivingApp, mayUse);
      const byMessage = hl7Ref(header);
      const ref = requestId ? [requestRef(requestId, 0), byMessage] : byMessage;
      const summary = await this.#score(model, message, ref, owner);
      const ack = message.buildAck({ ackCode: 'AA' });
      ack.getSegment('MSA')?.setField(3, hl7Text(summary));
      return this.#answer({ ack, code: 'AA' }, undefined, model);
    } catch (err) {
      const refusal =
        err instanceof Hl7Refusal
          ? err
          : err instanceof Problem
            ? new Hl7Refusal('AE', err.status === 400 ? '102' : '207', `no score: ${problemText(err)}`)
            : new Hl7Refusal('AE', '207', 'no score: the message could not be processed');
      if (!(err instanceof Hl7Refusal || err instanceof Problem)) {
        this.#logger.error({ err: { name: (err as Error).name } }, 'hl7 message failed');
      }
      const ack = message.buildAck({ ackCode: refusal.ack, errSegment: errSegment(refusal.code, refusal.message) });
      return this.#answer({ ack, code: refusal.ack }, refusal.code, model);
    }
  }

  #answer(a: Hl7Answer, error: string | undefined, model?: CatalogModel): Hl7Answer {
    this.#logger.info({ model: model?.name, version: model?.version, ack: a.code, error }, 'hl7 message');
    return a;
  }

  #model(receivingApp: string, mayUse: (model: string) => boolean): CatalogModel {
    const name =
      this.#models.find((m) => m.toLowerCase() === receivingApp.toLowerCase()) ??
      (this.#models.length === 1 ? this.#models[0] : undefined);
    const model = name && mayUse(name) ? this.#catalog.get(name) : undefined;
    if (!model) throw new Hl7Refusal('AR', '204', 'MSH-5 (receiving application) names no model this door serves');
    if (model.tier !== 'sync' || model.manifest.input !== 'features') {
      throw new Hl7Refusal('AR', '204', `"${model.name}" is not a bedside (sync) feature model`);
    }
    return model;
  }

  async #score(
    model: CatalogModel,
    message: Hl7Message,
    ref: string | readonly string[],
    owner: string | undefined,
  ): Promise<string> {
    const { manifest } = model;
    const { patientId, resources, notes } = oruResources(message);
    const asOf = this.#now();
    const aggregate = new FhirAggregator(manifest.features, {
      asOf,
      lookbackHours: manifest.batch?.lookbackHours ?? 72,
    });
    const problems = [...notes];
    for (const r of resources) {
      const problem = aggregate.add(r);
      if (problem) problems.push(problem);
    }
    const rows = [...aggregate.rows()];
    const row = rows.find((r) => r.id === `Patient/${patientId}`) ?? rows[0];
    if (!row || row.error || !row.values) {
      const why = (row?.error ?? 'no data').replace(/^Patient\/\S+:?\s*/, '');
      throw new Hl7Refusal('AE', '101', [why, ...problems].join('; '));
    }
    const sync = manifest.sync as NonNullable<typeof manifest.sync>;
    // what an outcome reported later names the prediction by
    const result = await this.#sync.predict(model, [row.values], sync.latencyBudgetMs, {
      refs: [ref],
      ...(owner !== undefined ? { owner } : {}),
    });
    if (result.silent)
      return `${manifest.name} v${result.version} (${manifest.owner.team}): ${SILENT_ACTION}`.slice(0, 300);
    const prediction = result.predictions[0] as Record<string, unknown>;
    const parts = Object.entries(prediction)
      .filter(([, v]) => ['number', 'string', 'boolean'].includes(typeof v))
      .map(([k, v]) => `${k}=${typeof v === 'number' ? Number(v.toFixed(4)) : v}`);
    const assumed = row.assumed?.length ? `; assumed ${row.assumed.map((a) => a.feature).join(', ')}` : '';
    return `${manifest.name} v${result.version} (${manifest.owner.team}): ${parts.join(', ')}${assumed}`.slice(0, 300);
  }
}
