/**
 * The Bulk Data client's parts alone: TRIAGE_FHIR_SERVERS checked at start (never echoing a credential), and a run
 * whose worker died while its export ran resumes polling the same status URL instead of asking for a second export.
 */
import assert from 'node:assert/strict';
import { access, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { RunStore } from '../src/batch/runs.ts';
import { LocalStorage } from '../src/batch/storage.ts';
import { BulkClient, kickoffUrl } from '../src/ingress/bulk-client.ts';
import { BulkExports, exportRunInput } from '../src/ingress/bulk-export.ts';
import { exportInputSchema } from '../src/ingress/export-request.ts';
import { parseFhirServers } from '../src/ingress/fhir-servers.ts';
import { TokenSource } from '../src/ingress/smart-token.ts';
import { ConfigError } from '../src/platform/config.ts';
import { KeySpace } from '../src/platform/keyspace.ts';
import { type BulkFake, startBulkFake } from './fakes/bulk-fhir-fake.ts';
import { exportLines } from './ingress-support.ts';
import { deletePrefix, makePrefix, REDIS_URL, removeDir, tempDir } from './support/index.ts';

const TOKEN = 'do-not-echo-0123456789';

describe('TRIAGE_FHIR_SERVERS', () => {
  const server = (over: Record<string, unknown>) =>
    JSON.stringify({
      servers: [
        { id: 'ehr', baseUrl: 'https://ehr.example.org/fhir/', auth: { kind: 'bearer', token: TOKEN }, ...over },
      ],
    });
  const refused = (raw: string, fragment: string) =>
    assert.throws(
      () => parseFhirServers(raw),
      (err: unknown) => err instanceof ConfigError && err.message.includes(fragment) && !err.message.includes(TOKEN),
    );

  test('a good entry: defaults filled in, the base URL without its trailing slash', () => {
    const s = parseFhirServers(server({})).get('ehr');
    assert.equal(s?.baseUrl, 'https://ehr.example.org/fhir');
    assert.equal(s?.pollSeconds, 5);
    assert.deepEqual(s?.clients, []);
  });

  test('plain http only to loopback; ids once; unknown fields and bad auth refused, naming the field only', () => {
    refused(server({ baseUrl: 'http://ehr.example.org/fhir' }), 'must be https');
    assert.ok(parseFhirServers(server({ baseUrl: 'http://127.0.0.1:8081/fhir' })).has('ehr'));
    refused(
      JSON.stringify({ servers: [...JSON.parse(server({})).servers, ...JSON.parse(server({})).servers] }),
      'twice',
    );
    refused(server({ password: TOKEN }), 'servers.0');
    refused(server({ auth: { kind: 'bearer', token: 'short' } }), 'servers.0.auth.token');
    refused(
      server({ auth: { kind: 'smart-backend', tokenUrl: 'https://a/token', clientId: 'c', privateKey: TOKEN } }),
      'keyId',
    );
    refused('servers: [', 'not valid YAML');
  });

  test('a request: a group only at group level; _typeFilter queries shaped Type?params', () => {
    assert.equal(exportInputSchema.safeParse({ fhirServer: 'ehr', level: 'group' }).success, false);
    assert.equal(exportInputSchema.safeParse({ fhirServer: 'ehr', level: 'patient', group: 'g' }).success, false);
    assert.equal(
      exportInputSchema.safeParse({ fhirServer: 'ehr', typeFilters: ['Observation?code=8867-4'] }).success,
      true,
    );
    assert.equal(exportInputSchema.safeParse({ fhirServer: 'ehr', typeFilters: ['code=8867-4'] }).success, false);
    assert.equal(exportInputSchema.safeParse({ fhirServer: '../etc' }).success, false);
  });
});

describe('a run resumed after its worker died mid-export', () => {
  const prefix = makePrefix('ingress-units');
  let redis: Redis;
  let fake: BulkFake;
  let dataDir: string;

  before(async () => {
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    dataDir = await tempDir('ingress-units');
    fake = await startBulkFake({ auth: 'bearer', staticToken: TOKEN, files: await exportLines(dataDir) });
  });
  after(async () => {
    await fake?.close();
    redis?.disconnect();
    await deletePrefix(prefix);
    await removeDir(dataDir);
  });

  test("the token goes to the server's own origin only: a file URL elsewhere never receives it", async () => {
    const elsewhere = await startBulkFake({ auth: 'bearer', staticToken: TOKEN, files: {} });
    try {
      const server = parseFhirServers(
        JSON.stringify({ servers: [{ id: 'lab', baseUrl: fake.baseUrl, auth: { kind: 'bearer', token: TOKEN } }] }),
      ).get('lab');
      assert.ok(server);
      const client = new BulkClient(server, new TokenSource(server));
      await assert.rejects(client.download(`${elsewhere.baseUrl}/files/0a/Patient-0.ndjson`, true), /step "download"/);
      assert.deepEqual(elsewhere.fileRequests, [{ name: 'Patient-0.ndjson', authorized: false }]);
      // the server's own file URLs do get it
      await assert.rejects(client.download(`${fake.baseUrl}/files/0a/Patient-0.ndjson`, true), /expired or is gone/);
      assert.equal(fake.fileRequests.at(-1)?.authorized, true);
    } finally {
      await elsewhere.close();
    }
  });

  test('polls the status URL it had, asks for no second export, and stages the files', async () => {
    const servers = parseFhirServers(
      JSON.stringify({
        servers: [{ id: 'lab', baseUrl: fake.baseUrl, auth: { kind: 'bearer', token: TOKEN }, pollSeconds: 0.05 }],
      }),
    );
    const server = servers.get('lab');
    assert.ok(server);
    const runs = new RunStore(redis, new KeySpace(prefix, ['news2']));
    const storage = new LocalStorage(dataDir);
    const request = exportInputSchema.parse({ fhirServer: 'lab' });
    const { input, source } = exportRunInput(request);
    await runs.create({
      id: 'resumed',
      model: 'news2',
      version: '1',
      requestedBy: 'api:x',
      input,
      source,
      asOf: 0,
      state: 'running',
      createdAt: 0,
    });
    const run = await runs.get('resumed');
    assert.ok(run);

    // what the first worker did before it died: the kick-off, and the status URL saved
    fake.faults.pollsBeforeDone = 2;
    fake.faults.retryAfter = '0.05';
    const statusUrl = await new BulkClient(server, new TokenSource(server)).kickoff(
      kickoffUrl(server, request, undefined),
    );
    await redis.hset(`${prefix}:ingress:export:resumed`, { statusUrl, kickedOffAt: String(Date.now()) });
    assert.equal(fake.kickoffs.length, 1);

    const files = await new BulkExports(servers, redis, prefix).stage(run, runs, storage);
    assert.equal(fake.kickoffs.length, 1, 'no second export was asked for');
    assert.equal(fake.polls.length, 3);
    assert.ok(Array.isArray(files) && files.length === 3);
    const staged = await readFile(`${dataDir}/${(files as string[])[0]}`, 'utf8');
    assert.match(staged, /"resourceType":"Patient"/);
    // staged once: asked again (another retry), the same files without a request to the server
    const again = await new BulkExports(servers, redis, prefix).stage(run, runs, storage);
    assert.deepEqual(again, files);
    assert.equal(fake.polls.length, 3);
  });

  test('a staging folder is never removed through a link', async () => {
    const linked = await tempDir('ingress-linked');
    try {
      await mkdir(path.join(linked, 'victim'));
      await writeFile(path.join(linked, 'victim', 'keep.txt'), 'x');
      const root = await tempDir('ingress-root');
      await symlink(linked, path.join(root, 'ingress'));
      const exports = new BulkExports(new Map(), redis, prefix);
      const { input, source } = exportRunInput(exportInputSchema.parse({ fhirServer: 'lab' }));
      await redis.hset(`${prefix}:ingress:export:linked`, { stagingDir: 'ingress/victim' });
      const run = { id: 'linked', input, source, dir: 'batches/linked.x' } as Parameters<typeof exports.finished>[0];
      await assert.rejects(exports.finished(run, false, new LocalStorage(root)), /not a directory/);
      await access(path.join(linked, 'victim', 'keep.txt'));
      await removeDir(root);
    } finally {
      await removeDir(linked);
    }
  });
});
