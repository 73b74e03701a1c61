/**
 * Peak memory of a batch run whose input is a large object in S3, measured end to end: the gateway (composition
 * root, batch worker, worker thread scoring news2) streams the object from the S3 fake in another process
 * (GetObject, SigV4 checked) and scores every row. Samples the process's resident set (the worker thread included)
 * every 10 ms and prints the baseline before the run, the peak during it, and the object's size.
 *
 *   node --import tsx src/devtools/with-redis.ts node --expose-gc --import tsx load-tests/bench/s3-input-memory.ts 1000000
 *
 * argv: <rows> [local]: `local` reads the same rows from a file in the data directory instead, for comparison
 */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { TEST_CREDENTIALS } from '../../test/fakes/sigv4.ts';
import {
  buildGateway,
  deletePrefix,
  makeKeys,
  makePrefix,
  removeDir,
  tempDir,
  tempModels,
  waitForRun,
} from '../../test/support/index.ts';

const rows = process.argv[2] ?? '1000000';
const child = spawn(
  process.execPath,
  ['--import', 'tsx', fileURLToPath(new URL('./s3-fake-server.ts', import.meta.url)), rows],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const first = await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next();
const fake = JSON.parse(first.value as string) as {
  url: string;
  region: string;
  bucket: string;
  key: string;
  bytes: number;
};

// the SDK's default chain: environment variables
process.env.AWS_ACCESS_KEY_ID = TEST_CREDENTIALS.accessKeyId;
process.env.AWS_SECRET_ACCESS_KEY = TEST_CREDENTIALS.secretAccessKey;
const keys = makeKeys();
const prefix = makePrefix('s3-memory');
const modelsDir = await tempModels({ news2: (m) => Object.assign(m, { batch: { chunkSize: 4096 } }) });
const dataDir = await tempDir('s3-memory');
const gw = await buildGateway({
  prefix,
  keys,
  modelsDir,
  dataDir,
  workers: ['batch'],
  config: {
    objectStores: JSON.stringify({
      s3: { region: fake.region, endpoint: fake.url, forcePathStyle: true },
      buckets: [{ url: `s3://${fake.bucket}`, clients: ['client'] }],
    }),
  },
});
const local = process.argv[3] === 'local';
if (local) {
  // the same bytes, fetched once through the fake (in this process's memory only until written)
  const { S3Client, GetObjectCommand } = await import('@aws-sdk/client-s3');
  const client = new S3Client({ region: fake.region, endpoint: fake.url, forcePathStyle: true });
  const body = (await client.send(new GetObjectCommand({ Bucket: fake.bucket, Key: fake.key }))).Body;
  await mkdir(path.join(dataDir, 'clients/client'), { recursive: true });
  await writeFile(path.join(dataDir, 'clients/client/big.ndjson'), body as NodeJS.ReadableStream);
  client.destroy();
}
const mb = (n: number) => Math.round(n / 1024 / 1024);
(globalThis as { gc?: () => void }).gc?.();
const baseline = process.memoryUsage.rss();
let peak = baseline;
const sampler = setInterval(() => {
  peak = Math.max(peak, process.memoryUsage.rss());
}, 10);
const started = Date.now();
const res = await gw.call('POST', '/v1/models/news2/batches', keys.client, {
  input: { path: local ? 'big.ndjson' : `s3://${fake.bucket}/${fake.key}`, format: 'ndjson' },
});
const { final } = await waitForRun(gw, keys.client, res.body.id, 30 * 60_000);
clearInterval(sampler);
process.stdout.write(
  `${JSON.stringify({
    rows: Number(rows),
    input: local ? 'local file' : 's3',
    objectMiB: mb(fake.bytes),
    status: final.status,
    scored: final.body.output?.[0]?.count,
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
