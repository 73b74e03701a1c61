import { Readable } from 'node:stream';
import { S3Fake, TEST_CREDENTIALS } from '/work/wt-objstore/test/fakes/s3-fake.ts';
process.env.AWS_ACCESS_KEY_ID = TEST_CREDENTIALS.accessKeyId;
process.env.AWS_SECRET_ACCESS_KEY = TEST_CREDENTIALS.secretAccessKey;
const { S3Store } = await import('/work/wt-objstore/src/batch/stores/s3.ts');
const fake = await S3Fake.start(['b1']);
const store = new S3Store({ region: fake.region, endpoint: fake.url, forcePathStyle: true });
fake.put('b1', 'clients/c/in.ndjson', '{"a":1}\n');
const s = await store.openRead('b1', 'clients/c/in.ndjson');
let t = ''; for await (const c of s) t += c; console.log('read', JSON.stringify(t), await store.size('b1','clients/c/in.ndjson'));
await store.upload('b1', 'clients/c/out/small.ndjson', Readable.from(['x\n']), 'r1');
const big = Buffer.alloc(12*1024*1024, 'y');
await store.upload('b1', 'clients/c/out/big.ndjson', Readable.from([big]), 'r1');
console.log(fake.multipartCompleted, fake.object('b1','clients/c/out/big.ndjson')?.text.length, fake.object('b1','clients/c/out/small.ndjson'));
const url = await store.signedUrl('b1', 'clients/c/out/small.ndjson', 60);
console.log(url);
const r = await fetch(url); console.log(r.status, await r.text());
try { await store.openRead('b1', 'clients/c/out/small.ndjson'); } catch (e) { console.log('refused', (e as Error).message); }
try { await store.openRead('b1', 'nope'); } catch (e) { console.log('missing', (e as any).reason); }
console.log(fake.requests.map(r => `${r.op}:${r.signature}`).join(' '));
await fake.close();
