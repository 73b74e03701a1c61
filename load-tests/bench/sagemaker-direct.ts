/**
 * The sagemaker section's baseline: the real @aws-sdk/client-sagemaker-runtime client (createSageMakerClient, as the
 * gateway builds it, with the test credentials the fake verifies) calling InvokeEndpoint on the fake, one
 * deterioration row per call, `SM_CONCURRENCY` calls in flight, for `SM_WARMUP_SEC` discarded then `SM_DURATION_SEC`
 * measured seconds. Runs in its own process; prints `SAGEMAKER_DIRECT {json}` with requests, rps, p50/p90/p99/max,
 * errors and its own CPU use over the measured window.
 *
 * env: SM_ENDPOINT_URL, SM_REGION, SM_ENDPOINT_NAME, SM_ROW (JSON array of numbers), SM_CONCURRENCY (32),
 * SM_WARMUP_SEC (2), SM_DURATION_SEC (8)
 */
import { InvokeEndpointCommand } from '@aws-sdk/client-sagemaker-runtime';
import { createSageMakerClient } from '../../src/runtime/sagemaker.ts';
import { TEST_CREDENTIALS } from '../../test/fakes/sagemaker-fake.ts';
import { summarize } from './common.ts';

const need = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`sagemaker-direct: set ${name}`);
  return v;
};
const endpointUrl = need('SM_ENDPOINT_URL');
const region = need('SM_REGION');
const endpointName = need('SM_ENDPOINT_NAME');
const row = JSON.parse(need('SM_ROW')) as number[];
const concurrency = Number(process.env.SM_CONCURRENCY ?? 32);
const warmupSec = Number(process.env.SM_WARMUP_SEC ?? 2);
const durationSec = Number(process.env.SM_DURATION_SEC ?? 8);

const client = createSageMakerClient({ region, endpointUrl }, { credentials: TEST_CREDENTIALS });
const encoder = new TextEncoder();
const decoder = new TextDecoder();

let measuring = false;
let stopping = false;
const latencies: number[] = [];
let errors = 0;
let warmupErrors = 0;
let firstError: string | undefined;

async function call(): Promise<void> {
  const started = performance.now();
  let ok = false;
  try {
    const out = await client.send(
      new InvokeEndpointCommand({
        EndpointName: endpointName,
        // a new body per call, like the gateway (it serialises each request's rows)
        Body: encoder.encode(JSON.stringify({ instances: [row] })),
        ContentType: 'application/json',
        Accept: 'application/json',
      }),
    );
    const reply = JSON.parse(out.Body ? decoder.decode(out.Body) : '') as { predictions?: unknown[] };
    ok = Array.isArray(reply.predictions) && reply.predictions.length === 1;
    if (!ok && !firstError) firstError = `unexpected reply: ${decoder.decode(out.Body)}`;
  } catch (err) {
    if (!firstError) firstError = `${(err as Error).name}: ${(err as Error).message}`;
  }
  const ms = performance.now() - started;
  if (!measuring) {
    if (!ok) warmupErrors++;
    return;
  }
  if (ok) latencies.push(ms);
  else errors++;
}

async function worker(): Promise<void> {
  while (!stopping) await call();
}

const workers = Array.from({ length: concurrency }, worker);
await new Promise((r) => setTimeout(r, warmupSec * 1000));
measuring = true;
const t0 = performance.now();
const cpu0 = process.cpuUsage();
await new Promise((r) => setTimeout(r, durationSec * 1000));
measuring = false;
const elapsedSec = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
stopping = true;
await Promise.all(workers);
client.destroy();

const s = summarize(latencies);
process.stdout.write(
  `SAGEMAKER_DIRECT ${JSON.stringify({
    concurrency,
    warmupSec,
    durationSec: elapsedSec,
    requests: s.n,
    rps: s.n / elapsedSec,
    meanMs: s.n > 0 ? latencies.reduce((a, b) => a + b, 0) / s.n : Number.NaN,
    p50Ms: s.p50,
    p90Ms: s.p90,
    p99Ms: s.p99,
    maxMs: s.max,
    errors,
    warmupErrors,
    /** this process's CPU over the measured window, in cores (1 = one core busy the whole time) */
    cpuCores: (cpu.user + cpu.system) / 1e6 / elapsedSec,
    ...(firstError ? { firstError } : {}),
  })}\n`,
);
