/**
 * Issue 10, items 1 and 2: batch files never leave the data directory, symlinks included, and each client reads only
 * its own data area (and the shared areas an operator granted it). Real files, real symlinks, the real batch worker.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { lstat, mkdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LocalStorage, StorageError } from '../src/batch/storage.ts';
import { outcomeCode } from '../src/fhir/operation-outcome.ts';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import { scheduledRunId } from '../workers/batch-queue.ts';
import {
  buildGateway,
  captureLogs,
  deletePrefix,
  fireSlot,
  makeKeys,
  makePrefix,
  news2Row,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForRun,
} from './support/index.ts';

const base = makeKeys();
/** batch-client and batch-other as usual, plus a client granted the shared area `outreach` */
const sharedKey = `trg_s_${hashKey(String(Math.random())).slice(0, 32)}`;
const keys = {
  ...base,
  store: new ApiKeyStore([
    { id: 'batch-client', role: 'client', sha256: hashKey(base.client), models: ['*'] },
    { id: 'batch-other', role: 'client', sha256: hashKey(base.other), models: ['*'] },
    { id: 'batch-shared', role: 'client', sha256: hashKey(sharedKey), models: ['*'], dataAreas: ['outreach'] },
    { id: 'batch-admin', role: 'admin', sha256: hashKey(base.admin), models: ['*'] },
  ]),
};
const prefix = makePrefix('batch-files');
const logs = captureLogs('debug');
const ROWS = `${[0, 1, 2].map((i) => JSON.stringify({ id: `r-${i}`, ...news2Row(i) })).join('\n')}\n`;
const VICTIM_TEXT = 'root:x:0:0:not yours\n';

let modelsDir: string;
let dataDir: string;
let outsideDir: string;
let victim: string;
let gw: TestGateway;

before(async () => {
  modelsDir = await tempModels({ news2: null });
  dataDir = await tempDir('files-data');
  outsideDir = await tempDir('files-outside');
  victim = path.join(outsideDir, 'victim.txt');
  await writeFile(victim, VICTIM_TEXT);
  for (const dir of ['clients/batch-client/inputs', 'clients/batch-other/inputs', 'shared/outreach', 'inputs']) {
    await mkdir(path.join(dataDir, dir), { recursive: true });
  }
  await writeFile(path.join(dataDir, 'clients/batch-client/inputs/mine.ndjson'), ROWS);
  await writeFile(path.join(dataDir, 'shared/outreach/list.ndjson'), ROWS);
  await writeFile(path.join(dataDir, 'inputs/nightly.ndjson'), ROWS);
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: ['batch'], logger: logs.logger });
});

after(async () => {
  await gw?.close();
  await deletePrefix(prefix);
  await removeDir(modelsDir);
  await removeDir(dataDir);
  await removeDir(outsideDir);
});

const submit = (key: string, p: string) =>
  gw.call('POST', '/v1/models/news2/batches', key, { input: { path: p, format: 'ndjson' } });

async function victimUntouched(): Promise<void> {
  assert.equal(await readFile(victim, 'utf8'), VICTIM_TEXT, 'the file outside the data directory is unchanged');
}

describe('storage: links are never followed', () => {
  const refused = (reason: StorageError['reason']) => (err: unknown) =>
    err instanceof StorageError && err.reason === reason && !err.message.includes(dataDir);

  test('appending through a link at the file or on the way is refused; nothing outside changes', async () => {
    const storage = new LocalStorage(dataDir);
    await mkdir(path.join(dataDir, 'batches/planted'), { recursive: true });
    await symlink(victim, path.join(dataDir, 'batches/planted/output.ndjson'));
    await assert.rejects(storage.openAppend('batches/planted/output.ndjson', 0), refused('outside'));
    await symlink(outsideDir, path.join(dataDir, 'batches/linked-dir'));
    await assert.rejects(storage.openAppend('batches/linked-dir/victim.txt', 0), refused('outside'));
    await assert.rejects(storage.openAppend('batches/linked-dir/new.ndjson', 0), refused('outside'));
    await assert.rejects(storage.writeWhole('batches/linked-dir/manifest.json', '{}'), refused('outside'));
    await victimUntouched();
    await assert.rejects(stat(path.join(outsideDir, 'new.ndjson')), 'nothing was created outside');
  });

  test('reading a link, or through a linked folder, is refused; so is a run output as an input', async () => {
    const storage = new LocalStorage(dataDir);
    await symlink(victim, path.join(dataDir, 'inputs/link.ndjson'));
    await assert.rejects(storage.openRead('inputs/link.ndjson'), refused('outside'));
    await assert.rejects(storage.size('inputs/link.ndjson'), refused('outside'));
    await assert.rejects(storage.readWhole('batches/linked-dir/victim.txt'), refused('outside'));
    await assert.rejects(storage.openOutput('batches/planted/output.ndjson'), refused('outside'));
    await writeFile(path.join(dataDir, 'batches/out.ndjson'), ROWS);
    await assert.rejects(storage.openRead('batches/out.ndjson'), refused('outside'));
  });

  test('a folder swapped for a link to another client’s while files are opened: never the other side', async () => {
    // the client owns its folder and swaps `sub` for a link to the other client's, and back, as fast as it can: a
    // check of the path before the open (or after it) can be passed by a swap between the two
    const own = path.join(dataDir, 'clients/batch-client/swap');
    const theirs = path.join(dataDir, 'clients/batch-other/swap');
    await mkdir(path.join(own, 'sub'), { recursive: true });
    await mkdir(theirs, { recursive: true });
    await writeFile(path.join(own, 'sub/rows.ndjson'), ROWS);
    await writeFile(path.join(theirs, 'rows.ndjson'), 'not yours\n');
    await symlink(theirs, path.join(own, 'link'));
    const swapper = spawn(
      process.execPath,
      [
        '-e',
        `const fs = require('node:fs'); const a = ${JSON.stringify(own)};
        console.log('swapping');
        for (;;) { fs.renameSync(a + '/sub', a + '/real'); fs.renameSync(a + '/link', a + '/sub');
          fs.renameSync(a + '/sub', a + '/link'); fs.renameSync(a + '/real', a + '/sub'); }`,
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    try {
      await once(swapper.stdout, 'data');
      const storage = new LocalStorage(dataDir);
      const seen = new Set<string>();
      for (let i = 0; i < 3000; i++) {
        const text = await storage.readWhole('clients/batch-client/swap/sub/rows.ndjson').catch((err: unknown) => {
          assert.ok(err instanceof StorageError, `a refusal, not ${err}`);
          return err.reason;
        });
        seen.add(text === ROWS ? 'own' : text);
      }
      assert.ok(!seen.has('not yours\n'), 'the other client’s file was read through a swapped-in link');
      assert.ok(seen.has('own') || seen.has('not_found') || seen.has('outside'), [...seen].join());
    } finally {
      swapper.kill();
    }
  });

  test('a run folder is created exclusively; what it writes is the service user’s only', async () => {
    const storage = new LocalStorage(dataDir);
    await storage.createDir('batches/fresh.0123');
    await assert.rejects(storage.createDir('batches/fresh.0123'), refused('exists'));
    await assert.rejects(storage.createDir('batches/linked-dir'), refused('exists'));
    const out = await storage.openAppend('batches/fresh.0123/output.ndjson', 0);
    await out.append('{}\n');
    await out.close();
    await storage.writeWhole('batches/fresh.0123/manifest.json', '{}');
    assert.equal((await stat(path.join(dataDir, 'batches/fresh.0123'))).mode & 0o777, 0o700);
    assert.equal((await stat(path.join(dataDir, 'batches/fresh.0123/output.ndjson'))).mode & 0o777, 0o600);
    assert.equal((await stat(path.join(dataDir, 'batches/fresh.0123/manifest.json'))).mode & 0o777, 0o600);
  });
});

describe('runs: folders nobody can predict, downloads that do not follow links', () => {
  test('a link planted at a scheduled slot’s old, predictable path is never written through', async () => {
    const put = await gw.call('PUT', '/v1/schedules/planted', keys.admin, {
      model: 'news2',
      cron: '0 0 1 1 *',
      input: { path: 'inputs/nightly.ndjson', format: 'ndjson' },
      readers: ['batch-client'],
    });
    assert.equal(put.status, 201, put.text);
    const slot = Math.floor(Date.now() / 1000) * 1000;
    const runId = scheduledRunId(gw.gateway.services.keyspace, 'news2', 'planted', slot);
    // what an attacker who can write to the data volume prepared before the slot fired
    await mkdir(path.join(dataDir, 'batches', runId), { recursive: true });
    await symlink(victim, path.join(dataDir, 'batches', runId, 'output.ndjson'));
    await symlink(victim, path.join(dataDir, 'batches', runId, 'errors.ndjson'));
    const { job } = await fireSlot(gw, 'news2', 'planted', slot);
    await waitFor(async () => (await job.getState()) === 'completed', 'the slot to run', 30_000);
    const run = await gw.gateway.services.runs.get(runId);
    assert.equal(run?.state, 'completed');
    assert.match(run?.dir ?? '', new RegExp(`^batches/${runId}\\.[0-9a-f]{32}$`));
    assert.equal(run?.scored, 3);
    await victimUntouched();
    assert.equal(await readlink(path.join(dataDir, 'batches', runId, 'output.ndjson')), victim);
    assert.ok((await lstat(path.join(dataDir, run?.dir ?? '', 'output.ndjson'))).isFile());
  });

  test('a completed run’s file replaced by a link → 404; a missing file → 404, not an empty 200', async () => {
    const res = await submit(keys.client, 'inputs/mine.ndjson');
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 200, final.text);
    const run = await gw.gateway.services.runs.get(res.body.id);
    const folder = path.join(dataDir, run?.dir ?? '');
    const url = (file: string) => `/v1/batches/${res.body.id}/files/${file}`;
    assert.equal((await gw.call('GET', url('errors.ndjson'), keys.client)).status, 200);

    await rm(path.join(folder, 'errors.ndjson'));
    await symlink(victim, path.join(folder, 'errors.ndjson'));
    const linked = await gw.call('GET', url('errors.ndjson'), keys.client);
    assert.equal(linked.status, 404, linked.text);
    assert.equal(outcomeCode(linked.body), 'not_found');
    assert.ok(!linked.text.includes('root:x'));

    await rm(path.join(folder, 'output.ndjson'));
    const missing = await gw.call('GET', url('output.ndjson'), keys.client);
    assert.equal(missing.status, 404, missing.text);
    assert.match(missing.headers.get('content-type') ?? '', /^application\/fhir\+json/);
    assert.equal(outcomeCode(missing.body), 'not_found');
    assert.ok(!logs.lines.join('').includes(dataDir), 'no absolute path reached the log');
  });
});

describe('data areas per client', () => {
  test('a client names inputs relative to its own area, and sees them that way', async () => {
    const res = await submit(keys.client, 'inputs/mine.ndjson');
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body.input, { path: 'inputs/mine.ndjson', format: 'ndjson' });
    assert.equal(
      (await gw.gateway.services.runs.get(res.body.id))?.input.path,
      'clients/batch-client/inputs/mine.ndjson',
    );
  });

  test('another client’s input, the operator’s inputs, run outputs: 404, the same as a missing file', async () => {
    const run = (await gw.gateway.services.runs.get((await submit(keys.client, 'inputs/mine.ndjson')).body.id))!;
    await waitForRun(gw, keys.client, run.id);
    for (const p of [
      'inputs/mine.ndjson', // batch-other's own area has no such file
      '../batch-client/inputs/mine.ndjson',
      '../../inputs/nightly.ndjson',
      `../../${run.dir}/output.ndjson`,
      `${run.dir}/output.ndjson`,
      'shared/outreach/list.ndjson', // not granted to batch-other
      'inputs/nope.ndjson',
    ]) {
      const res = await submit(keys.other, p);
      assert.equal(res.status, 404, `${p}: ${res.text}`);
      // the batch endpoints answer as the FHIR Bulk Data IG says: an OperationOutcome carrying the stable code
      assert.equal(outcomeCode(res.body), 'not_found', p);
      assert.equal(res.body.issue[0].diagnostics, 'no such input file in your data area', p);
    }
  });

  test('a shared area an operator granted is readable by that key; a link to the run outputs is not', async () => {
    const res = await submit(sharedKey, 'shared/outreach/list.ndjson');
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, sharedKey, res.body.id);
    assert.equal(final.status, 200, final.text);
    await symlink(path.join(dataDir, 'batches'), path.join(dataDir, 'shared/outreach/runs'));
    const run = (await gw.gateway.services.runs.get(res.body.id))!;
    const through = await submit(sharedKey, `shared/outreach/runs/${path.basename(run.dir)}/output.ndjson`);
    assert.equal(through.status, 404, through.text);
  });

  test('a scheduled run: its readers and admins see it; other clients do not', async () => {
    const runs = await Promise.all(
      (await gw.gateway.services.runs.list(0, 100)).map((id) => gw.gateway.services.runs.get(id)),
    );
    const scheduled = runs.find((r) => r?.scheduleId === 'planted')?.id;
    assert.ok(scheduled);
    assert.equal((await gw.call('GET', `/v1/batches/${scheduled}`, keys.client)).status, 200);
    assert.equal((await gw.call('GET', `/v1/batches/${scheduled}`, keys.admin)).status, 200);
    assert.equal((await gw.call('GET', `/v1/batches/${scheduled}`, keys.other)).status, 404);
    assert.equal((await gw.call('GET', `/v1/batches/${scheduled}/files/output.ndjson`, sharedKey)).status, 404);
  });
});
