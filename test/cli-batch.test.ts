/**
 * `triage batch submit FILE --model M --follow` against a real gateway on a socket with the batch worker running:
 * the run is followed to its manifest through X-Progress and Retry-After, and a missing file exits non-zero.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import {
  buildGateway,
  deletePrefix,
  MODELS_DIR,
  makeKeys,
  makePrefix,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
} from './support/index.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const keys = makeKeys();
const prefix = makePrefix('cli-batch');
let gw: TestGateway;
let server: ReturnType<typeof serve>;
let url: string;
let modelsDir: string;
let dataDir: string;

before(async () => {
  modelsDir = await tempModels({ readmission: null });
  dataDir = await tempDir('cli-batch');
  const inputs = path.join(dataDir, 'clients', 'client', 'inputs');
  await mkdir(inputs, { recursive: true });
  await cp(path.join(MODELS_DIR, 'readmission', 'sample-discharges.ndjson'), path.join(inputs, 'discharges.ndjson'));
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: ['batch'] });
  server = serve({ fetch: gw.gateway.app.fetch, hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await gw?.close();
  await deletePrefix(prefix);
  await removeDir(modelsDir);
  await removeDir(dataDir);
});

function triage(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), ...args],
      // polls every 20 ms instead of the gateway's Retry-After (2 s): the run's end is still read from the API
      { cwd: ROOT, env: { ...process.env, TRIAGE_URL: url, TRIAGE_KEY: keys.client, TRIAGE_POLL_MS: '20' } },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('submit --follow waits for the run and prints its manifest; a missing input file is refused', async () => {
  const run = await triage([
    '--json',
    'batch',
    'submit',
    'inputs/discharges.ndjson',
    '--model',
    'readmission',
    '--follow',
  ]);
  assert.equal(run.code, 0, run.stderr);
  const manifest = JSON.parse(run.stdout.trim().split('\n').at(-1) as string);
  assert.ok(Array.isArray(manifest.output) && manifest.output.length > 0, run.stdout);
  assert.match(manifest.output[0].url, /^http:\/\/127\.0\.0\.1:\d+\/v1\/batches\/.+\/files\/output\.ndjson$/);

  const human = await triage(['batch', 'submit', 'inputs/discharges.ndjson', '--model', 'readmission', '--follow']);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^done: \d+ output file\(s\)$/m);
  for (const line of human.stderr.split('\n').filter(Boolean)) {
    assert.match(line, /^(queued|running): \d+ rows read, \d+ scored, \d+ failed$/, 'progress lines are X-Progress');
  }

  const missing = await triage(['batch', 'submit', 'inputs/nope.ndjson', '--model', 'readmission']);
  assert.notEqual(missing.code, 0);
  assert.ok([4, 6].includes(missing.code), `${missing.code} ${missing.stderr}`);
});
