import { type BulkExports, isExportInput } from '../ingress/bulk-export.ts';
import type { AuditLog } from '../platform/audit.ts';
import type { Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import { batchFormats } from '../registry/schema.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { signedManifest } from './bucket-outputs.ts';
import { Buckets, isObjectUrl, withBuckets } from './buckets.ts';
import { inClientArea, mayReadRun } from './data-areas.ts';
import type { bulkManifest } from './manifest.ts';
import type { RunHold } from './review-store.ts';
import type { BatchFormat, BatchRun, RunStore } from './runs.ts';
import { type BatchStorage, type LocalStorage, StorageError } from './storage.ts';

/** Refuses an input whose first line does not look like its declared format (a CSV sent as NDJSON, …). */
export async function sniffFormat(storage: BatchStorage, path: string, format: BatchFormat): Promise<void> {
  const stream = await storage.openRead(path);
  let head = '';
  for await (const chunk of stream) {
    head += chunk.toString();
    if (head.length >= 4096 || head.includes('\n')) break;
  }
  stream.destroy();
  const first =
    head
      .split('\n')
      .find((l) => l.trim() !== '')
      ?.trim() ?? '';
  if (first === '') throw new Problem('invalid_input_file', 'the input file is empty');
  const looksJson = first.startsWith('{');
  if (format === 'csv' && looksJson)
    throw new Problem('invalid_input_file', 'format is csv but the file holds JSON lines');
  if (format !== 'csv' && !looksJson)
    throw new Problem('invalid_input_file', `format is ${format} but the first line is not a JSON object`);
  if (format === 'fhir-ndjson' && !/"resourceType"\s*:/.test(first)) {
    throw new Problem('invalid_input_file', 'format is fhir-ndjson but the first line is not a FHIR resource');
  }
}

export function storageProblem(err: unknown): never {
  if (err instanceof StorageError) {
    // the same answer for missing and forbidden: a 404 must not reveal what exists outside the caller's areas
    if (err.reason === 'outside' || err.reason === 'not_found')
      throw new Problem('not_found', 'no such input file in your data area');
    throw new Problem('invalid_input_file', 'input.path cannot be read');
  }
  throw err;
}

/** Where accepted runs wait for the batch worker (the batch queue module implements it). */
export interface RunQueue {
  /** queues a run on its model's shard */
  enqueue(runId: string, model: string): Promise<void>;
  /** withdraws a run no worker has taken yet */
  remove(runId: string, model: string): Promise<void>;
}

/** On-demand batch runs: validated, recorded, queued; visible to their requester and admins. */
export class BatchService {
  readonly #runs: RunStore;
  readonly #queue: RunQueue;
  readonly #storage: LocalStorage;
  readonly #audit: AuditLog;
  readonly #exports: BulkExports | undefined;
  readonly #buckets: Buckets;
  /** the data directory, and object URLs read from their buckets */
  readonly #inputs: BatchStorage;
  readonly #signedUrlSeconds: number;

  constructor(
    runs: RunStore,
    queue: RunQueue,
    storage: LocalStorage,
    audit: AuditLog,
    exports?: BulkExports,
    buckets: Buckets = Buckets.from(undefined),
    signedUrlSeconds = 3600,
  ) {
    this.#runs = runs;
    this.#queue = queue;
    this.#storage = storage;
    this.#audit = audit;
    this.#exports = exports;
    this.#buckets = buckets;
    this.#inputs = withBuckets(storage, buckets);
    this.#signedUrlSeconds = signedUrlSeconds;
  }

  get storage(): LocalStorage {
    return this.#storage;
  }

  /** Checks an input reference: a safe path in the data directory, readable, of the declared format. */
  async checkInput(input: unknown): Promise<{ path: string; format: BatchFormat }> {
    if (isExportInput(input) && this.#exports) return this.#exports.checkScheduleInput(input);
    const i = input as { path?: unknown; format?: unknown } | null;
    if (typeof i !== 'object' || i === null || Array.isArray(i))
      throw new Problem('invalid_request', 'input must be {"path", "format"}');
    if (typeof i.path !== 'string' || i.path.length === 0 || i.path.length > 1024)
      throw new Problem('invalid_request', 'input.path must be a relative path');
    if (typeof i.format !== 'string' || !(batchFormats as readonly string[]).includes(i.format)) {
      throw new Problem('invalid_request', `input.format must be one of ${batchFormats.join(', ')}`);
    }
    const format = i.format as BatchFormat;
    // an object URL: in a configured bucket, a safe key (a client's own areas are checked in submit)
    try {
      if (isObjectUrl(i.path)) this.#buckets.locate(i.path);
    } catch (err) {
      storageProblem(err);
    }
    await this.#inputs.size(i.path).catch(storageProblem);
    await sniffFormat(this.#inputs, i.path, format).catch((err) =>
      err instanceof Problem ? Promise.reject(err) : storageProblem(err),
    );
    return { path: i.path, format };
  }

  async submit(
    principal: Principal,
    model: CatalogModel,
    body: { input?: unknown; asOf?: unknown; output?: unknown },
  ): Promise<BatchRun> {
    if (model.manifest.input !== 'features') {
      throw new Problem(
        'wrong_tier',
        `"${model.manifest.name}" takes documents: use /v1/models/${model.manifest.name}/jobs`,
      );
    }
    // a FHIR server's export instead of a file (src/ingress/): checked against the configured servers
    const fromServer =
      isExportInput(body.input) && this.#exports ? this.#exports.checkRequest(principal, body.input) : undefined;
    const input = fromServer?.input ?? (await this.checkInput(this.#inClientAreas(principal, body.input)));
    const output = this.#outputFor(principal, body.output);
    let asOf = Date.now();
    if (body.asOf !== undefined) {
      if (
        typeof body.asOf !== 'string' ||
        Number.isNaN(Date.parse(body.asOf)) ||
        !/^\d{4}-\d{2}-\d{2}T/.test(body.asOf)
      ) {
        throw new Problem('invalid_request', 'asOf must be an ISO 8601 date-time');
      }
      asOf = Date.parse(body.asOf);
    }
    const id = this.#runs.newId(model.manifest.name);
    await this.#runs.create({
      id,
      model: model.manifest.name,
      version: model.version,
      requestedBy: `api:${principal.id}`,
      input,
      ...(fromServer ? { source: fromServer.source } : {}),
      ...(output ? { output } : {}),
      asOf,
      state: 'queued',
      createdAt: Date.now(),
    });
    await this.#queue.enqueue(id, model.manifest.name);
    await this.#audit.appendFor(model.manifest.name, {
      actor: principal.id,
      role: principal.role,
      action: 'batch.submit',
      target: id,
      model: model.manifest.name,
      version: model.version,
      detail: `${input.format}:${input.path}`,
    });
    return (await this.#runs.get(id)) as BatchRun;
  }

  /** A file path moved into the caller's area; an object URL checked against the caller's buckets and prefixes. */
  #inClientAreas(principal: Principal, input: unknown): unknown {
    const path = (input as { path?: unknown } | null)?.path;
    if (!isObjectUrl(path)) return inClientArea(principal, input);
    try {
      this.#buckets.forClient(principal, path, 'input');
    } catch (err) {
      storageProblem(err);
    }
    return input;
  }

  /** Where a run's files are published besides its own folder: a prefix in one of the caller's bucket areas. */
  #outputFor(principal: Principal, output: unknown): string | undefined {
    if (output === undefined) return undefined;
    if (!isObjectUrl(output)) throw new Problem('invalid_request', 'output must be an s3:// or gs:// URL');
    const prefix = output.replace(/\/+$/, '');
    try {
      return this.#buckets.forClient(principal, prefix, 'output');
    } catch (err) {
      if (err instanceof StorageError) throw new Problem('not_found', 'no such output location in your areas');
      throw err;
    }
  }

  /** The completion manifest, with a bucket run's files as signed URLs (once the bucket holds them). */
  manifestFor(run: BatchRun, hold: RunHold | undefined, manifest: ReturnType<typeof bulkManifest>) {
    return signedManifest(run, hold, manifest, this.#buckets, this.#signedUrlSeconds);
  }

  /** A run its caller may see (see mayReadRun); 404 otherwise, as for a run that does not exist. */
  async visible(principal: Principal, id: string): Promise<BatchRun> {
    const run = /^[A-Za-z0-9-]{1,140}$/.test(id) ? await this.#runs.get(id) : undefined;
    if (!run || !mayReadRun(principal, run)) throw new Problem('not_found', 'no such batch run');
    return run;
  }

  /** Only the requester of an on-demand run, or an admin, may cancel it (a scheduled run: admins only). */
  async cancel(principal: Principal, id: string): Promise<BatchRun> {
    const run = await this.visible(principal, id);
    if (principal.role !== 'admin' && run.requestedBy !== `api:${principal.id}`) {
      throw new Problem('forbidden', 'only its requester or an admin may cancel this run');
    }
    const moved = await this.#runs.transition(id, ['queued', 'running'], 'cancelled', { finishedAt: Date.now() });
    if (!moved) throw new Problem('invalid_state', `the run is ${run.state} and can no longer be cancelled`);
    await this.#queue.remove(id, run.model);
    await this.#audit.appendFor(run.model, {
      actor: principal.id,
      role: principal.role,
      action: 'batch.cancel',
      target: id,
      model: run.model,
    });
    return (await this.#runs.get(id)) as BatchRun;
  }
}
