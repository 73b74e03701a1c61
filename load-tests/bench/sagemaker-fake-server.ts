/**
 * The sagemaker section's SageMaker runtime endpoint: test/fakes/sagemaker-fake.ts (the real InvokeEndpoint wire
 * protocol, SigV4 verified on every request) in its own process, so neither the bench nor Triage pays for it.
 *
 * Scorer: per row `{"probability": p}`, p a cheap deterministic logistic of the row's features, in (0, 1).
 * Prints one line `{"url": "http://127.0.0.1:<port>", "region": "…"}` on stdout once listening; on SIGTERM/SIGINT it
 * prints `SAGEMAKER_FAKE_STATS {"calls": …, "rows": …, "faults": …, "cpuMs": …}` (totals so far) and exits; on SIGUSR2 it prints the same line
 * and carries on.
 *
 * env: SAGEMAKER_FAKE_REGION (eu-west-2)
 */
import { SageMakerFake, type Scorer } from '../../test/fakes/sagemaker-fake.ts';

const region = process.env.SAGEMAKER_FAKE_REGION || 'eu-west-2';

const scorer: Scorer = (rows) =>
  rows.map((row) => {
    let z = -4;
    for (let i = 0; i < row.length; i++) z += ((row[i] as number) * ((i % 3) + 1)) / 400;
    return { probability: 1 / (1 + Math.exp(-z)) };
  });

const fake = await SageMakerFake.start({ region, scorer });

// the fake records every request (headers, body, rows) for tests; under load that is only memory: count and drop
let calls = 0;
let rows = 0;
/** requests not answered normally (a bad signature, mostly) */
let faults = 0;
const drain = () => {
  for (const r of fake.requests) {
    rows += r.rows.length;
    if (r.fault !== 'ok') faults++;
  }
  calls += fake.requests.length;
  fake.requests.length = 0;
};
const timer = setInterval(drain, 250);

/** the process's CPU time so far (user + system), ms */
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const statsLine = () => {
  drain();
  return `SAGEMAKER_FAKE_STATS ${JSON.stringify({ calls, rows, faults, cpuMs: cpuMs() })}\n`;
};
process.on('SIGUSR2', () => process.stdout.write(statsLine()));

process.stdout.write(`${JSON.stringify({ url: fake.url, region: fake.region })}\n`);

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    clearInterval(timer);
    process.stdout.write(statsLine(), () => {
      void fake.close().finally(() => process.exit(0));
    });
  });
}
