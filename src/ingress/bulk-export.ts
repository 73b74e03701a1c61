import { lstat, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BatchRun, RunStore } from '../batch/runs.ts';
import type { LocalStorage } from '../batch/storage.ts';
import type { Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import type { RedisClient } from '../platform/redis.ts';
import { BulkClient, kickoffUrl } from './bulk-client.ts';
import {
  EXPORT_PATH_PREFIX,
  type ExportInput,
  type ExportSource,
  exportInputSchema,
  isExportPath,
} from './export-request.ts';
import { type FhirServer, parseFhirServers } from './fhir-servers.ts';
import { IngressError, TokenSource } from './smart-token.ts';

/** Where exports are staged: in the data directory, outside every client's area and every run's folder. */
const STAGING_DIR = 'ingress';
const READ_TYPES = new Set(['Patient', 'Observation']);
const FLUSH_BYTES = 1024 * 1024;

/** Removes a staging folder, never through a link: the staging root must be a real directory (rm would follow it). */
async function removeStaging(storage: LocalStorage, dir: string): Promise<void> {
  const root = await lstat(storage.resolve(STAGING_DIR)).catch(() => undefined);
  if (!root) return;
  if (!root.isDirectory()) throw new IngressError('configuration', 'the staging folder is not a directory', true);
  await rm(storage.resolve(dir), { recursive: true, force: true });
}

/** A run input and its export source, from a request body's or a schedule's `input` naming a FHIR server. */
export function exportRunInput(request: ExportInput): { input: BatchRun['input']; source: ExportSource } {
  return {
    input: { path: `${EXPORT_PATH_PREFIX}${request.fhirServer}`, format: 'fhir-ndjson' },
    source: { kind: 'fhir-bulk-export', request, state: 'requested' },
  };
}

export const isExportInput = (input: unknown): boolean =>
  typeof input === 'object' && input !== null && 'fhirServer' in input;

/**
 * Batch runs fed by FHIR Bulk Data exports. Before a run scores, its export is kicked off, polled (honouring
 * Retry-After, X-Progress shown on the run), and its Patient and Observation files streamed into a staging folder in
 * the data directory, a buffer at a time. The staged files are what the run reads, so a run resumed after a crash
 * reads the same rows again even when the server's file URLs have expired; the folder is removed when the run ends.
 * A crash while the export runs resumes polling the same status URL rather than asking for a second export.
 */
export class BulkExports {
  readonly #servers: Map<string, FhirServer>;
  readonly #clients = new Map<string, BulkClient>();
  readonly #redis: RedisClient;
  readonly #prefix: string;
  readonly #now: () => number;

  /** TRIAGE_FHIR_SERVERS parsed; a ConfigError names what is wrong */
  static servers = parseFhirServers;

  constructor(servers: Map<string, FhirServer>, redis: RedisClient, prefix: string, now: () => number = Date.now) {
    this.#servers = servers;
    this.#redis = redis;
    this.#prefix = prefix;
    this.#now = now;
  }

  #runKey(id: string) {
    return `${this.#prefix}:ingress:export:${id}`;
  }
  #sinceKey(scheduleId: string) {
    return `${this.#prefix}:ingress:since:${scheduleId}`;
  }

  /** One client (and one token cache) per server, shared by every run of this process: tokens are reused. */
  #client(id: string): BulkClient {
    let c = this.#clients.get(id);
    if (!c) {
      const server = this.#servers.get(id);
      if (!server) throw new IngressError('configuration', `no FHIR server "${id}" is configured`, true);
      c = new BulkClient(server, new TokenSource(server, this.#now));
      this.#clients.set(id, c);
    }
    return c;
  }

  /** An on-demand request's export input, checked: a configured server this client may use. 400/404 otherwise. */
  checkRequest(principal: Principal, raw: unknown): { input: BatchRun['input']; source: ExportSource } {
    const parsed = exportInputSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Problem('invalid_request', `input.${issue?.path.join('.') || 'fhirServer'}: ${issue?.message}`);
    }
    const server = this.#servers.get(parsed.data.fhirServer);
    // an unknown server and one this client may not use get the same answer
    if (!server || (principal.role !== 'admin' && !server.clients.includes(principal.id))) {
      throw new Problem('not_found', 'no such FHIR server for this client');
    }
    if (parsed.data.since === 'last-success') {
      throw new Problem('invalid_request', 'input.since: "last-success" is for schedules; give an instant');
    }
    return exportRunInput(parsed.data);
  }

  /** A schedule's (an admin's) export input: any configured server, `since: last-success` allowed. */
  checkScheduleInput(raw: unknown): BatchRun['input'] {
    const parsed = exportInputSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Problem('invalid_request', `input.${issue?.path.join('.') || 'fhirServer'}: ${issue?.message}`);
    }
    if (!this.#servers.has(parsed.data.fhirServer)) {
      throw new Problem('invalid_request', 'input.fhirServer: no such server in TRIAGE_FHIR_SERVERS');
    }
    return exportRunInput(parsed.data).input;
  }

  /**
   * Makes sure the run's export is staged; returns the staged files' keys, or 'cancelled' when the run was cancelled
   * while the export ran. Throws IngressError naming the step that failed.
   */
  async stage(run: BatchRun, runs: RunStore, storage: LocalStorage): Promise<string[] | 'cancelled'> {
    const source = run.source as ExportSource;
    const key = this.#runKey(run.id);
    const saved = await this.#redis.hgetall(key);
    if (saved.files) return JSON.parse(saved.files) as string[];
    const client = this.#client(source.request.fhirServer);
    const save = (s: ExportSource) => runs.update(run.id, { source: JSON.stringify(s) });

    let statusUrl = saved.statusUrl;
    let kickedOffAt = Number(saved.kickedOffAt ?? 0);
    if (!statusUrl) {
      const since = await this.#since(source.request, run.scheduleId);
      const url = kickoffUrl(client.server, source.request, since);
      statusUrl = await client.kickoff(url);
      kickedOffAt = this.#now();
      await this.#redis.hset(key, { statusUrl, kickedOffAt: String(kickedOffAt) });
      Object.assign(source, { state: 'exporting', kickoffUrl: url, ...(since ? { since } : {}) });
      await save(source);
    }

    const { pollSeconds, maxPollSeconds, timeoutMinutes } = client.server;
    let manifest: Extract<Awaited<ReturnType<BulkClient['poll']>>, { done: true }>['manifest'];
    for (;;) {
      if ((await runs.state(run.id)) === 'cancelled') {
        await client.release(statusUrl);
        return 'cancelled';
      }
      const answer = await client.poll(statusUrl);
      if (answer.done) {
        manifest = answer.manifest;
        break;
      }
      if (answer.progress && answer.progress !== source.progress) {
        source.progress = answer.progress;
        await save(source);
      }
      if (this.#now() - kickedOffAt > timeoutMinutes * 60_000) {
        await client.release(statusUrl);
        throw new IngressError('status', `the export did not complete within ${timeoutMinutes} minutes`, true);
      }
      const wait = Math.min(answer.retryAfterMs ?? pollSeconds * 1000, maxPollSeconds * 1000);
      await sleep(Math.max(wait, 50));
    }

    const dir = `${STAGING_DIR}/${run.dir.split('/').pop()}`;
    await removeStaging(storage, dir); // a half-staged attempt before a crash
    await storage.createDir(dir);
    await this.#redis.hset(key, 'stagingDir', dir); // so a run that fails mid-download still has its folder removed
    const files: string[] = [];
    const read: ExportSource['files'] = [];
    for (const [i, file] of manifest.output.entries()) {
      if (!READ_TYPES.has(file.type)) continue;
      const fileKey = `${dir}/${file.type}.${String(i).padStart(4, '0')}.ndjson`;
      const { bytes, lines } = await this.#download(client, file.url, manifest.requiresAccessToken, storage, fileKey);
      // a file cut short (a dropped connection the server ended cleanly) must not lose patients silently
      if (typeof file.count === 'number' && file.count !== lines) {
        throw new IngressError(
          'download',
          `a ${file.type} file held ${lines} resources, the manifest says ${file.count}`,
          false,
        );
      }
      files.push(fileKey);
      read.push({ type: file.type, count: lines, bytes });
    }
    await this.#redis.hset(key, 'files', JSON.stringify(files));
    await client.release(statusUrl);
    const skipped = [...new Set(manifest.output.map((o) => o.type).filter((t) => !READ_TYPES.has(t)))];
    Object.assign(source, {
      state: 'downloaded',
      transactionTime: manifest.transactionTime,
      files: read,
      ...(skipped.length ? { skippedTypes: skipped } : {}),
    });
    delete source.progress;
    await save(source);
    return files;
  }

  /** Streams one file to storage a megabyte at a time: never the whole file in memory. */
  async #download(
    client: BulkClient,
    url: string,
    requiresAccessToken: boolean,
    storage: LocalStorage,
    key: string,
  ): Promise<{ bytes: number; lines: number }> {
    const body = await client.download(url, requiresAccessToken);
    const out = await storage.openAppend(key, 0);
    const decoder = new TextDecoder('utf-8', { fatal: false });
    let pending = '';
    let bytes = 0;
    let lines = 0;
    let last = 10;
    try {
      for await (const chunk of body) {
        bytes += chunk.byteLength;
        for (const b of chunk) if (b === 10) lines++;
        if (chunk.byteLength > 0) last = chunk[chunk.byteLength - 1] as number;
        pending += decoder.decode(chunk, { stream: true });
        if (pending.length >= FLUSH_BYTES) {
          await out.append(pending);
          pending = '';
        }
      }
    } catch (err) {
      throw err instanceof IngressError
        ? err
        : new IngressError('download', `a file download broke off (${(err as Error).name})`, false);
    } finally {
      pending += decoder.decode();
      if (pending) await out.append(pending.endsWith('\n') ? pending : `${pending}\n`);
      await out.close();
    }
    return { bytes, lines: last === 10 ? lines : lines + 1 }; // a last line without its newline counts too
  }

  async #since(request: ExportInput, scheduleId: string | undefined): Promise<string | undefined> {
    if (request.since !== 'last-success') return request.since;
    if (!scheduleId) return undefined;
    return (await this.#redis.get(this.#sinceKey(scheduleId))) ?? undefined;
  }

  /**
   * A run ended. Its staged files are removed whatever the outcome (patient data does not linger); a completed
   * scheduled run's export time becomes the schedule's next `_since`.
   */
  async finished(run: BatchRun, completed: boolean, storage: LocalStorage): Promise<void> {
    if (!isExportPath(run.input.path)) return;
    const key = this.#runKey(run.id);
    const [dir, statusUrl, files] = await this.#redis.hmget(key, 'stagingDir', 'statusUrl', 'files');
    if (dir) await removeStaging(storage, dir);
    // an export given up before it was all fetched: the server may drop its files now (staged ones were released)
    if (statusUrl && !files && run.source) {
      await this.#client(run.source.request.fhirServer)
        .release(statusUrl)
        .catch(() => {});
    }
    const time = run.source?.transactionTime;
    if (completed && run.scheduleId && time) {
      // a later slot finishing first must not move _since backwards
      const current = await this.#redis.get(this.#sinceKey(run.scheduleId));
      if (!current || Date.parse(current) < Date.parse(time))
        await this.#redis.set(this.#sinceKey(run.scheduleId), time);
    }
    await this.#redis.del(key);
  }
}
