/**
 * The S3 fake (test/fakes/s3-fake.ts, SigV4 checked) serving one generated NDJSON object of news2 rows, made line by
 * line as it is sent, in its own process so the memory measured in s3-input-memory.ts is Triage's alone. Prints
 * `{"url", "region", "bucket", "key", "bytes"}` once listening.
 *
 * argv: <rows>
 */
import { S3Fake } from '../../test/fakes/s3-fake.ts';
import { news2Row } from '../../test/support/data.ts';

const rows = Number(process.argv[2] ?? 1_000_000);
const bucket = 'bench-inputs';
const key = 'clients/client/big.ndjson';
const line = (i: number) => `${JSON.stringify({ id: `row-${i}`, ...news2Row(i) })}\n`;
let bytes = 0;
for (let i = 0; i < rows; i++) bytes += Buffer.byteLength(line(i));
const fake = await S3Fake.start([bucket]);
fake.putGenerated(bucket, key, bytes, function* () {
  for (let i = 0; i < rows; i++) yield line(i);
});
process.stdout.write(`${JSON.stringify({ url: fake.url, region: fake.region, bucket, key, bytes })}\n`);
process.on('SIGTERM', () => {
  void fake.close().then(() => process.exit(0));
});
