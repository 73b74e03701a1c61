/**
 * Peak memory of a batch run over a FHIR Bulk Data export, measured end to end: the gateway (composition root, batch
 * worker, worker thread scoring news2) pulls the export from the fake in another process, stages it, reads it and
 * scores every patient. Samples the process's resident set (the worker thread included) every 10 ms and prints the
 * baseline before the run, the peak during it, and the export's size.
 *
 *   node --import tsx src/devtools/with-redis.ts node --expose-gc --import tsx load-tests/bench/export-memory.ts 10000 1
 *
 * argv: <patients> <observation rounds per patient>
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { buildIngressGateway } from '../../test/ingress-support.ts';
import {
  deletePrefix,
  makeKeys,
  makePrefix,
  removeDir,
  tempDir,
  tempModels,
  waitForRun,
} from '../../test/support/index.ts';

const patients = process.argv[2] ?? '10000';
const rounds = process.argv[3] ?? '1';
const child = spawn(
  process.execPath,
  ['--import', 'tsx', fileURLToPath(new URL('./bulk-export-fake-server.ts', import.meta.url)), patients, rounds],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const first = await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next();
const { baseUrl, token, bytes } = JSON.parse(first.value as string) as {
  baseUrl: string;
  token: string;
  bytes: number;
};

const keys = makeKeys();
const prefix = makePrefix('export-memory');
const modelsDir = await tempModels({ news2: null });
const dataDir = await tempDir('export-memory');
const gw = await buildIngressGateway({
  prefix,
  keys,
  modelsDir,
  dataDir,
  fhirServers: {
    servers: [{ id: 'bench', baseUrl, clients: ['client'], auth: { kind: 'bearer', token }, pollSeconds: 0.1 }],
  },
});
const mb = (n: number) => Math.round(n / 1024 / 1024);
(globalThis as { gc?: () => void }).gc?.();
const baseline = process.memoryUsage.rss();
let peak = baseline;
const sampler = setInterval(() => {
  peak = Math.max(peak, process.memoryUsage.rss());
}, 10);
const started = Date.now();
const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
  input: { fhirServer: 'bench', level: 'system' },
  asOf: '2020-03-11T00:00:00Z',
});
const { final } = await waitForRun(gw, keys.client, res.body.id, 30 * 60_000);
clearInterval(sampler);
const { outcomes, source } = final.body.extension ?? {};
process.stdout.write(
  `${JSON.stringify({
    patients: Number(patients),
    observationRounds: Number(rounds),
    exportMiB: mb(bytes),
    files: source?.files?.length,
    status: final.status,
    outcomes,
    seconds: (Date.now() - started) / 1000,
    rssBaselineMiB: mb(baseline),
    rssPeakMiB: mb(peak),
    rssGrowthMiB: mb(peak - baseline),
  })}\n`,
);
await gw.close();
child.kill('SIGTERM');
await deletePrefix(prefix);
await removeDir(dataDir);
await removeDir(modelsDir);
